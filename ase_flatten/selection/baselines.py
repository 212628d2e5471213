"""Peer strategies for choosing N training frames from a pool.

``random``
    uniform without replacement (the paper's "default model");
``energy``
    energy-stratified sampling as sGDML does by default (its
    ``draw_strat_sample``: a Freedman-Diaconis histogram of the energies, frames
    spread over the bins);
``fps``, ``cur``
    farthest-point sampling and CUR decomposition in the pairwise-distance
    descriptor space, scikit-matter's implementations.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import InputError

if TYPE_CHECKING:  # the CLI imports STRATEGIES while it builds its parser
    from ..data import Dataset

STRATEGIES = ("random", "energy", "fps", "cur")


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
