"""Compare trained models side by side on their shared test split (Table I, Fig. 5).

Every RUN is a model directory from `ase-flatten train` or `ase-flatten select` made
on the same dataset with the same test split. Each model predicts the test frames;
errors are grouped by the first run's clusters. Writes DIR/comparison.csv (per run:
overall force and energy RMSE, max and mean-of-worst-5 cluster force RMSE, their
ratios to the first run, eV and kcal/mol), DIR/comparison.json and
DIR/cluster_comparison.png (per-cluster energy and force RMSE, Fig. 6 and 7:
clusters sorted by the first run's force error, one bar colour per run).
Put the default model first.

example: ase-flatten compare models/random models/flattened -o comparison/
"""

from __future__ import annotations

import argparse

from .runtime import add_output_arguments

description = __doc__
COMMAND = "ase-flatten compare"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="model directories")
    add_output_arguments(parser, COMMAND)
    parser.add_argument(
        "--data", help="the dataset (default: the path recorded in the first run)"
    )


def run(args: argparse.Namespace) -> None:
    import os

    from ..comparison import compare_runs
    from ..outputs import atomic_directory, check_output_directory

    names = ("comparison.csv", "comparison.json", "cluster_comparison.png")
    inputs = [*args.runs, args.data]
    check_output_directory(args.output, COMMAND, args.overwrite, inputs)
    with atomic_directory(args.output, COMMAND, args.overwrite, inputs) as tmp:
        table = compare_runs(args.runs, tmp, data=args.data)
    print(f"{'run':24s} {'n_train':>7s} {'force RMSE':>10s} {'worst':>8s} "
          f"{'worst-5':>8s} {'worst/1st':>9s}")  # fmt: skip
    for row in table:
        print(
            f"{row['run'][:24]:24s} {row['n_train']:7d} {row['force_rmse']:10.4f} "
            f"{row['max_cluster_force_rmse']:8.4f} {row['worst5_force_rmse']:8.4f} "
            f"{row['max_cluster_ratio']:9.2f}"
        )
    print("(eV/Å on the test split)")
    for name in names:
        print(f"{name}: {os.path.join(args.output, name)}")
