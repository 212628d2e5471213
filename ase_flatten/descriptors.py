"""Geometry descriptors: pairwise atomic distances (paper eq. 1-3).

Each frame becomes the vector of its N(N-1)/2 interatomic distances, in the order of
:func:`scipy.spatial.distance.pdist`; frames are compared by the Euclidean distance
between these vectors. Inverse distances weight close contacts more, as sGDML's
descriptor does.
"""

from __future__ import annotations

import numpy as np

from .exceptions import InputError
from .threads import thread_map

DESCRIPTORS = ("distances", "inverse")
_CHUNK = 65536  # frames per block: bounds the (chunk, P, 3) temporary


def pair_indices(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Atom index pairs (i < j) in :func:`scipy.spatial.distance.pdist` order."""
    return np.triu_indices(n_atoms, k=1)


def pairwise_distances(
    positions: np.ndarray, kind: str = "distances", dtype=np.float64
) -> np.ndarray:
    """Pairwise-distance descriptor of every frame.

    Equivalent to ``scipy.spatial.distance.pdist(frame)`` per frame, vectorised over
    frames (a Python loop over pdist costs ~5 µs per frame, too slow for 10^6).

    Parameters
    ----------
    positions : ndarray, shape (M, N, 3)
        Positions in Å.
    kind : {"distances", "inverse"}
        Distances in Å, or inverse distances in 1/Å.
    dtype : numpy dtype
        Output precision.

    Returns
    -------
    ndarray, shape (M, N(N-1)/2)
    """
    if kind not in DESCRIPTORS:
        raise InputError(
            f"unknown descriptor {kind!r}; choose one of {', '.join(DESCRIPTORS)}"
        )
    positions = np.asarray(positions)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise InputError(f"positions must have shape (M, N, 3), got {positions.shape}")

    i, j = pair_indices(positions.shape[1])
    out = np.empty((len(positions), len(i)), dtype=dtype)

    def block(start: int) -> None:  # blocks run side by side on the BLAS threads
        frames = positions[start : start + _CHUNK]
        diff = frames[:, i, :] - frames[:, j, :]
        dist = np.sqrt(np.einsum("mpk,mpk->mp", diff, diff))
        out[start : start + len(frames)] = 1.0 / dist if kind == "inverse" else dist

    thread_map(block, range(0, len(positions), _CHUNK))
    return out


REDUCTIONS = ("pca", "kpca")


class Reduction:
    """PCA or RBF kernel PCA of a descriptor, kept as plain arrays.

    The paper's clustering weakens for larger molecules (861 distances for 42
    atoms); reducing the descriptor first is its proposed remedy. Fitting uses
    scikit-learn (:class:`~sklearn.decomposition.PCA`,
    :class:`~sklearn.decomposition.KernelPCA` on at most ``fit_size`` random
    frames, as kernel PCA is O(n^2)); the fitted state is stored as arrays so a
    saved cluster model can reduce new structures without pickles.
    """

    def __init__(self, arrays: dict):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}

    @property
    def method(self) -> str:
        return str(self.arrays["method"])

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        method: str,
        n_components: int = 10,
        fit_size: int = 2000,
        random_state: int = 0,
    ) -> Reduction:
        """Fit ``method`` ("pca" or "kpca") with ``n_components`` on ``X``."""
        from sklearn.decomposition import PCA, KernelPCA

        if method not in REDUCTIONS:
            raise InputError(
                f"unknown reduction {method!r}; choose one of {', '.join(REDUCTIONS)}"
            )
        most = min(X.shape[1], len(X)) if method == "pca" else min(fit_size, len(X))
        if n_components > most:
            what = (
                f"PCA of {len(X)} frames of a {X.shape[1]}-dimensional descriptor"
                if method == "pca"
                else f"kernel PCA fitted on {min(fit_size, len(X))} frames"
            )
            raise InputError(
                f"n_components={n_components} (--components): {what} has at most "
                f"{most} components; choose {most} or fewer"
            )
        if method == "pca":
            pca = PCA(n_components=n_components, random_state=random_state).fit(X)
            return cls(
                {"method": method, "mean": pca.mean_, "components": pca.components_}
            )
        rng = np.random.default_rng(random_state)
        fit = X[np.sort(rng.choice(len(X), min(fit_size, len(X)), replace=False))]
        gamma = 1.0 / (2.0 * X.var(axis=0).sum())
        kpca = KernelPCA(n_components=n_components, kernel="rbf", gamma=gamma)
        kpca.fit(fit)
        keep = np.flatnonzero(kpca.eigenvalues_)
        alphas = np.zeros_like(kpca.eigenvectors_)
        alphas[:, keep] = kpca.eigenvectors_[:, keep] / np.sqrt(kpca.eigenvalues_[keep])
        return cls(
            {
                "method": method,
                "X_fit": kpca.X_fit_,
                "gamma": gamma,
                "alphas": alphas,
                "K_fit_rows": kpca._centerer.K_fit_rows_,
                "K_fit_all": kpca._centerer.K_fit_all_,
            }
        )

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Reduced descriptors of ``X`` (M, n_components)."""
        a = self.arrays
        if self.method == "pca":
            return (X - a["mean"]) @ a["components"].T
        from sklearn.metrics.pairwise import rbf_kernel

        out = np.empty((len(X), a["alphas"].shape[1]))
        for start in range(0, len(X), 4096):
            K = rbf_kernel(X[start : start + 4096], a["X_fit"], gamma=float(a["gamma"]))
            # the training-kernel centring of sklearn's KernelCenterer
            row_means = K.mean(axis=1, keepdims=True)
            K -= a["K_fit_rows"]
            K -= row_means
            K += a["K_fit_all"]
            out[start : start + len(K)] = K @ a["alphas"]
        return out
