"""Make a labelled MD dataset with GFN2-xTB (tblite): the reference data protocol.

Relax, then Langevin NVT (0.5 fs, 500 K, friction 0.01/fs), 1 ps equilibration,
every 5th step stored. Optionally also writes the same frames labelled with another
xTB method, a stand-in for a model's predictions.

examples:
    python examples/make_dataset.py CH3CH2OH -n 3000 -o ethanol.extxyz \
        --predictions-method GFN1-xTB --predictions ethanol_gfn1.extxyz
    # a 42-atom peptide (Ac-Ala3-NHMe) from the structure file shipped here
    python examples/make_dataset.py examples/molecules/ace_ala3_nme.xyz \
        -n 4000 --stride 10 -o peptide.extxyz
"""

import argparse
import logging
from pathlib import Path

from ase.io import read

from ase_flatten.exceptions import InputError
from ase_flatten.sample_data import make_md_dataset, relabel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "molecule", help="name known to ase.build.molecule, or a structure file"
    )
    parser.add_argument("-n", "--frames", type=int, default=3000)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--temperature", type=float, default=500.0)
    parser.add_argument("--method", default="GFN2-xTB")
    parser.add_argument("--stride", type=int, default=5, help="MD steps per frame")
    parser.add_argument(
        "--equilibration", type=float, default=1000.0, help="fs before storing"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictions", help="also write relabelled frames here")
    parser.add_argument("--predictions-method", default="GFN1-xTB")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    molecule = args.molecule
    if Path(molecule).is_file():
        try:
            molecule = read(molecule)
        except Exception as exc:  # ASE raises many types for unreadable files
            parser.exit(2, f"{args.molecule}: not a readable structure ({exc})\n")
    try:
        dataset = make_md_dataset(
            molecule,
            stride=args.stride,
            equilibration_fs=args.equilibration,
            n_frames=args.frames,
            temperature_K=args.temperature,
            method=args.method,
            seed=args.seed,
        )
    except InputError as exc:
        parser.exit(2, f"error: {exc}\n")
    dataset.write(args.output)
    print(f"{len(dataset)} frames of {dataset.formula} -> {args.output}")
    if args.predictions:
        relabel(dataset, args.predictions_method).write(args.predictions)
        print(f"{args.predictions_method} labels -> {args.predictions}")


if __name__ == "__main__":
    main()
