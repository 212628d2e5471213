"""Per-cluster error analysis of a model's predictions (outlier detection).

Compares predicted energies and forces with the reference labels of DATA, frame by
frame, and reports them per cluster: DIR/cluster_errors.csv (one row per cluster,
sorted by force RMSE), DIR/frame_errors.csv, DIR/summary.json and
DIR/cluster_errors.png (the paper's Fig. 2). Errors in eV and eV/Å, with kcal/mol
columns beside them. The summary holds the frames of the worst cluster, the 99th
percentile and the maximum of the per-atom force-error norms (the length of
F_pred - F_ref at each atom), and a bootstrap 95 % interval over the frames for
each (1000 resamples, seed 0).
With --model or --calculator, --extra-test FILE also measures a labelled trajectory
of the same molecule that shares no frame with DATA or the model's training data
(e.g. MD at a higher temperature): DIR/summary.json's "extra_test".

example: ase-flatten errors traj.xyz --predicted mace_out.xyz -o report/
"""

from __future__ import annotations

import argparse
import logging
import os

from .common import (
    add_clustering_arguments,
    add_dask_arguments,
    add_dataset_arguments,
    positive_int,
)
from .runtime import add_output_arguments

description = __doc__
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser, recorded=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--predicted",
        metavar="PRED",
        help="trajectory of the same frames with the model's energies and forces",
    )
    source.add_argument(
        "--model",
        metavar="MODEL",
        help="model directory from `ase-flatten train`: predict the frames with it",
    )
    source.add_argument(
        "--calculator",
        metavar="MODULE:CALLABLE",
        help="an ASE calculator factory, e.g. tblite.ase:TBLite",
    )
    parser.add_argument(
        "--calc-kwargs",
        default="{}",
        metavar="JSON",
        help='keyword arguments for --calculator, e.g. \'{"method": "GFN1-xTB"}\'',
    )
    parser.add_argument(
        "--pred-energy-key", help="info key of predicted energies (e.g. MACE_energy)"
    )
    parser.add_argument(
        "--pred-forces-key", help="arrays key of predicted forces (e.g. MACE_forces)"
    )
    parser.add_argument(
        "--clusters",
        metavar="NPZ",
        help="a saved clustering: from `ase-flatten cluster`, or a model's "
        "MODEL/clusters.npz; frames it was not made from are assigned to its "
        "clusters, as `predict` does (default: cluster DATA here)",
    )
    add_output_arguments(parser, COMMAND)
    parser.add_argument(
        "--write-worst",
        type=positive_int,
        metavar="K",
        help="write the frames of the K worst clusters to DIR/worst_clusters.extxyz",
    )
    parser.add_argument(
        "--align-energies",
        action="store_true",
        help="remove the mean energy difference first (a model with another zero)",
    )
    parser.add_argument(
        "--include-train",
        action="store_true",
        help="with --model: also evaluate the frames the model trained or validated "
        "on (found by content in any file; left out by default)",
    )
    parser.add_argument(
        "--extra-test",
        metavar="FILE",
        help="with --model or --calculator: also measure this labelled trajectory "
        "of the same molecule (e.g. hotter MD); it may hold no frame of DATA or "
        "of the model's training data",
    )
    add_clustering_arguments(parser)
    add_dask_arguments(parser)


COMMAND = "ase-flatten errors"


def run(args: argparse.Namespace) -> None:
    from ..dask_workers import dask_client, worker_pool
    from ..exceptions import InputError
    from ..files import check_output_directory
    from ..reports import error_report
    from .common import data_file

    inputs = [args.data, args.predicted, args.model, args.clusters, args.extra_test]
    check_output_directory(args.output, COMMAND, args.overwrite, inputs)
    if args.dask and not args.model:
        raise InputError("--dask predicts with a saved model: give --model DIR")
    settings = _settings(args)
    settings.check()
    with (
        dask_client(args.dask) as client,
        worker_pool(client, chunk_frames=args.dask_chunk) as workers,
    ):
        report = error_report(
            data_file(args),
            args.output,
            settings,
            overwrite=args.overwrite,
            workers=workers,
        )
    _print_report(report.errors, args.output, report.left_out, report.extra_errors)


def _settings(args):
    """The :class:`~ase_flatten.reports.ReportSettings` of the arguments; with
    ``--calculator``, ``--calc-kwargs`` must be a JSON object."""
    import json

    from ..exceptions import InputError
    from ..reports import ReportSettings
    from .common import clustering_settings, settings_from

    kwargs = {}
    try:
        if args.calculator:  # --calc-kwargs goes with --calculator only
            kwargs = json.loads(args.calc_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--calc-kwargs is not JSON ({exc})") from exc
    if not isinstance(kwargs, dict):
        raise InputError(
            f"--calc-kwargs must be a JSON object of keyword arguments, got "
            f"{args.calc_kwargs}"
        )
    return settings_from(
        ReportSettings,
        args,
        calc_kwargs=kwargs,
        clustering=clustering_settings(args),
    )


def _print_report(errors, directory, left_out=None, extra=None):
    from ..error_analysis import KCAL_MOL

    s = errors.summary()
    if left_out and left_out["count"]:
        print(
            f"left out {left_out['count']} frames the model trained or validated on "
            f"({left_out['rule']}; --include-train keeps them)"
        )
    print(
        f"overall force RMSE {s['force_rmse']:.4f} eV/Å "
        f"({s['force_rmse'] / KCAL_MOL:.3f} kcal/(mol Å)), energy RMSE "
        f"{s['energy_rmse']:.4f} eV over {s['n_frames']} frames in "
        f"{s['n_clusters']} clusters"
    )
    print(
        f"worst cluster {s['max_cluster']} ({s['max_cluster_frames']} frames): "
        f"{s['max_cluster_force_rmse']:.4f} eV/Å = {s['max_ratio']:.2f}x overall; "
        f"best {s['min_cluster']}: {s['min_ratio']:.2f}x"
    )
    print(
        f"per-atom force error |F_pred - F_ref|: p99 {s['atom_error_p99']:.4f} eV/Å "
        f"({s['atom_error_p99_kcal']:.3f} kcal/(mol Å)), max "
        f"{s['atom_error_max']:.4f} eV/Å ({s['atom_error_max_kcal']:.3f} kcal/(mol Å))"
    )
    if extra is not None:
        e = extra.statistics()
        print(
            f"extra test set ({len(extra.labels)} frames): force RMSE "
            f"{e['force_rmse']:.4f} eV/Å ({e['force_rmse'] / KCAL_MOL:.3f} "
            f"kcal/(mol Å)) = {e['force_rmse'] / s['force_rmse']:.2f}x DATA's; "
            f"per-atom p99 {e['atom_error_p99']:.4f} eV/Å"
        )
    print("worst clusters (cluster, frames, force RMSE eV/Å, ratio):")
    for c in errors.worst(5):
        print(
            f"  {c:4d} {errors.n_frames[c]:6d} {errors.force_rmse[c]:.4f} "
            f"{errors.force_rmse[c] / s['force_rmse']:.2f}x"
        )
    print(f"report: {os.path.join(directory, 'cluster_errors.csv')}")
    print(f"plot:   {os.path.join(directory, 'cluster_errors.png')}")
