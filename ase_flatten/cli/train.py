"""Train a model on N frames of a dataset and save it as a model directory.

A test split (--test-fraction, seeded by --split-seed, the same for every strategy
and for `ase-flatten select`) is held out; N frames are chosen from the rest by
--strategy: random (the paper's "default model"), energy (energy-stratified, as
sGDML samples by default), fps or cur (scikit-matter, in descriptor space). The
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
    parser.add_argument("-o", "--output", required=True, metavar="DIR")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing model directory"
    )
    add_clustering_arguments(parser)


def run(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    import numpy as np

    from ..backends import make_backend
    from ..errors import KCAL_MOL, model_errors
    from ..exceptions import InputError
    from ..models import save_model
    from ..outputs import atomic_path
    from ..selection.baselines import select_frames
    from ..selection.split import test_split
    from .common import fit_clusters, read_dataset_arg

    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"{out}: exists and is not empty; pass --overwrite to replace")
    backend = make_backend(args.backend, random_state=args.seed, **dict(args.param))
    dataset = read_dataset_arg(args)
    test, pool = test_split(len(dataset), args.test_fraction, args.split_seed)
    train_idx = select_frames(args.strategy, dataset, pool, args.size, args.seed)
    start = time.perf_counter()
    backend.fit(dataset, train_idx, held_out=test)
    seconds = time.perf_counter() - start

    clusters = fit_clusters(dataset, args)
    errors = None
    if len(test):
        errors = model_errors(backend, dataset, test, clusters.labels_)
    save_model(
        out,
        backend,
        train_idx,
        dataset,
        clusters=clusters,
        cluster_errors=errors,
        overwrite=args.overwrite,
        strategy=args.strategy,
        seed=args.seed,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        train_seconds=round(seconds, 2),
        test_force_rmse=errors.overall["force_rmse"] if errors else None,
    )
    with atomic_path(out / "test_indices.npy") as tmp:
        np.save(tmp, test)
    dataset.write(out / "train.xyz", train_idx)
    print(
        f"trained {args.backend} on {args.size} {args.strategy} frames of "
        f"{dataset.formula} in {seconds:.1f} s -> {out}"
    )
    if errors:
        s = errors.summary()
        print(
            f"test split ({len(test)} frames): force RMSE {s['force_rmse']:.4f} eV/Å "
            f"({s['force_rmse'] / KCAL_MOL:.3f} kcal/(mol Å)), worst cluster "
            f"{s['max_cluster_force_rmse']:.4f} eV/Å ({s['max_ratio']:.2f}x)"
        )
