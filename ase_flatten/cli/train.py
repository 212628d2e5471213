"""Train a model on N frames of a dataset and save it as a model directory.

A test split (--test-fraction, seeded by --split-seed, the same for every strategy
and for `ase-flatten select`) is held out; N frames are chosen from the rest by
--strategy: random (the paper's "default model"), energy (energy-stratified, as
sGDML samples by default), fps or cur (scikit-matter, in descriptor space), direct
(maml's DIRECT sampling: PCA, BIRCH, one frame per cluster; extra 'direct'),
ggfps (farthest-point sampling weighted by the force norm), quests (QUESTS'
minimum set cover of atomic environments; extra 'quests'; --quests-bandwidth) or
committee (query by committee: --committee models of --backend trained on the
frames chosen so far pick, in --committee-steps rounds, the frames where their
forces disagree most). The
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

from ..selection.baselines import STRATEGIES, PeerSettings
from .common import (
    _int,
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
    peers = parser.add_argument_group(
        "settings of the ggfps, quests and committee strategies"
    )
    peers.add_argument(
        "--committee",
        type=_int,
        default=PeerSettings.committee,
        metavar="M",
        help=f"committee models (>= 2; default {PeerSettings.committee})",
    )
    peers.add_argument(
        "--committee-steps",
        type=_int,
        default=PeerSettings.committee_steps,
        metavar="K",
        help=f"rounds after the random start (default {PeerSettings.committee_steps})",
    )
    peers.add_argument(
        "--committee-init",
        type=float,
        default=PeerSettings.committee_init,
        metavar="SHARE",
        help="share of the frames drawn at random before the first round (default "
        f"{PeerSettings.committee_init:g})",
    )
    peers.add_argument(
        "--quests-bandwidth",
        type=float,
        metavar="H",
        help="QUESTS kernel width in 1/Å (default: the median distance of an atomic "
        "environment to the nearest one of another frame)",
    )
    peers.add_argument(
        "--ggfps-beta",
        type=float,
        default=PeerSettings.ggfps_beta,
        metavar="B",
        help="exponent of the force norm in GGFPS (default "
        f"{PeerSettings.ggfps_beta:g}; 0: plain FPS)",
    )
    add_split_arguments(parser)
    add_output_arguments(parser, COMMAND)
    add_clustering_arguments(parser)


COMMAND = "ase-flatten train"


def run(args: argparse.Namespace) -> None:
    import dataclasses
    import time

    from ..data import write_reference_frames
    from ..error_analysis import KCAL_MOL, model_errors
    from ..models import write_model_files
    from ..outputs import atomic_directory, check_output_directory
    from ..selection.baselines import select_frames
    from ..selection.split import holdout_split
    from .common import build_backend, fit_clusters, read_dataset_arg

    settings = PeerSettings(
        committee=args.committee,
        committee_steps=args.committee_steps,
        committee_init=args.committee_init,
        bandwidth=args.quests_bandwidth,
        ggfps_beta=args.ggfps_beta,
    )
    check_output_directory(args.output, COMMAND, args.overwrite, [args.data])
    backend = build_backend(args.backend, args.param, args.seed)
    dataset = read_dataset_arg(args)
    test, pool = holdout_split(len(dataset), args.test_fraction, args.split_seed)
    start = time.perf_counter()
    train_idx = select_frames(
        args.strategy,
        dataset,
        pool,
        args.size,
        args.seed,
        settings=settings,
        make_backend=lambda seed: build_backend(args.backend, args.param, seed),
    )
    select_seconds = time.perf_counter() - start
    peer = {}
    if args.strategy in ("ggfps", "quests", "committee"):
        peer = {"strategy_settings": dataclasses.asdict(settings)}
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
            test_indices=test,
            strategy=args.strategy,
            **peer,
            select_seconds=round(select_seconds, 2),
            seed=args.seed,
            test_fraction=args.test_fraction,
            split_seed=args.split_seed,
            train_seconds=round(seconds, 2),
            test_force_rmse=errors.overall["force_rmse"] if errors else None,
        )
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
