import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from ase_flatten.clustering import (
    TwoStageClustering,
    cluster_dataset,
    cluster_features,
    load_clusters,
    save_clusters,
)
from ase_flatten.descriptors import pairwise_distances
from ase_flatten.exceptions import InputError


@pytest.fixture(scope="module")
def xtb_X(xtb_dataset):
    return pairwise_distances(xtb_dataset.positions), xtb_dataset.energies


def blobs(n_per=60, n_blobs=4, dim=6, seed=0):
    """Well separated geometry blobs with random energies."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(n_blobs, dim))
    X = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres])
    truth = np.repeat(np.arange(n_blobs), n_per)
    return X, rng.normal(size=len(X)), truth


@pytest.mark.slow
def test_counts_and_label_layout(xtb_X):
    X, E = xtb_X
    model = TwoStageClustering(n_geometry=4, n_energy=5).fit(cluster_features(X, E))
    assert model.n_clusters_ == 20
    assert sorted(np.unique(model.labels_)) == list(range(20))
    np.testing.assert_array_equal(
        model.labels_,
        model.cluster_offsets_[model.geometry_labels_] + model.energy_labels_,
    )
    assert len(np.unique(model.geometry_labels_)) == 4


@pytest.mark.slow
def test_energy_levels_are_ordered_by_energy(xtb_X):
    X, E = xtb_X
    model = TwoStageClustering(n_geometry=3, n_energy=4).fit(cluster_features(X, E))
    for g in range(3):
        members = model.geometry_labels_ == g
        means = [E[members & (model.energy_labels_ == e)].mean() for e in range(4)]
        assert np.all(np.diff(means) > 0)
        # every frame sits at its nearest energy centre (1-D KMeans)
        centres = model.energy_centers_[g]
        nearest = np.abs(E[members, None] - centres[None]).argmin(axis=1)
        np.testing.assert_array_equal(nearest, model.energy_labels_[members])


@pytest.mark.slow
def test_deterministic_with_seed(xtb_X):
    X, E = xtb_X
    params = dict(n_geometry=4, n_energy=3, subset_size=60)
    a = TwoStageClustering(random_state=7, **params).fit(cluster_features(X, E))
    b = TwoStageClustering(random_state=7, **params).fit(cluster_features(X, E))
    c = TwoStageClustering(random_state=8, **params).fit(cluster_features(X, E))
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.subset_indices_, b.subset_indices_)
    assert not np.array_equal(a.subset_indices_, c.subset_indices_)


def test_full_ward_matches_scipy_ward(xtb_X):
    X, E = xtb_X
    model = TwoStageClustering(n_geometry=6, n_energy=1, subset_size=None).fit(
        cluster_features(X, E)
    )
    reference = fcluster(linkage(X, method="ward"), t=6, criterion="maxclust")
    assert adjusted_rand_score(reference, model.geometry_labels_) == 1.0
    large = TwoStageClustering(n_geometry=6, n_energy=1, subset_size=10_000).fit(
        cluster_features(X, E)
    )
    np.testing.assert_array_equal(large.geometry_labels_, model.geometry_labels_)


@pytest.mark.slow
@pytest.mark.parametrize("rule, reduce", [("average", np.mean), ("max", np.max)])
def test_assignment_follows_the_rule(xtb_X, rule, reduce):
    X, E = xtb_X
    model = TwoStageClustering(
        n_geometry=5, n_energy=2, subset_size=50, assign=rule, random_state=3
    ).fit(cluster_features(X, E))
    subset = model.subset_indices_
    rest = np.setdiff1d(np.arange(len(X)), subset)
    d = cdist(X[rest], X[subset])
    scores = np.stack(
        [reduce(d[:, model.subset_labels_ == g], axis=1) for g in range(5)], axis=1
    )
    np.testing.assert_array_equal(model.geometry_labels_[rest], scores.argmin(axis=1))
    np.testing.assert_array_equal(model.geometry_labels_[subset], model.subset_labels_)


def test_rules_differ_somewhere(xtb_X):
    X, E = xtb_X
    labels = {
        rule: TwoStageClustering(
            n_geometry=8, n_energy=1, subset_size=40, assign=rule, random_state=1
        )
        .fit(cluster_features(X, E))
        .geometry_labels_
        for rule in ("average", "max")
    }
    assert not np.array_equal(labels["average"], labels["max"])


@pytest.mark.slow
def test_subset_and_assign_recovers_full_ward_on_separated_blobs():
    X, E, truth = blobs()
    full = TwoStageClustering(n_geometry=4, n_energy=2, subset_size=None).fit(
        cluster_features(X, E)
    )
    sub = TwoStageClustering(n_geometry=4, n_energy=2, subset_size=30).fit(
        cluster_features(X, E)
    )
    assert len(sub.subset_indices_) == 30
    assert adjusted_rand_score(truth, full.geometry_labels_) == 1.0
    assert adjusted_rand_score(full.geometry_labels_, sub.geometry_labels_) == 1.0


def test_predict_reproduces_assigned_frames_and_roundtrips(tmp_path, xtb_X):
    X, E = xtb_X
    model = TwoStageClustering(n_geometry=4, n_energy=3, subset_size=80).fit(
        cluster_features(X, E)
    )
    rest = np.setdiff1d(np.arange(len(X)), model.subset_indices_)
    np.testing.assert_array_equal(
        model.predict(cluster_features(X[rest], E[rest])), model.labels_[rest]
    )
    save_clusters(tmp_path / "c.npz", model, fingerprint="abc")
    loaded, arrays = load_clusters(tmp_path / "c.npz")
    assert str(arrays["fingerprint"]) == "abc"
    assert loaded.get_params()["subset_size"] == 80
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    np.testing.assert_array_equal(
        loaded.predict(cluster_features(X, E)), model.predict(cluster_features(X, E))
    )


@pytest.mark.slow
def test_unlimited_subset_roundtrips(tmp_path, xtb_X):
    X, E = xtb_X
    model = TwoStageClustering(n_geometry=2, n_energy=2, subset_size=None).fit(
        cluster_features(X, E)
    )
    save_clusters(tmp_path / "c.npz", model)
    assert load_clusters(tmp_path / "c.npz")[0].subset_size is None


def test_too_few_frames_and_bad_parameters(xtb_dataset):
    X = np.random.default_rng(0).normal(size=(49, 3))
    with pytest.raises(InputError, match="49 frames are too few for 10 x 5 = 50"):
        TwoStageClustering().fit(cluster_features(X, np.zeros(49)))
    with pytest.raises(
        InputError, match=r"^C2H6O GFN2-xTB MD 500 K: 20 frames are too few"
    ):
        cluster_dataset(xtb_dataset.subset(range(20)))
    with pytest.raises(InputError, match="unknown assign rule 'min'"):
        TwoStageClustering(assign="min", n_geometry=2, n_energy=1).fit(
            cluster_features(X, np.zeros(49))
        )
    with pytest.raises(InputError, match="NaN"):
        TwoStageClustering(n_geometry=2, n_energy=1).fit(
            cluster_features(X, np.full(49, np.nan))
        )


def test_clusters_with_few_distinct_energies_shrink():
    X, _, _ = blobs(n_per=10, n_blobs=3)
    E = np.zeros(len(X))
    E[:5] = 1.0  # blob 0 has two distinct energies, the others one
    model = TwoStageClustering(n_geometry=3, n_energy=3).fit(cluster_features(X, E))
    assert model.n_clusters_ == 4
    assert sorted(np.unique(model.labels_)) == [0, 1, 2, 3]


def test_identical_frames_are_refused_not_split(xtb_dataset):
    same = xtb_dataset.subset(np.zeros(300, dtype=int))  # 300 copies of frame 0
    with pytest.raises(InputError) as info:
        cluster_dataset(same)
    assert str(info.value) == (
        "C2H6O GFN2-xTB MD 500 K: 300 frames hold only 1 distinct geometries, "
        "fewer than n_geometry 10: lower n_geometry or remove repeated frames"
    )
    # three geometries, each 100 times: 3 clusters of 100 frames, 4 refused
    X = pairwise_distances(xtb_dataset.positions[np.repeat([0, 50, 100], 100)])
    with pytest.raises(InputError, match="300 frames hold only 3 distinct"):
        TwoStageClustering(n_geometry=4, n_energy=1).fit(
            cluster_features(X, np.zeros(300))
        )
    model = TwoStageClustering(n_geometry=3, n_energy=1).fit(
        cluster_features(X, np.zeros(300))
    )
    assert sorted(np.bincount(model.geometry_labels_)) == [100, 100, 100]
    # Ward splits its subset: 6 distinct among 1000 frames, but a subset of 50
    # (seeded) holds one or two of the 5 rare ones
    frames = np.r_[np.zeros(995, dtype=int), 10, 20, 30, 40, 60]
    X = pairwise_distances(xtb_dataset.positions[frames])
    with pytest.raises(InputError, match="the Ward subset of 50 of 1000 frames hold"):
        TwoStageClustering(n_geometry=3, n_energy=1, subset_size=50).fit(
            cluster_features(X, np.zeros(1000))
        )


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(InputError, match="other.npz: not a clusters file"):
        load_clusters(tmp_path / "other.npz")
    with pytest.raises(InputError, match="none.npz: no such file"):
        load_clusters(tmp_path / "none.npz")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pca", "kpca"])
def test_reduced_descriptor_clusters_and_roundtrips(tmp_path, xtb_X, method):
    X, E = xtb_X
    model = TwoStageClustering(
        n_geometry=4, n_energy=2, subset_size=80, reduce=method, n_components=5
    ).fit(cluster_features(X, E))
    assert model.subset_descriptors_.shape[1] == 5  # clustered in the reduced space
    assert model.n_clusters_ == 8
    rest = np.setdiff1d(np.arange(len(X)), model.subset_indices_)
    np.testing.assert_array_equal(
        model.predict(cluster_features(X[rest], E[rest])), model.labels_[rest]
    )
    save_clusters(tmp_path / "c.npz", model)
    loaded, _ = load_clusters(tmp_path / "c.npz")
    assert loaded.reduce == method and loaded.n_components == 5
    np.testing.assert_array_equal(
        loaded.predict(cluster_features(X, E)), model.predict(cluster_features(X, E))
    )


@pytest.mark.parametrize("rule, reduce", [("average", np.mean), ("max", np.max)])
def test_float32_assignment_equals_float64_on_threads_and_near_ties(
    xtb_X, monkeypatch, rule, reduce
):
    """The assignment step (float32 products, near ties in float64, blocks over
    threads) gives the labels and nearest distances of plain float64 cdist."""
    from threadpoolctl import threadpool_limits

    from ase_flatten import clustering

    X, _ = xtb_X
    subset = np.arange(0, len(X), 3)
    model = TwoStageClustering(n_geometry=5, assign=rule, chunk_size=16)
    model.subset_descriptors_ = X[subset]
    model.subset_labels_ = np.arange(len(subset)) % 5  # overlapping clusters
    d = cdist(X, X[subset])
    scores = np.stack(
        [reduce(d[:, model.subset_labels_ == g], axis=1) for g in range(5)], axis=1
    )
    two_best = np.sort(scores, axis=1)[:, :2]
    assert np.diff(two_best, axis=1).min() < 1e-3  # close calls exist
    for tolerance in (0.0, clustering.TIE_TOLERANCE, np.inf):  # inf: all in float64
        monkeypatch.setattr(clustering, "TIE_TOLERANCE", tolerance)
        for threads in (1, 2):
            with threadpool_limits(threads, user_api="blas"):
                labels, nearest = model._assign_geometry(X)
            np.testing.assert_array_equal(labels, scores.argmin(axis=1))
            np.testing.assert_allclose(nearest, d.min(axis=1), atol=1e-6)
