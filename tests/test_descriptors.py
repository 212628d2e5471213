import numpy as np
import pytest
from scipy.spatial.distance import pdist

from ase_flatten import descriptors
from ase_flatten.descriptors import pairwise_distances
from ase_flatten.exceptions import InputError
from ase_flatten.threads import blas_threads


def positions(n_frames=7, n_atoms=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n_frames, n_atoms, 3))


def test_distances_equal_pdist_per_frame():
    pos = positions()
    X = pairwise_distances(pos)
    assert X.shape == (7, 15)
    for frame, row in zip(pos, X, strict=True):
        np.testing.assert_allclose(row, pdist(frame), rtol=1e-12)


def test_inverse_distances():
    pos = positions()
    np.testing.assert_allclose(
        pairwise_distances(pos, "inverse"), 1.0 / pairwise_distances(pos), rtol=1e-12
    )


def test_chunks_give_the_same_result(monkeypatch):
    pos = positions(n_frames=23)
    whole = pairwise_distances(pos)
    monkeypatch.setattr(descriptors, "_CHUNK", 5)
    np.testing.assert_array_equal(pairwise_distances(pos), whole)


def test_blocks_on_two_threads_give_the_same_result(monkeypatch):
    from threadpoolctl import threadpool_limits

    pos = positions(n_frames=41)
    whole = pairwise_distances(pos)
    monkeypatch.setattr(descriptors, "_CHUNK", 4)  # 11 blocks over 2 threads
    with threadpool_limits(2, user_api="blas"):
        assert blas_threads() == 2
        np.testing.assert_array_equal(pairwise_distances(pos), whole)
        np.testing.assert_array_equal(pairwise_distances(pos, "inverse"), 1.0 / whole)


def test_bad_arguments():
    with pytest.raises(InputError, match="unknown descriptor 'soap'"):
        pairwise_distances(positions(), "soap")
    with pytest.raises(InputError, match=r"shape \(M, N, 3\)"):
        pairwise_distances(np.zeros((3, 4)))


@pytest.mark.parametrize("method", ["pca", "kpca"])
def test_reduction_matches_scikit_learn(method):
    from sklearn.decomposition import PCA, KernelPCA

    from ase_flatten.descriptors import Reduction

    X = pairwise_distances(positions(n_frames=80, n_atoms=7))
    reduction = Reduction.fit(X, method, n_components=4, fit_size=1000)
    if method == "pca":
        reference = PCA(n_components=4, random_state=0).fit(X).transform(X)
    else:
        gamma = 1.0 / (2.0 * X.var(axis=0).sum())
        reference = KernelPCA(4, kernel="rbf", gamma=gamma).fit(X).transform(X)
    np.testing.assert_allclose(reduction.transform(X), reference, atol=1e-10)
    assert Reduction(reduction.arrays).transform(X[:3]).shape == (3, 4)
    with pytest.raises(InputError, match="unknown reduction 'umap'"):
        Reduction.fit(X, "umap")
