"""TwoStageClustering as a scikit-learn estimator: check_estimator, Pipeline,
clone, GridSearchCV, and the labels it gave before it took one matrix."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.metrics import silhouette_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from ase_flatten.clustering import (
    TwoStageClustering,
    cluster_features,
    load_clusters,
    save_clusters,
)
from ase_flatten.descriptors import pairwise_distances
from ase_flatten.exceptions import InputError

#: Descriptor, energies and labels of the 150-frame ethanol test fixture, recorded
#: with the code before TwoStageClustering took one matrix (fit(X, energies)).
BEFORE = Path(__file__).parent / "data" / "clustering_before_estimator_api.npz"
BEFORE_PARAMS = {
    "paper": {},
    "g4e5_sub60": {"n_geometry": 4, "n_energy": 5, "subset_size": 60},
    "g3e3_sub80_max": {
        "n_geometry": 3,
        "n_energy": 3,
        "subset_size": 80,
        "assign": "max",
    },
    "pca_g3e2": {
        "n_geometry": 3,
        "n_energy": 2,
        "reduce": "pca",
        "n_components": 4,
        "subset_size": 100,
    },
}


# scikit-learn's checks use 10-30 random samples: the paper's 10 x 5 = 50 clusters
# need at least 50 frames, so the checks run on small cluster counts. No check is
# expected to fail.
@pytest.mark.slow
@parametrize_with_checks(
    [
        TwoStageClustering(n_geometry=2, n_energy=2),
        TwoStageClustering(n_geometry=2, n_energy=2, subset_size=8, assign="max"),
        # scikit-learn's checks pass two columns: a 1-d descriptor and the energy;
        # more components than the descriptor has are refused
        TwoStageClustering(n_geometry=2, n_energy=2, reduce="pca", n_components=1),
    ]
)
def test_check_estimator(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def before():
    with np.load(BEFORE) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.slow
@pytest.mark.parametrize("name", BEFORE_PARAMS)
def test_labels_are_those_of_the_two_argument_api(before, name):
    X = cluster_features(before["X"], before["E"])
    model = TwoStageClustering(**BEFORE_PARAMS[name]).fit(X)
    np.testing.assert_array_equal(model.subset_indices_, before[f"{name}_subset"])
    np.testing.assert_array_equal(model.labels_, before[f"{name}_labels"])
    np.testing.assert_array_equal(model.predict(X), before[f"{name}_predict"])


def test_cluster_features_appends_the_energy_unchanged():
    descriptor = np.arange(6.0).reshape(3, 2)
    X = cluster_features(descriptor, [-1.5, 2.25, 1e-9])
    np.testing.assert_array_equal(X, [[0, 1, -1.5], [2, 3, 2.25], [4, 5, 1e-9]])
    with pytest.raises(InputError, match="3 descriptor rows but 2 energies"):
        cluster_features(descriptor, [1.0, 2.0])
    with pytest.raises(InputError, match="descriptor must be 2-D"):
        cluster_features(np.arange(3.0), [1.0, 2.0, 3.0])


@pytest.fixture(scope="module")
def features(xtb_dataset):
    return cluster_features(
        pairwise_distances(xtb_dataset.positions), xtb_dataset.energies
    )


@pytest.mark.slow
def test_n_features_in_and_wrong_width(features):
    model = TwoStageClustering(n_geometry=3, n_energy=2).fit(features)
    assert model.n_features_in_ == 36 + 1  # 9 atoms: 36 distances, then energy
    with pytest.raises(InputError, match="X has 36 features, but TwoStageClustering"):
        model.predict(features[:, :-1])


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_geometry": 0}, "n_geometry must be a positive integer, got 0"),
        ({"n_energy": 2.5}, "n_energy must be a positive integer, got 2.5"),
        ({"subset_size": 2, "n_geometry": 3}, "subset_size 2 is smaller than"),
        ({"descriptor": "coulomb"}, "unknown descriptor 'coulomb'"),
        ({"reduce": "tsne"}, "unknown reduce 'tsne'; choose one of pca, kpca"),
    ],
)
def test_hyperparameters_are_checked_in_fit(features, params, message):
    model = TwoStageClustering(**params)  # stored verbatim, no check yet
    assert model.get_params()[next(iter(params))] == next(iter(params.values()))
    with pytest.raises(InputError, match=message):
        model.fit(features)


@pytest.mark.slow
def test_clone_gives_an_unfitted_copy(features):
    model = TwoStageClustering(n_geometry=3, n_energy=2, random_state=4).fit(features)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        copy.predict(features)
    np.testing.assert_array_equal(copy.fit(features).labels_, model.labels_)


@pytest.mark.slow
def test_pipeline_reduces_the_descriptor_and_keeps_the_energy(features):
    """PCA of the distances in a Pipeline, the energy passed through last."""
    reduce = ColumnTransformer(
        [("pca", PCA(4, random_state=0), slice(0, -1)), ("energy", "passthrough", [-1])]
    )
    pipeline = make_pipeline(reduce, TwoStageClustering(n_geometry=3, n_energy=2))
    labels = pipeline.fit_predict(features)

    reduced = PCA(4, random_state=0).fit_transform(features[:, :-1])
    manual = TwoStageClustering(n_geometry=3, n_energy=2)
    manual_features = cluster_features(reduced, features[:, -1])
    np.testing.assert_array_equal(labels, manual.fit(manual_features).labels_)
    np.testing.assert_array_equal(
        pipeline.predict(features), manual.predict(manual_features)
    )
    assert pipeline[-1].n_features_in_ == 5


def _silhouette(estimator, X, y=None):
    """Silhouette of the geometry clusters of held-out frames (descriptor only)."""
    return silhouette_score(X[:, :-1], estimator.predict(X))


def test_grid_search_picks_the_best_scored_n_geometry(features):
    grid = {"n_geometry": [2, 3, 6]}
    folds = KFold(3, shuffle=True, random_state=0)
    base = TwoStageClustering(n_energy=1, subset_size=None)
    search = GridSearchCV(base, grid, scoring=_silhouette, cv=folds).fit(features)

    means = []
    for n in grid["n_geometry"]:
        scores = []
        for train, test in folds.split(features):
            model = clone(base).set_params(n_geometry=n).fit(features[train])
            scores.append(_silhouette(model, features[test]))
        means.append(np.mean(scores))
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], means)
    best = grid["n_geometry"][int(np.argmax(means))]
    assert search.best_params_ == {"n_geometry": best}
    assert search.best_estimator_.n_clusters_ == best  # refitted on every frame
    assert len(search.best_estimator_.labels_) == len(features)


@pytest.mark.slow
def test_files_without_n_features_in_still_load(tmp_path, features):
    """clusters.npz files written before n_features_in was recorded."""
    for params in ({}, {"reduce": "pca", "n_components": 3}, {"reduce": "kpca"}):
        model = TwoStageClustering(n_geometry=3, n_energy=2, **params).fit(features)
        save_clusters(tmp_path / "new.npz", model)
        with np.load(tmp_path / "new.npz") as npz:
            old = {k: npz[k] for k in npz.files if k != "n_features_in"}
        np.savez(tmp_path / "old.npz", **old)
        loaded, _ = load_clusters(tmp_path / "old.npz")
        assert loaded.n_features_in_ == 37
        np.testing.assert_array_equal(loaded.predict(features), model.predict(features))
