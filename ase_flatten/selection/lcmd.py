"""Batch active learning on last-layer features: the ``lcmd`` peer strategy.

After Holzmüller, Zaverkin, Kästner and Steinwart (JMLR 2023), with their
bmdal-reg library (:mod:`ase_flatten.bmdal`): a model trained on the frames
chosen so far describes every frame by the input of its energy's last linear
layer, summed over atoms (:meth:`~ase_flatten.backends.schnet.SchNetBackend.
last_layer_features`), and LCMD picks the next batch in that feature space: the
frame farthest from the chosen ones within the largest cluster around them.

The loop shares the committee's schedule (:class:`~ase_flatten.selection.
baselines.PeerSettings`): ``committee_init`` x ``n`` frames drawn at random, then
``committee_steps`` rounds of one model each, adding the remaining frames in
nearly equal parts. Frames outside the pool (the test split) are held out of
every fit. Needs a backend with last-layer features (``schnet``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import InputError

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..data import Dataset
    from .baselines import PeerSettings

logger = logging.getLogger(__name__)


def check_lcmd(make_backend: Callable[[int], Backend], seed: int = 0) -> None:
    """Raise InputError now when bmdal-reg is missing or the backend has no
    last-layer features."""
    from ..bmdal import _import_bmdal

    _import_bmdal()
    backend = make_backend(seed)
    if not hasattr(backend, "last_layer_features"):
        raise InputError(
            f"the lcmd strategy needs a neural backend with last-layer features "
            f"(schnet); the {backend.name} backend has none"
        )


def lcmd_select_frames(
    dataset: Dataset,
    pool: np.ndarray,
    n: int,
    make_backend: Callable[[int], Backend],
    seed: int,
    settings: PeerSettings,
) -> np.ndarray:
    """Choose ``n`` frames of ``pool`` by LCMD on last-layer features.

    Parameters
    ----------
    dataset : Dataset
    pool : ndarray of int
        Frames to choose from; the others are held out of every fit.
    n : int
        Frames wanted (at least 3).
    make_backend : callable
        ``make_backend(seed)`` gives a new, unfitted backend with
        ``last_layer_features``.
    seed : int
        Seeds the random start and each round's model.
    settings : PeerSettings
        ``committee_init`` and ``committee_steps``: the random start and rounds.

    Returns
    -------
    ndarray, shape (n,)
        Dataset indices (random start first, then each round's picks).
    """
    from ..bmdal import lcmd_select
    from .committee import round_sizes

    check_lcmd(make_backend, seed)
    pool = np.asarray(pool, dtype=int)
    if n < 3:
        raise InputError(
            f"the lcmd strategy needs at least 3 frames (2 to train on, 1 to add), "
            f"got --size {n}"
        )
    rng = np.random.default_rng(seed)
    held_out = np.setdiff1d(np.arange(len(dataset)), pool)
    sizes = round_sizes(n, settings)
    chosen = rng.choice(pool, sizes[0], replace=False)
    for number, k in enumerate(sizes[1:], start=1):
        candidates = np.setdiff1d(pool, chosen)
        backend = make_backend(int(rng.integers(2**31)))
        backend.fit(dataset, np.sort(chosen), held_out=held_out)
        features = backend.last_layer_features(
            dataset.positions[np.concatenate([chosen, candidates])]
        )
        picks = candidates[
            lcmd_select(features[: len(chosen)], features[len(chosen) :], k)
        ]
        logger.info(
            "lcmd round %d: a model on %d frames, %d of %d candidates picked",
            number,
            len(chosen),
            k,
            len(candidates),
        )
        chosen = np.concatenate([chosen, picks])
    return chosen
