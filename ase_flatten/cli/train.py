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
forces disagree most) or lcmd (batch active learning: one model of --backend per
round, schnet only, and bmdal-reg's LCMD selection on its last-layer features;
extra 'lcmd'; the committee's --committee-init and --committee-steps). The
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
from ..training import TrainSettings
from .common import (
    _int,
    add_backend_arguments,
    add_clustering_arguments,
    add_dataset_arguments,
    add_domain_argument,
    add_split_arguments,
    field_default,
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
        default=field_default(TrainSettings, "strategy"),
        help="how the frames are chosen (default: %(default)s)",
    )
    peers = parser.add_argument_group(
        "settings of the ggfps, quests, committee and lcmd strategies"
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
        help="rounds after the random start, committee and lcmd (default "
        f"{PeerSettings.committee_steps})",
    )
    peers.add_argument(
        "--committee-init",
        type=float,
        default=PeerSettings.committee_init,
        metavar="SHARE",
        help="share of the frames drawn at random before the first round, "
        f"committee and lcmd (default {PeerSettings.committee_init:g})",
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
    add_split_arguments(parser, TrainSettings)
    add_output_arguments(parser, COMMAND)
    add_clustering_arguments(parser)
    add_domain_argument(parser)


COMMAND = "ase-flatten train"


def run(args: argparse.Namespace) -> None:
    import numpy as np

    from ..error_analysis import KCAL_MOL
    from ..training import train_model
    from .common import clustering_settings, data_file, settings_from

    peers = settings_from(PeerSettings, args, bandwidth=args.quests_bandwidth)
    settings = settings_from(
        TrainSettings,
        args,
        params=dict(args.param),
        peers=peers,
        clustering=clustering_settings(args),
    )
    model = train_model(
        data_file(args), args.output, settings, overwrite=args.overwrite
    )
    print(
        f"trained {args.backend} on {args.size} {args.strategy} frames of "
        f"{_formula(model)} in {model.meta['train_seconds']:.1f} s -> {args.output}"
    )
    if model.overall_force_rmse is not None:
        overall = model.overall_force_rmse
        worst = float(np.nanmax(model.cluster_force_rmse))
        print(
            f"test split ({len(model.test_indices)} frames): force RMSE "
            f"{overall:.4f} eV/Å ({overall / KCAL_MOL:.3f} kcal/(mol Å)), worst "
            f"cluster {worst:.4f} eV/Å ({worst / overall:.2f}x)"
        )


def _formula(model) -> str:
    """The chemical formula of the model's molecule, e.g. ``C2H6O``."""
    from ase import Atoms

    return Atoms(numbers=model.meta["numbers"]).get_chemical_formula()
