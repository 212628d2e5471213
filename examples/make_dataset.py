"""Make a labelled MD dataset with GFN2-xTB (tblite): the reference data protocol.

Relax, then Langevin NVT (0.5 fs, 500 K, friction 0.01/fs), 1 ps equilibration,
every 5th step stored. Optionally also writes the same frames labelled with another
xTB method, a stand-in for a model's predictions.

The frames go in chunks (--chunk-size, default 200) into OUTPUT.partial/, with a
checkpoint after each chunk; OUTPUT appears when all are done. An interrupted run
(crash, Ctrl-C, end of session) continues with the same command plus --resume, and
gives the same frames, bit for bit, as an uninterrupted one (run with
OMP_NUM_THREADS=1, the same machine and versions).

examples:
    python examples/make_dataset.py CH3CH2OH -n 3000 -o ethanol.extxyz \
        --predictions-method GFN1-xTB --predictions ethanol_gfn1.extxyz
    # a 42-atom peptide (Ac-Ala3-NHMe) from the structure file shipped here
    OMP_NUM_THREADS=1 python examples/make_dataset.py \
        examples/molecules/ace_ala3_nme.xyz -n 20000 --stride 10 -o peptide.extxyz
    # ... interrupted: the same command with --resume continues it
    OMP_NUM_THREADS=1 python examples/make_dataset.py \
        examples/molecules/ace_ala3_nme.xyz -n 20000 --stride 10 -o peptide.extxyz \
        --resume
"""

import argparse
import logging
from pathlib import Path

from ase.io import iread

from ase_flatten.data import read_dataset
from ase_flatten.exceptions import InputError
from ase_flatten.md_dataset import MDProtocol, relabel, write_md_dataset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "molecule",
        help="name known to ase.build.molecule, or a structure file (its first "
        "frame: a dataset's first frame starts the MD)",
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
    parser.add_argument(
        "--chunk-size", type=int, default=200, help="frames per checkpoint"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue OUTPUT.partial/"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT, or start an interrupted run again",
    )
    parser.add_argument("--predictions", help="also write relabelled frames here")
    parser.add_argument("--predictions-method", default="GFN1-xTB")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    molecule = args.molecule
    if Path(molecule).is_file():
        try:
            # the first frame only: a 20,000-frame dataset is not read whole
            molecule = next(iread(molecule, index=0))
        except Exception as exc:  # ASE raises many types for unreadable files
            parser.exit(2, f"{args.molecule}: not a readable structure ({exc})\n")
    protocol = MDProtocol(
        temperature_K=args.temperature,
        stride=args.stride,
        equilibration_fs=args.equilibration,
        method=args.method,
        seed=args.seed,
    )
    try:
        write_md_dataset(
            args.output,
            molecule,
            args.frames,
            protocol,
            chunk_size=args.chunk_size,
            resume=args.resume,
            overwrite=args.overwrite,
            inputs=[args.molecule] if Path(args.molecule).is_file() else [],
        )
    except InputError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"{args.frames} frames -> {args.output}")
    if args.predictions:
        dataset = read_dataset(args.output)
        relabel(dataset, args.predictions_method).write(args.predictions)
        print(f"{args.predictions_method} labels -> {args.predictions}")


if __name__ == "__main__":
    main()
