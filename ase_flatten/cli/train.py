"""Train a model on N frames of a dataset and save it as a model directory.

A test split (--test-fraction, seeded by --split-seed, the same for every strategy
and for `ase-flatten select`) is held out; N frames are chosen from the rest by
--strategy: random (the paper's "default model"), energy (energy-stratified, as
sGDML samples by default), fps or cur (scikit-matter, in descriptor space), direct
(maml's DIRECT sampling: PCA, BIRCH, one frame per cluster; extra 'direct'). The
model's force errors on the test split are measured per cluster. The directory
holds the model, its training indices (DIR/train_indices.npy), the test split, the
clusters and their errors, the backend's validation frames (never test frames,
DIR/validation_indices.npy) and provenance (DIR/model.json); FlattenedCalculator(DIR),
`ase-flatten errors --model DIR` and `ase-flatten compare` load it.

Backend hyperparameters go in as -p KEY=VALUE (VALUE is read as JSON when it
parses, e.g. -p sigma=20 -p sigma_grid=[10,20,40] -p loss=energy).

example: ase-flatten train traj.xyz --backend sgdml --size 200 -o models/default
"""

from __future__ import annotations

import argparse
import logging

from ..selection.baselines import STRATEGIES
from .common import (
    add_backend_arguments,
    add_clustering_arguments,
    add_dataset_arguments,
    add_split_arguments,
    positive_int,
)
from .runtime import add_output_arguments

description = __doc__
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    add_backend_arguments(parser)
    parser.add_argument(
        "--size", type=positive_int, required=True, help="number of training frames"
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="random",
        help="how the frames are chosen (default: random)",
    )
    add_split_arguments(parser)
    add_output_arguments(parser, COMMAND)
    add_clustering_arguments(parser)


COMMAND = "ase-flatten train"


def run(args: argparse.Namespace) -> None:
    import time

    import numpy as np

    from ..data import write_reference_frames
    from ..error_analysis import KCAL_MOL, model_errors
    from ..models import write_model_files
    from ..outputs import atomic_directory, atomic_path, check_output_directory
    from ..selection.baselines import select_frames
    from ..selection.split import holdout_split
    from .common import build_backend, fit_clusters, read_dataset_arg

    check_output_directory(args.output, COMMAND, args.overwrite, [args.data])
    backend = build_backend(args.backend, args.param, args.seed)
    dataset = read_dataset_arg(args)
    test, pool = holdout_split(len(dataset), args.test_fraction, args.split_seed)
    train_idx = select_frames(args.strategy, dataset, pool, args.size, args.seed)
    # the folder is made before training: an unwritable place fails now
    with atomic_directory(args.output, COMMAND, args.overwrite, [args.data]) as tmp:
        start = time.perf_counter()
        backend.fit(dataset, train_idx, held_out=test)
        seconds = time.perf_counter() - start
        clusters = fit_clusters(dataset, args)
        errors = None
        if len(test):
            errors = model_errors(backend, dataset, test, clusters.labels_)
        write_model_files(
            tmp,
            backend,
            train_idx,
            dataset,
            clusters=clusters,
            cluster_errors=errors,
            strategy=args.strategy,
            seed=args.seed,
            test_fraction=args.test_fraction,
            split_seed=args.split_seed,
            train_seconds=round(seconds, 2),
            test_force_rmse=errors.overall["force_rmse"] if errors else None,
        )
        with atomic_path(tmp / "test_indices.npy") as path:
            np.save(path, test)
        write_reference_frames(dataset, tmp / "train.xyz", train_idx, args.strategy)
    print(
        f"trained {args.backend} on {args.size} {args.strategy} frames of "
        f"{dataset.formula} in {seconds:.1f} s -> {args.output}"
    )
    if errors:
        s = errors.summary()
        print(
            f"test split ({len(test)} frames): force RMSE {s['force_rmse']:.4f} eV/Å "
            f"({s['force_rmse'] / KCAL_MOL:.3f} kcal/(mol Å)), worst cluster "
            f"{s['max_cluster_force_rmse']:.4f} eV/Å ({s['max_ratio']:.2f}x)"
        )
