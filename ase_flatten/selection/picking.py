"""Steps 3-5 of the flattening loop: from per-frame errors to the frames to add.

Pure functions of arrays, so each variant the paper or the authors' code used can
be tested on its own:

* :func:`high_error_union` - merge the coarse clusters whose force RMSE exceeds a
  threshold (factor x overall RMSE, or x the mean of the cluster RMSEs), or, beyond
  the paper, the worst clusters that carry half the pool's squared force error (an
  adaptive threshold: it follows how concentrated the error is);
* :func:`allocate` - how many frames each fine cluster gives: one from each of the
  worst (the paper), proportional to cluster size (the paper's peptide), or to the
  cluster's share of the total squared error (the authors' code);
* :func:`pick_in_cluster` - which frames: highest error (the paper), closest to the
  centroid, or random.

Beyond the paper (``--pick``), two rules that choose among frames directly instead
of one per fine cluster, and the farthest-point step they share:

* :func:`farthest_high_error` - farthest-point picks among the frames whose own
  error is above the threshold (``--pick fps``);
* :func:`ranked_with_diversity` - per-frame error ranking, each frame's error
  damped by how close it is to a frame already chosen (``--pick ranked``);
* :func:`spread_frames` - farthest-point sampling away from the chosen frames
  (also ``--diverse-share``).
"""

from __future__ import annotations

import numpy as np

from ..exceptions import InputError

THRESHOLDS = ("overall", "mean", "mass")
#: ``threshold="mass"``: the worst clusters together carry this share of the pool's
#: summed squared force error
ERROR_MASS_SHARE = 0.5
ALLOCATIONS = ("worst", "size", "error")
CRITERIA = ("error", "centroid", "random")
PICKS = ("fine", "fps", "ranked")


def cluster_rmse(labels: np.ndarray, frame_mse: np.ndarray, n_clusters: int):
    """Force RMSE per cluster from per-frame mean squared errors (NaN if empty)."""
    count = np.bincount(labels, minlength=n_clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.bincount(labels, frame_mse, minlength=n_clusters) / count)


def weighted_overall_rmse(cluster_rmse_: np.ndarray, frames: np.ndarray) -> float:
    """The pool's force RMSE from per-cluster estimates, each weighted by its frames.

    With an error sample of at most K frames per cluster the plain mean over the
    sample weighs small clusters like large ones; this is the estimate of the
    pool's RMSE that the full prediction gives. Clusters without an estimate
    (NaN) or without frames are left out.

    Parameters
    ----------
    cluster_rmse_ : ndarray, shape (n_clusters,)
        Force RMSE per cluster (eV/Å), NaN where none was measured.
    frames : ndarray, shape (n_clusters,)
        Frames per cluster that the estimate stands for.
    """
    known = np.isfinite(cluster_rmse_) & (frames > 0)
    weights = frames[known].astype(float)
    return float(np.sqrt(np.sum(weights * cluster_rmse_[known] ** 2) / weights.sum()))


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

    With ``threshold="mass"`` the factor is not used: the worst clusters join until
    they carry :data:`ERROR_MASS_SHARE` of the candidates' summed squared error
    (cluster RMSE² x candidate frames), and the threshold returned is the RMSE of
    the last one. Concentrated errors give a small union; a flat error a wide one.
    """
    if threshold not in THRESHOLDS:
        raise InputError(
            f"unknown threshold {threshold!r}; choose one of {', '.join(THRESHOLDS)}"
        )
    rmse = np.where(np.isfinite(cluster_force_rmse), cluster_force_rmse, -np.inf)
    order = np.argsort(-rmse, kind="stable")
    order = order[np.isfinite(rmse[order]) & (candidates_per_cluster[order] > 0)]
    if threshold == "mass":
        mass = rmse[order] ** 2 * candidates_per_cluster[order]
        n_in = int(np.searchsorted(np.cumsum(mass), ERROR_MASS_SHARE * mass.sum()))
        chosen = list(order[: min(n_in + 1, len(order))])
        limit = float(rmse[chosen[-1]]) if chosen else float(overall_rmse)
    else:
        reference = (
            overall_rmse if threshold == "overall" else np.nanmean(cluster_force_rmse)
        )
        limit = factor * reference
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


def _nearest_distance(X, candidates, chosen) -> np.ndarray:
    """Euclidean distance from each candidate to its nearest chosen frame."""
    from scipy.spatial.distance import cdist

    near = np.full(len(candidates), np.inf)
    for start in range(0, len(chosen), 256):
        block = cdist(X[candidates], X[chosen[start : start + 256]])
        near = np.minimum(near, block.min(axis=1))
    return near


def spread_frames(X, candidates, chosen, n: int) -> np.ndarray:
    """Farthest-point picks among ``candidates``, away from frames already chosen.

    Parameters
    ----------
    X : ndarray, shape (M, D)
        Descriptors of every frame.
    candidates : ndarray of int
        Frames that may be picked.
    chosen : list of ndarray of int
        Frames already in (or entering) the training set.
    n : int
        Frames wanted.

    Returns
    -------
    ndarray, shape (min(n, len(candidates)),)
        Each pick the candidate farthest (Euclidean, descriptor) from every
        chosen frame and every earlier pick.
    """
    candidates = np.asarray(candidates, dtype=int)
    if n <= 0 or len(candidates) == 0:
        return np.empty(0, dtype=int)
    far = _nearest_distance(X, candidates, np.concatenate(chosen).astype(int))
    return _greedy(X, candidates, far, n, score=lambda distance: distance)


def farthest_high_error(X, union, frame_rmse, limit, chosen, n) -> np.ndarray:
    """``--pick fps``: farthest-point picks among the high-error frames.

    Parameters
    ----------
    X : ndarray, shape (M, D)
        Descriptors of every frame.
    union : ndarray of int
        Candidate frames of the high-error coarse clusters.
    frame_rmse : ndarray, shape (len(union),)
        Each candidate's force RMSE (eV/Å).
    limit : float
        The loop's threshold (eV/Å); frames above it are the high-error ones.
        When fewer than ``n`` are, the ``n`` highest are used.
    chosen : ndarray of int
        The training set.
    n : int
        Frames wanted.
    """
    order = np.argsort(-frame_rmse, kind="stable")
    high = max(int(np.sum(frame_rmse > limit)), min(n, len(union)))
    return spread_frames(X, union[order[:high]], [chosen], n)


def ranked_with_diversity(X, candidates, frame_rmse, chosen, n) -> np.ndarray:
    """``--pick ranked``: highest error first, damped near frames already chosen.

    A candidate's score is its force RMSE times ``1 - exp(-(d / l)^2)``, where
    ``d`` is its distance to the nearest training frame or earlier pick and ``l``
    the median of those distances before the first pick: a frame next to a chosen
    one counts little, one a typical distance away almost fully.

    Parameters
    ----------
    X : ndarray, shape (M, D)
        Descriptors of every frame.
    candidates : ndarray of int
        Frames that may be picked.
    frame_rmse : ndarray, shape (len(candidates),)
        Each candidate's force RMSE (eV/Å).
    chosen : ndarray of int
        The training set.
    n : int
        Frames wanted.
    """
    candidates = np.asarray(candidates, dtype=int)
    if n <= 0 or len(candidates) == 0:
        return np.empty(0, dtype=int)
    near = _nearest_distance(X, candidates, np.asarray(chosen, dtype=int))
    scale = float(np.median(near)) or 1.0

    def damped_error(distance):
        return frame_rmse * -np.expm1(-((distance / scale) ** 2))

    return _greedy(X, candidates, near, n, score=damped_error)


def _greedy(X, candidates, near, n, score) -> np.ndarray:
    """``n`` picks, each the best ``score(near)``; ``near`` (each candidate's
    distance to the nearest chosen frame) is updated after every pick."""
    picks = []
    for _ in range(min(n, len(candidates))):
        best = int(np.argmax(score(near)))
        picks.append(candidates[best])
        near = np.minimum(
            near, np.linalg.norm(X[candidates] - X[candidates[best]], axis=1)
        )
    return np.asarray(picks, dtype=int)
