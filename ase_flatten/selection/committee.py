"""Query by committee: the ``committee`` peer strategy.

As in DP-GEN's model deviation, MACE committees and ANI's active learning: a
committee of models trained on the frames chosen so far predicts the rest of the
pool, and the frames where their forces disagree most join the training set.

The loop: ``committee_init`` x ``n`` frames drawn at random, then
``committee_steps`` rounds that

1. train ``committee`` models, each on its own share ``committee_subsample`` of
   the chosen frames (drawn without replacement) and with its own seed;
2. predict the forces of every pool frame not yet chosen with each member;
3. score each frame by the maximum over its atoms of the force standard deviation
   across the members, ``max_i sqrt(mean_m |F_mi - <F_i>|^2)`` (DP-GEN's
   ``max_devi_f``);
4. take the ``committee_candidates`` x ``k`` highest-scoring frames and pick ``k``
   of them by farthest-point sampling on the pairwise-distance descriptor,
   starting from the highest-scoring one, so that one region of disagreement
   does not take the whole round.

The rounds add the remaining frames in nearly equal parts. Frames outside the
pool (the test split) are passed to every fit as held out, so no member sees them.
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


def force_deviation(forces: np.ndarray) -> np.ndarray:
    """Maximum atomic force standard deviation across a committee.

    Parameters
    ----------
    forces : ndarray, shape (C, M, N, 3)
        Forces of ``M`` frames predicted by ``C`` models, eV/Å.

    Returns
    -------
    ndarray, shape (M,)
        ``max_i sqrt(mean_c |F_ci - mean_c F_ci|^2)`` per frame, eV/Å.
    """
    forces = np.asarray(forces, dtype=float)
    spread = forces - forces.mean(axis=0)
    per_atom = np.sqrt((spread**2).sum(axis=-1).mean(axis=0))  # (M, N)
    return per_atom.max(axis=1)


def round_sizes(n: int, settings: PeerSettings) -> list[int]:
    """Frames drawn at random first, then frames added in each round."""
    n_init = min(n - 1, max(2, int(round(settings.committee_init * n))))
    steps = min(settings.committee_steps, n - n_init)
    base, extra = divmod(n - n_init, steps)
    return [n_init] + [base + (i < extra) for i in range(steps)]


def committee_round(
    dataset: Dataset,
    chosen: np.ndarray,
    candidates: np.ndarray,
    k: int,
    make_backend: Callable[[int], Backend],
    settings: PeerSettings,
    rng: np.random.Generator,
    held_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One round: train the committee, score ``candidates``, pick ``k`` of them.

    Returns
    -------
    picks : ndarray, shape (k,)
        Dataset indices, in the order chosen.
    deviation : ndarray, shape (len(candidates),)
        Each candidate's maximum atomic force standard deviation, eV/Å.
    """
    from ..descriptors import pairwise_distances

    n_train = max(2, int(round(settings.committee_subsample * len(chosen))))
    forces = []
    for _ in range(settings.committee):
        subset = np.sort(rng.choice(chosen, min(n_train, len(chosen)), replace=False))
        backend = make_backend(int(rng.integers(2**31)))
        backend.fit(dataset, subset, held_out=held_out)
        forces.append(backend.predict(dataset, candidates, progress=False)[1])
    deviation = force_deviation(np.stack(forces))
    top = np.argsort(-deviation, kind="stable")[: settings.committee_candidates * k]
    X = pairwise_distances(dataset.positions[candidates[top]])
    picked = [0]  # the highest disagreement first
    nearest = np.linalg.norm(X - X[0], axis=1)
    nearest[0] = -np.inf
    for _ in range(1, k):
        j = int(np.argmax(nearest))
        picked.append(j)
        nearest = np.minimum(nearest, np.linalg.norm(X - X[j], axis=1))
        nearest[picked] = -np.inf
    return candidates[top[picked]], deviation


def committee_select(
    dataset: Dataset,
    pool: np.ndarray,
    n: int,
    make_backend: Callable[[int], Backend],
    seed: int,
    settings: PeerSettings,
) -> np.ndarray:
    """Choose ``n`` frames of ``pool`` by query by committee (module docstring).

    Parameters
    ----------
    dataset : Dataset
    pool : ndarray of int
        Frames to choose from; the others are held out of every fit.
    n : int
        Frames wanted.
    make_backend : callable
        ``make_backend(seed)`` gives a new, unfitted backend.
    seed : int
        Seeds the random start, the members' frames and their seeds.
    settings : PeerSettings

    Returns
    -------
    ndarray, shape (n,)
        Dataset indices (random start first, then each round's picks).
    """
    pool = np.asarray(pool, dtype=int)
    if n < 3:
        raise InputError(
            f"query by committee needs at least 3 frames (2 to train on, 1 to add), "
            f"got --size {n}"
        )
    rng = np.random.default_rng(seed)
    held_out = np.setdiff1d(np.arange(len(dataset)), pool)
    sizes = round_sizes(n, settings)
    chosen = rng.choice(pool, sizes[0], replace=False)
    for number, k in enumerate(sizes[1:], start=1):
        candidates = np.setdiff1d(pool, chosen)
        picks, deviation = committee_round(
            dataset, chosen, candidates, k, make_backend, settings, rng, held_out
        )
        logger.info(
            "committee round %d: %d models on %d frames; force deviation of the "
            "pool %.4f eV/Å (median), of the %d picks %.4f eV/Å (median)",
            number,
            settings.committee,
            len(chosen),
            float(np.median(deviation)),
            k,
            float(np.median(deviation[np.searchsorted(candidates, picks)])),
        )
        chosen = np.concatenate([chosen, picks])
    return chosen
