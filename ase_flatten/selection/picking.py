"""Steps 3-5 of the flattening loop: from per-frame errors to the frames to add.

Pure functions of arrays, so each variant the paper or the authors' code used can
be tested on its own:

* :func:`high_error_union` - merge the coarse clusters whose force RMSE exceeds a
  threshold (factor x overall RMSE, or x the mean of the cluster RMSEs);
* :func:`allocate` - how many frames each fine cluster gives: one from each of the
  worst (the paper), proportional to cluster size (the paper's peptide), or to the
  cluster's share of the total squared error (the authors' code);
* :func:`pick_in_cluster` - which frames: highest error (the paper), closest to the
  centroid, or random.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import InputError

THRESHOLDS = ("overall", "mean")
ALLOCATIONS = ("worst", "size", "error")
CRITERIA = ("error", "centroid", "random")


def cluster_rmse(labels: np.ndarray, frame_mse: np.ndarray, n_clusters: int):
    """Force RMSE per cluster from per-frame mean squared errors (NaN if empty)."""
    count = np.bincount(labels, minlength=n_clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.bincount(labels, frame_mse, minlength=n_clusters) / count)


def high_error_union(
    cluster_force_rmse: np.ndarray,
    overall_rmse: float,
    factor: float,
    threshold: str,
    candidates_per_cluster: np.ndarray,
    min_frames: int,
) -> tuple[np.ndarray, float]:
    """Coarse clusters to re-cluster finely, worst first, and the threshold used.

    Every cluster above ``factor`` x the reference value; if they hold fewer than
    ``min_frames`` candidate frames (or none is above), the next-worst clusters
    join until they do or none is left.
    """
    if threshold not in THRESHOLDS:
        raise InputError(
            f"unknown threshold {threshold!r}; choose one of {', '.join(THRESHOLDS)}"
        )
    rmse = np.where(np.isfinite(cluster_force_rmse), cluster_force_rmse, -np.inf)
    reference = (
        overall_rmse if threshold == "overall" else np.nanmean(cluster_force_rmse)
    )
    limit = factor * reference
    order = np.argsort(-rmse, kind="stable")
    order = order[np.isfinite(rmse[order]) & (candidates_per_cluster[order] > 0)]
    chosen = [c for c in order if rmse[c] > limit]
    for c in order[len(chosen) :]:
        if candidates_per_cluster[chosen].sum() >= min_frames:
            break
        chosen.append(c)
    return np.asarray(chosen, dtype=int), float(limit)


def allocate(
    allocation: str,
    n_total: int,
    sizes: np.ndarray,
    rmse: np.ndarray,
    squared_error: np.ndarray,
) -> np.ndarray:
    """Frames to take from each fine cluster; sums to ``min(n_total, sizes.sum())``.

    Parameters
    ----------
    allocation : {"worst", "size", "error"}
    n_total : int
        Frames to add.
    sizes : ndarray
        Candidate frames per fine cluster (the cap).
    rmse : ndarray
        Force RMSE per fine cluster (ranks clusters; ties by index).
    squared_error : ndarray
        Summed squared force error per fine cluster.
    """
    if allocation not in ALLOCATIONS:
        raise InputError(
            f"unknown allocation {allocation!r}; choose one of {', '.join(ALLOCATIONS)}"
        )
    sizes = np.asarray(sizes, dtype=int)
    n_total = min(n_total, int(sizes.sum()))
    order = np.argsort(-np.nan_to_num(rmse, nan=-np.inf), kind="stable")
    counts = np.zeros(len(sizes), dtype=int)
    if allocation != "worst":
        weights = sizes if allocation == "size" else np.asarray(squared_error, float)
        weights = np.where(sizes > 0, np.maximum(weights, 0), 0).astype(float)
        if weights.sum() > 0:
            share = n_total * weights / weights.sum()
            counts = np.minimum(np.floor(share).astype(int), sizes)
            # the rest by largest remainder, worst clusters first on ties
            remainder = share - counts
            order = order[np.argsort(-remainder[order], kind="stable")]
    # one each going down the ranking, round after round, until n_total
    while counts.sum() < n_total:
        for c in order:
            if counts.sum() >= n_total:
                break
            if counts[c] < sizes[c]:
                counts[c] += 1
    return counts


def pick_in_cluster(
    criterion: str,
    members: np.ndarray,
    k: int,
    frame_error: np.ndarray,
    descriptors: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``k`` of ``members`` (dataset indices) by ``criterion``.

    ``frame_error`` and ``descriptors`` are aligned with ``members``.
    """
    if k <= 0:
        return members[:0]
    if criterion == "error":
        order = np.argsort(-frame_error, kind="stable")
    elif criterion == "centroid":
        centre = descriptors.mean(axis=0)
        order = np.argsort(np.linalg.norm(descriptors - centre, axis=1), kind="stable")
    elif criterion == "random":
        order = rng.permutation(len(members))
    else:
        raise InputError(
            f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}"
        )
    return members[order[:k]]
