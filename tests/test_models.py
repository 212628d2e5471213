import json

import numpy as np
import pytest

from ase_flatten.backends import make_backend
from ase_flatten.clustering import cluster_dataset
from ase_flatten.domain import ApplicabilityDomain
from ase_flatten.errors import cluster_errors
from ase_flatten.exceptions import InputError
from ase_flatten.models import load_model, save_model

TRAIN = np.arange(0, 150, 6)


@pytest.fixture(scope="module")
def backend(xtb_dataset):
    return make_backend("sgdml", sigma=20).fit(xtb_dataset, TRAIN)


def test_roundtrip_with_provenance(tmp_path, backend, xtb_dataset):
    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=2)
    energies, forces = backend.predict(xtb_dataset)
    errors = cluster_errors(xtb_dataset, energies, forces, clusters.labels_)
    path = save_model(
        tmp_path / "m",
        backend,
        TRAIN,
        xtb_dataset,
        clusters=clusters,
        cluster_errors=errors,
        strategy="random",
    )
    saved = load_model(path)
    assert saved.meta["backend"] == "sgdml" and saved.meta["n_train"] == len(TRAIN)
    assert saved.meta["dataset_fingerprint"] == xtb_dataset.fingerprint()
    assert saved.meta["strategy"] == "random"
    np.testing.assert_array_equal(saved.train_indices, TRAIN)
    np.testing.assert_array_equal(np.load(path / "train_indices.npy"), TRAIN)
    np.testing.assert_allclose(saved.cluster_force_rmse, errors.force_rmse)
    np.testing.assert_array_equal(
        saved.clusters.predict(*_describe(xtb_dataset)),
        clusters.predict(*_describe(xtb_dataset)),
    )
    # the calibrated domain travels with the model (domain.npz)
    domain = ApplicabilityDomain().fit(xtb_dataset.numbers, xtb_dataset.positions)
    assert saved.domain_threshold == pytest.approx(domain.threshold_)
    assert saved.meta["domain"]["threshold"] == pytest.approx(domain.threshold_)
    np.testing.assert_allclose(
        saved.domain.distance(xtb_dataset.positions[:5]), np.zeros(5), atol=1e-6
    )
    np.testing.assert_array_equal(saved.backend.predict(xtb_dataset)[1], forces)
    assert load_model(path / "model.json").meta == saved.meta


def _describe(dataset):
    from ase_flatten.descriptors import pairwise_distances

    return pairwise_distances(dataset.positions), dataset.energies


def test_never_overwrites_silently(tmp_path, backend, xtb_dataset):
    path = save_model(tmp_path / "m", backend, TRAIN, xtb_dataset)
    stamp = (path / "model.json").read_text()
    with pytest.raises(InputError, match="m: holds a model already"):
        save_model(path, backend, TRAIN[:5], xtb_dataset)
    assert (path / "model.json").read_text() == stamp
    save_model(path, backend, TRAIN[:5], xtb_dataset, overwrite=True)
    assert load_model(path).meta["n_train"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no leftovers
    (path / "history.json").write_text("{}")  # a run's own files stay
    save_model(path, backend, TRAIN, xtb_dataset, overwrite=True)
    assert (path / "history.json").exists() and load_model(path).meta["n_train"] == 25


def test_unreadable_models(tmp_path, backend, xtb_dataset):
    with pytest.raises(InputError, match="nothere: no such model directory"):
        load_model(tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: not an ase-flatten model directory"):
        load_model(tmp_path / "empty")
    path = save_model(tmp_path / "m", backend, TRAIN, xtb_dataset)
    meta = json.loads((path / "model.json").read_text())
    for change, message in [
        ({"format": "other"}, "not an ase-flatten model file"),
        ({"backend": "nequip"}, "unknown backend 'nequip'"),
        ({"format_version": 99}, "written by a newer ase-flatten"),
    ]:
        (path / "model.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(InputError, match=message):
            load_model(path)
    (path / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="model.json: not an ase-flatten model file"):
        load_model(path)
    (path / "model.json").write_text(json.dumps(meta))
    (path / "model" / "sgdml_model.npz").write_text("junk")
    with pytest.raises(InputError, match="cannot load sGDML model"):
        load_model(path)
