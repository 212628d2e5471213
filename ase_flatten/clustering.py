"""Two-stage clustering of configurational space (the paper's "Initial clustering").

Stage 1 groups frames of similar geometry: agglomerative clustering with Ward linkage
on the pairwise-distance descriptor (default 10 clusters). Ward is O(n^2) in memory,
so on large datasets it runs on a random subset and every other frame joins the
geometry cluster with the smallest average distance to that cluster's subset members
(the paper's rule; ``assign="max"`` uses the smallest maximum distance, as the
authors' code did).

Stage 2 splits each geometry cluster into energy levels with KMeans (k-means++,
default 5), giving 50 clusters in all. Energy levels are numbered from the lowest
mean energy up, so cluster ``g * n_energy + e`` is geometry ``g``, energy level ``e``
(when every geometry cluster holds at least ``n_energy`` distinct energies).

The estimator follows scikit-learn's conventions (``check_estimator`` passes): its
input ``X`` is one matrix, the descriptor columns followed by the energy in eV as
the last column, built by :func:`cluster_features`::

    X = cluster_features(pairwise_distances(positions), energies)
    labels = TwoStageClustering(n_geometry=10, n_energy=5).fit(X).labels_
    new_labels = model.predict(cluster_features(new_descriptor, new_energies))

so it works in a :class:`~sklearn.pipeline.Pipeline`, with
:func:`~sklearn.base.clone` and :class:`~sklearn.model_selection.GridSearchCV`.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from .clustering_options import (
    ASSIGN,
    ASSIGN_RULES,
    DESCRIPTOR,
    DESCRIPTORS,
    N_COMPONENTS,
    N_ENERGY,
    N_GEOMETRY,
    REDUCTIONS,
    SUBSET_SIZE,
)
from .exceptions import FILE_READ_ERRORS, InputError
from .parameters import check_choice, check_positive_int
from .threads import thread_map

logger = logging.getLogger(__name__)


def cluster_features(descriptor, energies) -> np.ndarray:
    """The input matrix of :class:`TwoStageClustering`: descriptor, then energy.

    Parameters
    ----------
    descriptor : array-like, shape (M, D)
        Descriptor of each frame, e.g. :func:`~ase_flatten.descriptors.
        pairwise_distances` (Å) or ``TwoStageClustering.describe(positions)``.
    energies : array-like, shape (M,)
        Potential energy of each frame in eV.

    Returns
    -------
    ndarray, shape (M, D + 1)
        ``descriptor`` with ``energies`` appended as the last column (float64;
        the values are copied unchanged).
    """
    descriptor = np.asarray(descriptor, dtype=float)
    energies = np.asarray(energies, dtype=float).reshape(-1)
    if descriptor.ndim != 2:
        raise InputError(
            f"descriptor must be 2-D (frames, features), got shape {descriptor.shape}"
        )
    if len(descriptor) != len(energies):
        raise InputError(
            f"{len(descriptor)} descriptor rows but {len(energies)} energies"
        )
    return np.column_stack([descriptor, energies])


class TwoStageClustering(ClusterMixin, BaseEstimator):
    """Ward clustering on geometry, then KMeans on energy inside each cluster.

    ``X`` holds the descriptor of every frame with its energy (eV) as the last
    column, as :func:`cluster_features` builds it; the stage-1 clustering sees
    only the descriptor columns, stage 2 only the energy.

    Parameters
    ----------
    n_geometry : int, default 10
        Number of Ward clusters on the descriptor.
    n_energy : int, default 5
        Number of KMeans energy levels inside each geometry cluster.
    subset_size : int or None, default 5000
        Ward runs on at most this many randomly chosen frames; the others are
        assigned. None runs Ward on every frame (O(n^2) memory).
    assign : {"average", "max"}, default "average"
        Assignment rule for frames outside the subset: smallest average (paper) or
        smallest maximum (authors' code) distance to a cluster's subset members.
    n_init : int, default 10
        KMeans restarts (k-means++ initialisation).
    chunk_size : int, default 256
        Frames per block in the assignment step; bounds memory to about
        ``chunk_size * subset_size * 4`` bytes per thread.
    random_state : int, RandomState or None, default 0
        Seed for the subset and KMeans. The default makes runs reproducible.
    descriptor : {"distances", "inverse"}, default "distances"
        Which descriptor the columns of ``X`` before the energy are;
        :meth:`describe` computes it for new structures (the calculator's and
        md_validation's cluster look-ups).
    reduce : {None, "pca", "kpca"}, default None
        Reduce ``X`` by PCA or RBF kernel PCA before clustering (for larger
        molecules, the paper's outlook); new frames are reduced the same way.
    n_components : int, default 10
        Components kept by ``reduce``.

    Attributes
    ----------
    n_features_in_ : int
        Columns of ``X`` seen in :meth:`fit`: descriptor width + 1.
    labels_ : ndarray, shape (M,)
        Cluster of each frame, ``0 .. n_clusters_ - 1``.
    geometry_labels_ : ndarray, shape (M,)
        Stage-1 (Ward) cluster of each frame.
    energy_labels_ : ndarray, shape (M,)
        Stage-2 energy level of each frame inside its geometry cluster, 0 = lowest.
    n_clusters_ : int
        Total number of clusters.
    cluster_offsets_ : ndarray, shape (n_geometry + 1,)
        ``labels_ = cluster_offsets_[geometry] + energy``.
    subset_indices_ : ndarray
        Frames Ward ran on.
    subset_descriptors_ : ndarray
        Their descriptors, reduced when ``reduce`` is set, without the energy
        (kept to assign new frames).
    subset_labels_ : ndarray
        Their geometry clusters.
    energy_centers_ : list of ndarray
        Sorted KMeans energy centres (eV) per geometry cluster.
    """

    def __init__(
        self,
        n_geometry: int = N_GEOMETRY,
        n_energy: int = N_ENERGY,
        subset_size: int | None = SUBSET_SIZE,
        assign: str = ASSIGN,
        n_init: int = 10,
        chunk_size: int = 256,
        random_state=0,
        descriptor: str = DESCRIPTOR,
        reduce: str | None = None,
        n_components: int = N_COMPONENTS,
    ):
        self.n_geometry = n_geometry
        self.n_energy = n_energy
        self.subset_size = subset_size
        self.assign = assign
        self.n_init = n_init
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.descriptor = descriptor
        self.reduce = reduce
        self.n_components = n_components

    # -- fitting ---------------------------------------------------------------
    def fit(self, X, y=None) -> TwoStageClustering:
        """Cluster the frames of ``X``.

        Parameters
        ----------
        X : array-like, shape (M, D + 1)
            Descriptor columns, then the energy in eV (:func:`cluster_features`).
        y : None
            Ignored (scikit-learn's signature). The energies are the last column
            of ``X``, not ``y``: the former call ``fit(descriptor, energies)``
            would cluster the last descriptor column as the energy.

        Returns
        -------
        self
        """
        self._check_params()
        X, energies = self._split(X, reset=True)
        n_frames = len(X)
        n_wanted = self.n_geometry * self.n_energy
        if n_frames < n_wanted:
            raise InputError(
                f"{n_frames} frames are too few for {self.n_geometry} x "
                f"{self.n_energy} = {n_wanted} clusters"
            )
        rng = check_random_state(self.random_state)
        start = time.perf_counter()
        self.reduction_ = None
        if self.reduce is not None:
            from .descriptors import Reduction

            seed = rng.randint(np.iinfo(np.int32).max)
            self.reduction_ = Reduction.fit(
                X, self.reduce, self.n_components, 2000, seed
            )
            X = self.reduction_.transform(X)

        if self.subset_size is None or n_frames <= self.subset_size:
            subset = np.arange(n_frames)
        else:
            subset = np.sort(rng.choice(n_frames, self.subset_size, replace=False))
        self._check_distinct(X, subset)
        ward = AgglomerativeClustering(n_clusters=self.n_geometry, linkage="ward")
        self.subset_indices_ = subset
        self.subset_descriptors_ = X[subset].copy()
        self.subset_labels_ = ward.fit_predict(self.subset_descriptors_)
        t_ward = time.perf_counter()

        geometry = np.empty(n_frames, dtype=int)
        geometry[subset] = self.subset_labels_
        rest = np.setdiff1d(np.arange(n_frames), subset, assume_unique=True)
        if len(rest):
            geometry[rest] = self._assign_geometry(X[rest])[0]
        t_assign = time.perf_counter()

        seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_geometry)
        energy = np.empty(n_frames, dtype=int)
        members = [np.flatnonzero(geometry == g) for g in range(self.n_geometry)]

        def levels(g: int):
            return _energy_levels(
                energies[members[g]], self.n_energy, self.n_init, seeds[g]
            )

        # KMeans on 1-D energies is faster on one OpenMP thread (2 threads took
        # 2x the wall time on a quiet 2-core machine, 3-9x on a busy one, with
        # the same labels): the geometry clusters' KMeans run side by side instead
        with threadpool_limits(1, user_api="openmp"):
            found = thread_map(levels, range(self.n_geometry))
        self.energy_centers_ = []
        for g, (level, centers) in enumerate(found):
            energy[members[g]] = level
            self.energy_centers_.append(centers)
        sizes = [len(c) for c in self.energy_centers_]
        self.cluster_offsets_ = np.concatenate([[0], np.cumsum(sizes)])
        self.n_clusters_ = int(self.cluster_offsets_[-1])
        if self.n_clusters_ < n_wanted:
            logger.warning(
                "%d clusters instead of %d: some geometry clusters hold fewer than "
                "%d distinct energies",
                self.n_clusters_,
                n_wanted,
                self.n_energy,
            )
        self.geometry_labels_ = geometry
        self.energy_labels_ = energy
        self.labels_ = self.cluster_offsets_[geometry] + energy
        self._members()  # cached now, so that predict leaves the model unchanged
        logger.info(
            "clustered %d frames into %d clusters: Ward on %d frames %.2f s, "
            "assignment %.2f s, KMeans %.2f s",
            n_frames,
            self.n_clusters_,
            len(subset),
            t_ward - start,
            t_assign - t_ward,
            time.perf_counter() - t_assign,
        )
        return self

    def _check_distinct(self, X, subset) -> None:
        """Refuse to split fewer distinct geometries than ``n_geometry`` (Ward would
        put all copies in one cluster and single frames in the others)."""
        n_distinct = count_distinct(X[subset])
        if n_distinct >= self.n_geometry:
            return
        where = (
            f"{len(subset)} frames"
            if len(subset) == len(X)
            else f"the Ward subset of {len(subset)} of {len(X)} frames"
        )
        raise InputError(
            f"{where} hold only {n_distinct} distinct geometries, fewer than "
            f"n_geometry {self.n_geometry}: lower n_geometry or remove repeated frames"
        )

    def _check_params(self) -> None:
        """Raise InputError for a hyperparameter outside its allowed values."""
        for name in ("n_geometry", "n_energy", "n_init", "chunk_size", "n_components"):
            check_positive_int(name, getattr(self, name))
        if self.subset_size is not None:
            check_positive_int("subset_size", self.subset_size)
            if self.subset_size < self.n_geometry:
                raise InputError(
                    f"subset_size {self.subset_size} is smaller than n_geometry "
                    f"{self.n_geometry}"
                )
        _check_assign_rule(self.assign)
        check_choice("descriptor", self.descriptor, DESCRIPTORS)
        if self.reduce is not None:
            check_choice("reduce", self.reduce, REDUCTIONS)

    def _split(self, X, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``X`` (M, D + 1); return its descriptor (M, D) and energies.

        ``reset`` (fit) records ``n_features_in_``; otherwise ``X`` must have
        that many columns. Errors are InputError, scikit-learn's message in one
        line.
        """
        try:
            X = validate_data(
                self,
                X,
                reset=reset,
                dtype=np.float64,
                ensure_min_samples=2 if reset else 1,
                ensure_min_features=2 if reset else 1,
            )
        except ValueError as exc:
            raise InputError(" ".join(str(exc).split())) from exc
        return X[:, :-1], X[:, -1]

    # -- using a fitted model --------------------------------------------------
    def predict(self, X, return_distance: bool = False):
        """Cluster of new frames: assignment rule on geometry, nearest energy level.

        Frames of the Ward subset may be given a different geometry cluster here
        than the one Ward gave them (the assignment rule is not Ward's linkage).

        Parameters
        ----------
        X : array-like, shape (M, D + 1)
            Descriptor columns, then the energy in eV (:func:`cluster_features`).
        return_distance : bool
            Also return each frame's descriptor distance to the nearest frame of
            the Ward subset (see :meth:`domain_threshold`).

        Returns
        -------
        labels : ndarray, shape (M,)
        distance : ndarray, shape (M,), only with ``return_distance``
        """
        check_is_fitted(self)
        X, energies = self._split(X, reset=False)
        if getattr(self, "reduction_", None) is not None:
            X = self.reduction_.transform(X)
        geometry, nearest = self._assign_geometry(X)
        # the nearest energy centre of each frame's geometry cluster (missing
        # levels of a cluster with fewer distinct energies are infinitely far)
        distance = np.abs(energies[:, None] - self._energy_table()[geometry])
        energy = distance.argmin(axis=1)
        labels = self.cluster_offsets_[geometry] + energy
        return (labels, nearest) if return_distance else labels

    def _energy_table(self) -> np.ndarray:
        """``energy_centers_`` as one (n_geometry, n_energy) array, inf-padded."""
        width = max(len(c) for c in self.energy_centers_)
        table = np.full((len(self.energy_centers_), width), np.inf)
        for g, centers in enumerate(self.energy_centers_):
            table[g, : len(centers)] = centers
        return table

    def describe(self, positions) -> np.ndarray:
        """The descriptor this model clusters, for positions (M, N, 3) in Å."""
        from .descriptors import pairwise_distances

        return pairwise_distances(positions, kind=self.descriptor)

    def domain_threshold(self, percentile: float = 99.5) -> float:
        """Nearest-neighbour distance beyond which a frame is outside the data.

        The ``percentile`` of the Ward subset's own leave-one-out nearest-neighbour
        distances in descriptor space. New frames of the same distribution fall
        below it at that rate; a frame farther from every subset frame lies outside
        every cluster seen in the data.

        Neighbours in a trajectory are the next MD frames, so this threshold
        measures time correlation and flags too many new MD frames: a model saved
        with its dataset keeps a calibrated :class:`~ase_flatten.domain.
        ApplicabilityDomain` instead; :meth:`ase_flatten.models.SavedModel.
        locate` falls back on this one for models saved with neither (and
        models saved before ``domain.npz`` existed).
        """
        check_is_fitted(self, "subset_labels_")
        S = self.subset_descriptors_
        sq = np.einsum("ij,ij->i", S, S)
        nearest = np.empty(len(S))
        for start in range(0, len(S), self.chunk_size):
            d = sq[start : start + self.chunk_size, None] + sq[None, :]
            d -= 2.0 * S[start : start + self.chunk_size] @ S.T
            rows = np.arange(len(d))
            d[rows, rows + start] = np.inf
            nearest[start : start + len(d)] = np.sqrt(np.maximum(d.min(axis=1), 0))
        return float(np.percentile(nearest, percentile))

    def _members(self) -> _Members:
        """The Ward subset prepared for the assignment step.

        Cached: a calculator assigns one structure per MD step.
        """
        key = id(self.subset_descriptors_), id(self.subset_labels_)
        cache = getattr(self, "_members_cache", None)
        if cache is None or cache[0] != key:
            cache = (key, _Members(self.subset_descriptors_, self.subset_labels_))
            self._members_cache = cache
        return cache[1]

    def _assign_geometry(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Geometry cluster of each frame and its distance to the nearest member.

        Blocks of ``chunk_size`` frames (see :func:`_assign_block`), spread over
        as many threads as BLAS may use; each thread's BLAS then runs on one.
        """
        _check_assign_rule(self.assign)
        labels = np.empty(len(X), dtype=int)
        nearest = np.empty(len(X))
        members = self._members()
        blocks = [
            slice(start, start + self.chunk_size)
            for start in range(0, len(X), self.chunk_size)
        ]

        def assign(block: slice) -> None:
            labels[block], nearest[block] = _assign_block(
                X[block], members, self.assign
            )

        thread_map(assign, blocks)
        return labels, nearest

    # -- persistence -----------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Learned state and hyperparameters as plain arrays (for ``np.savez``)."""
        check_is_fitted(self, "labels_")
        centers = np.full((self.n_geometry, self.n_energy), np.nan)
        for g, c in enumerate(self.energy_centers_):
            centers[g, : len(c)] = c
        params = {k: np.asarray(-1 if v is None else v) for k, v in self._params()}
        return {
            **{f"param_{k}": v for k, v in params.items()},
            "n_features_in": np.asarray(self.n_features_in_),
            "subset_indices": self.subset_indices_,
            "subset_descriptors": self.subset_descriptors_,
            "subset_labels": self.subset_labels_,
            "energy_centers": centers,
            "cluster_offsets": self.cluster_offsets_,
            **{
                f"reduction_{k}": v
                for k, v in (self.reduction_.arrays if self.reduction_ else {}).items()
            },
        }

    def _params(self):
        keys = (
            "n_geometry",
            "n_energy",
            "subset_size",
            "assign",
            "n_init",
            "descriptor",
            "n_components",
        )
        for key in keys:
            yield key, getattr(self, key)

    @classmethod
    def from_state_arrays(cls, arrays) -> TwoStageClustering:
        """Rebuild a fitted model (without ``labels_`` of the training frames)."""
        params = {}
        for key in ("n_geometry", "n_energy", "subset_size", "n_init"):
            value = int(arrays[f"param_{key}"])
            params[key] = None if value == -1 else value
        params["assign"] = str(arrays["param_assign"])
        if "param_descriptor" in arrays:
            params["descriptor"] = str(arrays["param_descriptor"])
        reduction = {
            k[len("reduction_") :]: v
            for k, v in arrays.items()
            if k.startswith("reduction_")
        }
        if reduction:
            from .descriptors import Reduction

            params["reduce"] = str(reduction["method"])
            params["n_components"] = int(arrays["param_n_components"])
        model = cls(**params)
        model.subset_indices_ = np.asarray(arrays["subset_indices"])
        model.subset_descriptors_ = np.asarray(arrays["subset_descriptors"])
        model.subset_labels_ = np.asarray(arrays["subset_labels"])
        model.cluster_offsets_ = np.asarray(arrays["cluster_offsets"])
        model.n_clusters_ = int(model.cluster_offsets_[-1])
        centers = np.asarray(arrays["energy_centers"])
        model.energy_centers_ = [row[np.isfinite(row)] for row in centers]
        model.labels_ = np.asarray(arrays["labels"]) if "labels" in arrays else None
        model.reduction_ = Reduction(reduction) if reduction else None
        model.n_features_in_ = _n_features_in(arrays, model.reduction_)
        model._members()
        return model


# Frames whose two best geometry scores (average or maximum distances, Å) lie
# closer than this in float32 are decided again in float64, so the labels are
# those of float64 arithmetic: float32 changed the scores by < 4e-6 Å on the four
# shared datasets, and no label on them or on 10^6 frames (BENCHMARKS.md).
TIE_TOLERANCE = 1e-4


class _Members:
    """The Ward subset, sorted by cluster, in the forms the assignment uses.

    The assignment compares every frame with every subset member (10^6 x 5,000
    distances for a large dataset): the squared distances of a block of frames
    are one float32 matrix product (``|x|^2 + |y|^2 - 2 x.y`` on centred
    descriptors), the average Euclidean distance per cluster a second one.

    Attributes
    ----------
    descriptors : ndarray, shape (S, D)
        Subset descriptors sorted by geometry cluster (float64).
    center : ndarray, shape (D,)
        Their mean; frames and members are centred on it before the float32
        products (smaller norms, smaller rounding errors).
    augmented : ndarray, shape (D + 2, S), float32
        Rows ``-2 y``, ``1`` and ``|y|^2`` of the centred members ``y``, so that
        ``[x, |x|^2, 1] @ augmented`` is every squared distance ``|x - y|^2``.
    weights : ndarray, shape (S, G), float32
        ``1 / n_g`` where member ``j`` is in cluster ``g``, else 0, so that
        ``distances @ weights`` is the average distance to each cluster.
    starts : ndarray, shape (G,)
        First member of each cluster in ``descriptors``.
    """

    def __init__(self, descriptors, labels):
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        counts = np.bincount(labels)
        self.descriptors = np.ascontiguousarray(descriptors[order], dtype=float)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.center = self.descriptors.mean(axis=0)
        y = self.descriptors - self.center
        augmented = np.vstack(
            [-2.0 * y.T, np.ones(len(y)), np.einsum("ij,ij->i", y, y)]
        )
        self.augmented = np.ascontiguousarray(augmented, dtype=np.float32)
        weights = np.zeros((len(y), len(counts)), dtype=np.float32)
        weights[np.arange(len(y)), sorted_labels] = 1.0 / counts[sorted_labels]
        self.weights = weights


def _assign_block(block, members: _Members, rule: str):
    """Assign frames to geometry clusters: float32 products, float64 near ties.

    Parameters
    ----------
    block : ndarray, shape (B, D)
        Descriptors (float64).
    members : _Members
        The prepared Ward subset.
    rule : {"average", "max"}
        Smallest average or smallest maximum Euclidean distance to a cluster's
        members.

    Returns
    -------
    labels : ndarray, shape (B,)
        Geometry cluster of each frame.
    nearest : ndarray, shape (B,)
        Distance (Å, float64) to the member nearest in float32.
    """
    x = (block - members.center).astype(np.float32)
    a = np.empty((len(x), x.shape[1] + 2), dtype=np.float32)
    a[:, :-2] = x
    a[:, -2] = np.einsum("ij,ij->i", x, x)
    a[:, -1] = 1.0
    d = a @ members.augmented  # squared distances, (B, S)
    np.maximum(d, 0.0, out=d)
    closest = d.argmin(axis=1)
    if rule == "average":
        np.sqrt(d, out=d)
        scores = d @ members.weights
    else:  # the largest squared distance is the largest distance
        scores = np.sqrt(np.maximum.reduceat(d, members.starts, axis=1))
    labels = scores.argmin(axis=1)
    if scores.shape[1] > 1:
        two_best = np.partition(scores, 1, axis=1)[:, :2]
        unsure = np.flatnonzero(two_best[:, 1] - two_best[:, 0] < TIE_TOLERANCE)
        if len(unsure):
            labels[unsure] = _exact_scores(block[unsure], members, rule).argmin(axis=1)
    nearest = np.linalg.norm(block - members.descriptors[closest], axis=1)
    return labels, nearest


def _exact_scores(block, members: _Members, rule: str) -> np.ndarray:
    """Average or maximum distance (B, G) of frames to each cluster, in float64."""
    x = block - members.center
    y = members.descriptors - members.center
    d = np.einsum("ij,ij->i", x, x)[:, None] + np.einsum("ij,ij->i", y, y)[None, :]
    d -= 2.0 * x @ y.T
    d = np.sqrt(np.maximum(d, 0.0))
    if rule == "average":
        counts = np.diff(np.append(members.starts, len(y)))
        return np.add.reduceat(d, members.starts, axis=1) / counts
    return np.maximum.reduceat(d, members.starts, axis=1)


def _check_assign_rule(rule: str) -> None:
    check_choice("assign rule", rule, ASSIGN_RULES)


def _n_features_in(arrays, reduction) -> int:
    """Columns of ``X`` a saved model takes (files before it was recorded too)."""
    if "n_features_in" in arrays:
        return int(arrays["n_features_in"])
    if reduction is None:
        width = arrays["subset_descriptors"].shape[1]
    elif reduction.method == "pca":
        width = reduction.arrays["mean"].shape[0]
    else:
        width = reduction.arrays["X_fit"].shape[1]
    return int(width) + 1


def count_distinct(X, decimals: int = 6) -> int:
    """Distinct rows of descriptor ``X`` (M, D), equal when they agree to
    ``decimals`` places (1e-6 Å for distances)."""
    return len(np.unique(np.round(np.asarray(X, dtype=float), decimals), axis=0))


def _energy_levels(energies, n_levels, n_init, seed):
    """KMeans on 1-D energies; levels renumbered from the lowest centre up."""
    k = min(n_levels, len(np.unique(energies)))
    if k == 1:  # one level: nothing to split (the fine re-clustering of the loop)
        return np.zeros(len(energies), dtype=int), np.array([energies.mean()])
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    km.fit(energies[:, None])
    centers = km.cluster_centers_.ravel()
    order = np.argsort(centers)
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(k)
    return rank[km.labels_], centers[order]


def save_clusters(path: str | os.PathLike, model: TwoStageClustering, **meta) -> None:
    """Write labels, sub-labels, the fitted model and ``meta`` to an npz, atomically.

    Keys: ``labels``, ``geometry_labels``, ``energy_labels`` (one int per frame),
    the model's state arrays, and every ``meta`` item (e.g. ``fingerprint``).
    """
    from .files import save_npz

    save_npz(
        path,
        labels=model.labels_,
        geometry_labels=model.geometry_labels_,
        energy_labels=model.energy_labels_,
        **model.state_arrays(),
        **{k: np.asarray(v) for k, v in meta.items()},
    )


def load_clusters(path: str | os.PathLike) -> tuple[TwoStageClustering, dict]:
    """Read a file written by :func:`save_clusters`.

    Returns
    -------
    model : TwoStageClustering
        Fitted model; ``labels_`` holds the per-frame labels of the file.
    arrays : dict
        Everything in the file.
    """
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        model = TwoStageClustering.from_state_arrays(arrays)
        model.geometry_labels_ = arrays["geometry_labels"]
        model.energy_labels_ = arrays["energy_labels"]
    except FILE_READ_ERRORS as exc:
        raise InputError(
            f"{path}: not a clusters file written by `ase-flatten cluster` "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return model, arrays


def labels_for(model: TwoStageClustering, arrays: dict, dataset, path) -> tuple:
    """Cluster labels of a dataset's frames from a saved clustering.

    The clustering's own labels when it was made from these very frames (same
    fingerprint); otherwise every frame is assigned with :meth:`TwoStageClustering.
    predict` (the assignment rule on geometry, the nearest energy level to the
    frame's reference energy), as ``ase-flatten predict`` and the calculator do.

    Parameters
    ----------
    model, arrays
        What :func:`load_clusters` returned for ``path``.
    dataset : Dataset
    path : path
        The clusters file, for messages.

    Returns
    -------
    labels : ndarray, shape (len(dataset),)
    assigned : bool
        Whether the frames were assigned (not the clustering's own frames).

    Raises
    ------
    InputError
        The clustering was made from another molecule or atom count.
    """
    from ase import Atoms

    numbers = arrays.get("numbers")
    if numbers is not None and not np.array_equal(numbers, dataset.numbers):
        raise InputError(
            f"{path}: a clustering of {Atoms(numbers=numbers).get_chemical_formula()}"
            f" ({len(numbers)} atoms), but {dataset.source} holds {dataset.formula}"
            " (or another atom order)"
        )
    n_pairs = dataset.n_atoms * (dataset.n_atoms - 1) // 2
    if model.n_features_in_ - 1 != n_pairs:
        raise InputError(
            f"{path}: a clustering of another molecule ({model.n_features_in_ - 1} "
            f"atom pairs), but {dataset.source} holds {dataset.formula} ({n_pairs})"
        )
    labels = arrays.get("labels")
    fingerprint = str(arrays.get("fingerprint", ""))
    if (
        labels is not None
        and len(labels) == len(dataset)
        and fingerprint == dataset.fingerprint()
    ):
        return np.asarray(labels), False
    logger.info(
        "%s: made from other frames than %s; assigning its %d frames to the saved "
        "clusters",
        path,
        dataset.source,
        len(dataset),
    )
    X = cluster_features(model.describe(dataset.positions), dataset.energies)
    return model.predict(X), True


def cluster_dataset(dataset, descriptor: str = DESCRIPTOR, **params):
    """Describe a :class:`~ase_flatten.data.Dataset` and fit the two-stage clustering.

    Parameters
    ----------
    dataset : Dataset
        Frames to cluster (positions and energies are used).
    descriptor : {"distances", "inverse"}
        Pairwise distances (paper) or inverse distances.
    **params
        Passed to :class:`TwoStageClustering`.

    Returns
    -------
    TwoStageClustering
        Fitted; ``labels_`` holds one cluster per frame.
    """
    model = TwoStageClustering(descriptor=descriptor, **params)
    X = cluster_features(model.describe(dataset.positions), dataset.energies)
    try:
        return model.fit(X)
    except InputError as exc:
        raise InputError(f"{dataset.source}: {exc}") from exc
