"""Peer strategies for choosing N training frames from a pool.

``random``
    uniform without replacement (the paper's "default model");
``energy``
    energy-stratified sampling as sGDML does by default (its
    ``draw_strat_sample``: a Freedman-Diaconis histogram of the energies, frames
    spread over the bins);
``fps``, ``cur``
    farthest-point sampling and CUR decomposition in the pairwise-distance
    descriptor space, scikit-matter's implementations;
``direct``
    DIRECT sampling (maml's ``DIRECTSampler``: standard scaling, PCA with the
    Kaiser rule and weighted components, BIRCH into ``n`` clusters, the frame
    nearest each cluster's centre) on the pairwise-distance descriptor.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import InputError

if TYPE_CHECKING:  # the CLI imports STRATEGIES while it builds its parser
    from ..data import Dataset

STRATEGIES = ("random", "energy", "fps", "cur", "direct")
logger = logging.getLogger(__name__)


def select_frames(
    strategy: str, dataset: Dataset, pool: np.ndarray, n: int, seed: int = 0
) -> np.ndarray:
    """Choose ``n`` frames of ``pool`` with ``strategy``; sorted dataset indices."""
    pool = np.asarray(pool, dtype=int)
    if n > len(pool):
        raise InputError(
            f"{dataset.source}: cannot choose {n} training frames from a pool of "
            f"{len(pool)} (the rest is the test split)"
        )
    if strategy == "random":
        chosen = np.random.default_rng(seed).choice(pool, n, replace=False)
    elif strategy == "energy":
        from ..backends.sgdml import energy_stratified_sample

        chosen = pool[energy_stratified_sample(dataset.energies[pool], n, seed)]
    elif strategy in ("fps", "cur"):
        chosen = pool[_skmatter(strategy, dataset.positions[pool], n, seed)]
    elif strategy == "direct":
        chosen = pool[_direct(dataset.positions[pool], n, seed)]
    else:
        raise InputError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    return np.sort(chosen)


def farthest_point_frames(positions: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Farthest-point sampling of frames on the pairwise-distance descriptor.

    The ``fps`` strategy (scikit-matter's FPS) for frames that are not a Dataset
    (e.g. MD frames without reference labels).

    Parameters
    ----------
    positions : ndarray, shape (M, N, 3)
        Frames in Å.
    n : int
        Frames wanted; all ``M`` (in order) when ``n >= M``.
    seed : int
        Chooses the first frame.

    Returns
    -------
    ndarray, shape (min(n, M),)
        Frame indices in the order FPS chose them (most spread first).
    """
    if n >= len(positions):
        return np.arange(len(positions))
    return _skmatter("fps", np.asarray(positions), n, seed)


def _skmatter(strategy: str, positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    try:
        from skmatter.sample_selection import CUR, FPS
    except ImportError:
        raise InputError(
            f"the {strategy} strategy needs skmatter: pip install "
            "'ase-flatten[baselines]'"
        ) from None
    from ..descriptors import pairwise_distances

    X = pairwise_distances(positions)
    if strategy == "fps":
        first = int(np.random.default_rng(seed).integers(len(X)))
        selector = FPS(n_to_select=n, initialize=first)
    else:
        # The descriptor has rank N(N-1)/2 (36 for ethanol): CUR on it runs out of
        # directions after that many picks. CUR therefore runs on an RBF feature
        # map of the descriptor (Nystroem, width from the descriptor's variance)
        # with enough components, and recomputes its leverage scores every
        # n/10 picks instead of after each (0.9-1.9 s per recomputation at 1,000
        # components on 18,000 frames).
        from sklearn.kernel_approximation import Nystroem

        components = min(len(X), max(2 * n, 200))
        gamma = 1.0 / (2.0 * X.var(axis=0).sum())
        feature_map = Nystroem(gamma=gamma, n_components=components, random_state=seed)
        X = feature_map.fit_transform(X)
        selector = CUR(n_to_select=n, recompute_every=max(1, n // 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skmatter's zero-column notes
        return np.asarray(selector.fit(X).selected_idx_, dtype=int)


def _direct(positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    """DIRECT sampling, run by maml itself, on the pairwise-distance descriptor.

    maml's pipeline without its structure encoder: scaling, PCA (components with
    eigenvalue > 1, weighted by their explained variance), BIRCH into ``n``
    clusters (maml lowers BIRCH's threshold until it finds ``n`` subclusters), one
    frame per cluster (the one nearest its centre). DIRECT itself has no random
    choice; BIRCH depends on the order it reads the frames in, so ``seed``
    shuffles that order. A cluster that no frame is predicted into leaves a gap,
    filled with frames drawn at random (seeded) from the rest.

    Parameters
    ----------
    positions : ndarray, shape (M, N, 3)
        Pool frames in Å.
    n : int
        Frames wanted (``n <= M``).
    seed : int
        Shuffles the frames BIRCH reads and draws any top-up frames.

    Returns
    -------
    ndarray, shape (n,)
        Distinct indices into ``positions``.
    """
    DIRECTSampler, BirchClustering, SelectKFromClusters = _import_maml()
    from sklearn.exceptions import ConvergenceWarning

    from ..descriptors import pairwise_distances

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(positions))
    X = pairwise_distances(positions[order])
    sampler = DIRECTSampler(
        structure_encoder=False,
        clustering=BirchClustering(n=n, threshold_init=0.5),
        select_k_from_clusters=SelectKFromClusters(k=1),
    )
    with warnings.catch_warnings():
        # BIRCH warns at each threshold maml's loop tries and lowers
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = sampler.fit_transform(X)
    picked = np.unique(np.asarray(result["selected_indexes"], dtype=int))
    if len(picked) < n:
        logger.info(
            "DIRECT gave %d frames for %d clusters; %d drawn at random",
            len(picked),
            n,
            n - len(picked),
        )
        rest = np.setdiff1d(np.arange(len(X)), picked)
        picked = np.concatenate([picked, rng.choice(rest, n - len(picked), False)])
    return order[picked[:n]]


def _import_maml():
    """maml's DIRECT classes, without the side effects of importing maml.

    maml's modules call ``logging.basicConfig()`` and set their own loggers to
    INFO: the root logger's handlers are restored and maml's sampling loggers
    follow this module's level.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from maml.sampling.direct import (
            BirchClustering,
            DIRECTSampler,
            SelectKFromClusters,
        )
    except ImportError:
        raise InputError(
            "the direct strategy needs maml: pip install 'ase-flatten[direct]'"
        ) from None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    for name in ("pca", "clustering", "stratified_sampling"):
        logging.getLogger(f"maml.sampling.{name}").setLevel(
            max(logger.getEffectiveLevel(), logging.INFO)
        )
    return DIRECTSampler, BirchClustering, SelectKFromClusters
