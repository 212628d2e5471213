"""Compare trained models side by side on their shared test split (Table I, Fig. 5).

Every RUN is a model directory from `ase-flatten train` or `ase-flatten select` made
on the same dataset with the same test split. Each model predicts the test frames;
errors are grouped by the first run's clusters. Writes DIR/comparison.csv (per run:
overall force and energy RMSE, max and mean-of-worst-5 cluster force RMSE, their
ratios to the first run, eV and kcal/mol; each with the number of test frames
behind it and a bootstrap 95 % interval over the test frames, seeded),
DIR/comparison.json and
DIR/cluster_comparison.png (per-cluster energy and force RMSE, Fig. 6 and 7:
clusters sorted by the first run's force error, one bar colour per run, the test
frames of each cluster under them). The dataset is the one the first run
recorded (its absolute path), read with the label keys it recorded.
Put the default model first.

example: ase-flatten compare models/random models/flattened -o comparison/
"""

from __future__ import annotations

import argparse

from .common import add_label_key_arguments
from .runtime import add_output_arguments

description = __doc__
COMMAND = "ase-flatten compare"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="model directories")
    add_output_arguments(parser, COMMAND)
    parser.add_argument(
        "--data", help="the dataset (default: the path recorded in the first run)"
    )
    add_label_key_arguments(parser, recorded=True)


def run(args: argparse.Namespace) -> None:
    import os

    from ..comparison import compare_runs
    from ..outputs import atomic_directory, check_output_directory

    names = ("comparison.csv", "comparison.json", "cluster_comparison.png")
    inputs = [*args.runs, args.data]
    check_output_directory(args.output, COMMAND, args.overwrite, inputs)
    with atomic_directory(args.output, COMMAND, args.overwrite, inputs) as tmp:
        table = compare_runs(
            args.runs,
            tmp,
            data=args.data,
            energy_key=args.energy_key,
            forces_key=args.forces_key,
        )
    _print_table(table)
    for name in names:
        print(f"{name}: {os.path.join(args.output, name)}")


def _print_table(table) -> None:
    """Overall errors, then the worst clusters, each with frames and 95 % interval."""
    from ..error_analysis import BOOTSTRAP_RESAMPLES

    def ci(row, key, digits=4):
        low, high = row[f"{key}_low"], row[f"{key}_high"]
        return f"{row[key]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    print(
        f"{'run':20s} {'n_train':>7s} {'test':>5s}  {'force RMSE eV/Å [95 % CI]':27s} "
        f"{'energy RMSE eV [95 % CI]':27s} {'energy/1st':>10s}"
    )
    for row in table:
        print(
            f"{row['run'][:20]:20s} {row['n_train']:7d} {row['test_frames']:5d}  "
            f"{ci(row, 'force_rmse'):27s} {ci(row, 'energy_rmse'):27s} "
            f"{row['energy_rmse_ratio']:9.2f}x"
        )
    print(
        f"{'run':20s} {'worst cluster (test frames)':28s} "
        f"{'its force RMSE [95 % CI]':27s} {'worst-5 clusters (test frames)':38s} "
        f"{'worst/1st':>9s}"
    )
    for row in table:
        worst = f"{row['max_cluster']} ({row['max_cluster_frames']})"
        worst5 = f"{ci(row, 'worst5_force_rmse')} ({row['worst5_frames']})"
        print(
            f"{row['run'][:20]:20s} {worst:28s} "
            f"{ci(row, 'max_cluster_force_rmse'):27s} {worst5:38s} "
            f"{row['max_cluster_ratio']:8.2f}x"
        )
    left_out = table[0].get("left_out_test_frames", 0)
    note = f"; {left_out} test frames equal to training frames left out" * bool(
        left_out
    )
    print(
        "(test split; clusters of the first run; intervals: bootstrap over the test "
        f"frames, {BOOTSTRAP_RESAMPLES} resamples, seed 0{note})"
    )
