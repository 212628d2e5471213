"""Per-frame force-error estimates for pool frames without labels.

A selection run on an unlabelled pool measures the model's force error only on
the frames it has labels for: the training set and ``error_sample`` frames per
coarse cluster. The high-error union of coarse clusters holds many more frames,
and the paper's fine clustering ranks them by their errors. Two estimates stand
in for the errors of the frames without labels (``SelectionConfig.error_estimate``):

``cluster``
    each frame takes its coarse cluster's sampled force RMSE: every frame of a
    coarse cluster looks the same, and the picks inside the union are close to
    random.
``committee``
    query by committee (as DP-GEN's model deviation and MACE committees do): a
    committee of ``committee`` models, each trained on its own random share
    ``committee_subsample`` of the training set, predicts the frames, and the mean
    squared deviation of their forces from the committee mean ranks them. The
    deviation is put on the scale of a force error by a least-squares line
    ``log mse = a + b log deviation`` through the frames whose error was
    measured (the sample), so fine clusters mixing measured and estimated
    frames compare like with like.

The committee costs ``committee`` fits on ``committee_subsample`` of the set and
their predictions of the candidate frames, no labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)

ESTIMATES = ("cluster", "committee")

#: a committee deviation this small counts as this (log of zero otherwise)
_TINY = 1e-12


def committee_deviation(
    dataset,
    train: np.ndarray,
    frames: np.ndarray,
    make_backend: Callable[[int], object],
    size: int,
    subsample: float,
    rng: np.random.Generator,
    held_out: np.ndarray,
) -> np.ndarray:
    """Mean squared force deviation across a committee, per frame.

    Parameters
    ----------
    dataset : Dataset
    train : ndarray of int
        The current training set; each member fits on a random share of it.
    frames : ndarray of int, shape (M,)
        Frames to score.
    make_backend : callable
        ``make_backend(seed)`` gives a new, unfitted backend.
    size : int
        Members (at least 2).
    subsample : float
        Each member's share of ``train``, in (0, 1].
    rng : numpy.random.Generator
        Draws the members' frames and seeds.
    held_out : ndarray of int
        Frames no member may validate on (the test split, unlabelled frames).

    Returns
    -------
    ndarray, shape (M,)
        ``mean_{i,a} var_c F_c,ia``: the committee's force variance averaged
        over atoms and Cartesian components, (eV/Å)^2.
    """
    n_member = min(len(train), max(2, int(round(subsample * len(train)))))
    forces = []
    for _ in range(size):
        subset = np.sort(rng.choice(train, n_member, replace=False))
        backend = make_backend(int(rng.integers(2**31)))
        backend.fit(dataset, subset, held_out=held_out)
        forces.append(backend.predict(dataset, frames, progress=False)[1])
    forces = np.stack(forces)  # (C, M, N, 3)
    return forces.var(axis=0).reshape(len(frames), -1).mean(axis=1)


def calibrated(
    deviation: np.ndarray, measured: np.ndarray, mse: np.ndarray
) -> np.ndarray:
    """Committee deviations put on the scale of the measured squared errors.

    Parameters
    ----------
    deviation : ndarray, shape (M,)
        Committee deviation of every frame, (eV/Å)^2.
    measured : ndarray of bool, shape (M,)
        Frames whose squared force error ``mse`` is known.
    mse : ndarray, shape (M,)
        Per-frame mean squared force error, (eV/Å)^2; read where ``measured``.

    Returns
    -------
    ndarray, shape (M,)
        ``exp(a + b log deviation)``, the line fitted by least squares through
        the measured frames (a falling line is flattened to the measured
        mean: a committee ranking frames backwards ranks nothing); with fewer
        than 3 measured frames or no spread in their deviations, the deviation
        scaled by the ratio of geometric means.
    """
    log_dev = np.log(np.maximum(deviation, _TINY))
    x = log_dev[measured]
    y = np.log(np.maximum(mse[measured], _TINY))
    if len(x) >= 3 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        if slope < 0:  # a committee that ranks backwards ranks nothing
            slope, intercept = 0.0, float(np.mean(y))
    else:
        slope, intercept = 1.0, float(np.mean(y - x)) if len(x) else 0.0
    logger.debug(
        "committee calibration: log mse = %.3f + %.3f log dev", intercept, slope
    )
    return np.exp(intercept + slope * log_dev)
