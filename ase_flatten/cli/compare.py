"""Compare trained models side by side on their shared test split (Table I, Fig. 5).

Every RUN is a model directory from `ase-flatten train` or `ase-flatten select` made
on the same dataset with the same test split. Each model predicts the test frames;
errors are grouped by the first run's clusters. Writes DIR/comparison.csv (per run:
overall force and energy RMSE, max and mean-of-worst-5 cluster force RMSE with the
test frames behind them, the 99th percentile and the maximum of the per-atom
force-error norms (the length of F_pred - F_ref at each atom); each with a
bootstrap 95 % interval over the test frames (1000 resamples, seed 0) and its ratio
to the first run's with a paired interval (the same frames drawn for both); eV and
kcal/mol),
DIR/comparison.json, DIR/frame_errors.npz (per-frame errors) and
DIR/cluster_comparison.png (per-cluster energy and force RMSE, Fig. 6 and 7:
clusters sorted by the first run's force error, one bar colour per run, the test
frames of each cluster under them). --extra-test FILE measures every model on a
labelled trajectory of the same molecule too, e.g. MD at a higher temperature: it
may hold no frame of the dataset or of any run's training data. The dataset is
the one the first run recorded (its absolute path), read with the label keys it
recorded. Put the default model first.

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
    parser.add_argument(
        "--extra-test",
        metavar="FILE",
        help="labelled trajectory of the same molecule that no run trained on and "
        "the dataset does not hold (e.g. hotter MD): every model's errors on it "
        "too, read with the dataset's label keys",
    )


def run(args: argparse.Namespace) -> None:
    import os

    from ..comparison import OUTPUT_FILES, CompareSettings, compare_models

    settings = CompareSettings(
        data=args.data,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        extra_test=args.extra_test,
    )
    comparison = compare_models(
        args.runs, args.output, settings, overwrite=args.overwrite
    )
    _print_table(comparison.rows)
    for name in OUTPUT_FILES:
        print(f"{name}: {os.path.join(args.output, name)}")


def _print_table(table) -> None:
    """Overall errors, the worst clusters, the per-atom tail and the extra test set,
    each with its frames and 95 % interval, and its ratio to the first run's."""
    from ..error_analysis import BOOTSTRAP_RESAMPLES

    def ci(row, key, digits=4):
        low, high = row[f"{key}_low"], row[f"{key}_high"]
        return f"{row[key]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    print(
        f"{'run':20s} {'n_train':>7s} {'test':>5s}  {'force RMSE eV/Å [95 % CI]':27s} "
        f"{'energy RMSE eV [95 % CI]':27s} {'force/1st [95 % CI]':19s}"
    )
    for row in table:
        print(
            f"{row['run'][:20]:20s} {row['n_train']:7d} {row['test_frames']:5d}  "
            f"{ci(row, 'force_rmse'):27s} {ci(row, 'energy_rmse'):27s} "
            f"{ci(row, 'force_rmse_ratio', 2):19s}"
        )
    print(
        f"{'run':20s} {'worst cluster (test frames)':28s} "
        f"{'its force RMSE [95 % CI]':27s} {'worst-5 clusters (test frames)':38s} "
        f"{'worst/1st [95 % CI]':19s}"
    )
    for row in table:
        worst = f"{row['max_cluster']} ({row['max_cluster_frames']})"
        worst5 = f"{ci(row, 'worst5_force_rmse')} ({row['worst5_frames']})"
        print(
            f"{row['run'][:20]:20s} {worst:28s} "
            f"{ci(row, 'max_cluster_force_rmse'):27s} {worst5:38s} "
            f"{ci(row, 'max_cluster_ratio', 2):19s}"
        )
    print(
        f"{'run':20s} {'per-atom force error, eV/Å: p99 [95 % CI]':44s} "
        f"{'max [95 % CI]':27s} {'p99/1st [95 % CI]':19s}"
    )
    for row in table:
        print(
            f"{row['run'][:20]:20s} {ci(row, 'atom_error_p99'):44s} "
            f"{ci(row, 'atom_error_max'):27s} {ci(row, 'atom_error_p99_ratio', 2):19s}"
        )
    if "extra_force_rmse" in table[0]:
        print(
            f"{'run':20s} {'extra test':>10s}  {'force RMSE eV/Å [95 % CI]':27s} "
            f"{'per-atom p99 [95 % CI]':27s} {'force/1st [95 % CI]':19s}"
        )
        for row in table:
            print(
                f"{row['run'][:20]:20s} {row['extra_test_frames']:10d}  "
                f"{ci(row, 'extra_force_rmse'):27s} "
                f"{ci(row, 'extra_atom_error_p99'):27s} "
                f"{ci(row, 'extra_force_rmse_ratio', 2):19s}"
            )
    left_out = table[0].get("left_out_test_frames", 0)
    note = f"; {left_out} test frames equal to training frames left out" * bool(
        left_out
    )
    print(
        "(test split; clusters of the first run; intervals: bootstrap over the test "
        f"frames, {BOOTSTRAP_RESAMPLES} resamples, seed 0, ratios paired{note})"
    )
