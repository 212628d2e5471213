"""Make a labelled MD dataset with GFN2-xTB (tblite): the reference data protocol.

Relax, then Langevin NVT (0.5 fs, 500 K, friction 0.01/fs), 1 ps equilibration,
every 5th step stored. Optionally also writes the same frames labelled with another
xTB method, a stand-in for a model's predictions.

example:
    python examples/make_dataset.py CH3CH2OH -n 3000 -o ethanol.extxyz \
        --predictions-method GFN1-xTB --predictions ethanol_gfn1.extxyz
"""

import argparse
import logging

from ase_flatten.sample_data import make_md_dataset, relabel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("molecule", help="name known to ase.build.molecule")
    parser.add_argument("-n", "--frames", type=int, default=3000)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--temperature", type=float, default=500.0)
    parser.add_argument("--method", default="GFN2-xTB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--predictions", help="also write relabelled frames here")
    parser.add_argument("--predictions-method", default="GFN1-xTB")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    dataset = make_md_dataset(
        args.molecule,
        n_frames=args.frames,
        temperature_K=args.temperature,
        method=args.method,
        seed=args.seed,
    )
    dataset.write(args.output)
    print(f"{len(dataset)} frames of {dataset.formula} -> {args.output}")
    if args.predictions:
        relabel(dataset, args.predictions_method).write(args.predictions)
        print(f"{args.predictions_method} labels -> {args.predictions}")


if __name__ == "__main__":
    main()
