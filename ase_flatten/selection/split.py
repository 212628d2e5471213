"""The held-out test split shared by every strategy."""

from __future__ import annotations

import numpy as np

from ..exceptions import InputError


def holdout_split(n_frames: int, fraction: float = 0.1, seed: int = 0):
    """Seeded test frames and the remaining pool.

    Parameters
    ----------
    n_frames : int
        Frames in the dataset.
    fraction : float
        Share held out for testing, 0 <= fraction < 1.
    seed : int
        Split seed; the same seed and size give the same split, whatever the
        selection strategy, so runs can be compared frame for frame.

    Returns
    -------
    test, pool : ndarray of int
        Sorted, disjoint, together all frames.
    """
    if not 0 <= fraction < 1:
        raise InputError(f"--test-fraction must be in [0, 1), got {fraction}")
    n_test = int(round(fraction * n_frames))
    rng = np.random.default_rng([seed, 0x7E57])
    test = np.sort(rng.choice(n_frames, n_test, replace=False))
    pool = np.setdiff1d(np.arange(n_frames), test)
    return test, pool
