import json
import os
import re
import stat

import numpy as np
import pytest

from ase_flatten.backends import make_backend
from ase_flatten.clustering import cluster_dataset
from ase_flatten.domain import ApplicabilityDomain
from ase_flatten.error_analysis import cluster_errors
from ase_flatten.exceptions import InputError
from ase_flatten.models import load_indices, load_model, save_model

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
    assert saved.validation_indices.size == 0  # sigma given: no validation frames
    np.testing.assert_allclose(saved.cluster_force_rmse, errors.force_rmse)
    assert saved.overall_force_rmse == pytest.approx(errors.overall["force_rmse"])
    np.testing.assert_array_equal(
        saved.clusters.predict(_describe(xtb_dataset)),
        clusters.predict(_describe(xtb_dataset)),
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
    from ase_flatten.clustering import cluster_features
    from ase_flatten.descriptors import pairwise_distances

    return cluster_features(pairwise_distances(dataset.positions), dataset.energies)


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


def test_damaged_model_files_are_one_input_error_naming_the_file(
    tmp_path, backend, xtb_dataset
):
    import shutil

    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=2)
    errors = cluster_errors(
        xtb_dataset, *backend.predict(xtb_dataset), clusters.labels_
    )
    good = save_model(
        tmp_path / "good",
        backend,
        TRAIN,
        xtb_dataset,
        clusters=clusters,
        cluster_errors=errors,
    )
    indices = (good / "train_indices.npy").read_bytes()
    copies = iter(range(100))

    def damage(name, content):
        path = tmp_path / f"damaged{next(copies)}"
        shutil.copytree(good, path)
        target = path / name
        if content is None:
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        else:
            target.write_bytes(content)
        return path

    cases = [
        ("model.json", b"", "model.json: not an ase-flatten model file"),
        ("model.json", b"[1, 2]", "model.json: not an ase-flatten model file (a JSON"),
        ("model.json", b'{"format": "ase-flatten-model"}', "(no 'backend')"),
        ("model", None, "model: missing (the sgdml model's own files)"),
        ("train_indices.npy", None, "train_indices.npy: missing (the training"),
        ("train_indices.npy", indices[:-20], "train_indices.npy: damaged"),
        ("train_indices.npy", b"junk", "train_indices.npy: damaged"),
        ("cluster_errors.json", b"{broken", "cluster_errors.json: damaged"),
        ("cluster_errors.json", b"[]", "cluster_errors.json: damaged"),
        ("cluster_errors.json", b'{"force_rmse": "x"}', "cluster_errors.json"),
        ("clusters.npz", b"junk", "clusters.npz: not a clusters file"),
    ]
    for name, content, message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            load_model(damage(name, content))
    meta = json.loads((good / "model.json").read_text())
    for change, message in [
        ({"numbers": "CCO"}, "numbers is not a list"),
        ({"numbers": [6, 999]}, "numbers are not atomic numbers"),
        ({"params": [1]}, "params is not a dict"),
        ({"format_version": "1"}, "format_version '1'"),
    ]:
        path = damage("model.json", json.dumps({**meta, **change}).encode())
        with pytest.raises(InputError, match=re.escape(message)):
            load_model(path)
    np.save(tmp_path / "floats.npy", np.array([0.5, 1.5]))
    with pytest.raises(InputError, match="floats.npy: not a list of frame indices"):
        load_indices(tmp_path / "floats.npy")
    np.testing.assert_array_equal(load_indices(good / "train_indices.npy"), TRAIN)


def test_save_model_follows_the_umask(tmp_path, backend, xtb_dataset):
    old = os.umask(0o022)
    try:
        path = save_model(tmp_path / "m", backend, TRAIN, xtb_dataset)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert stat.S_IMODE((path / "model.json").stat().st_mode) == 0o644
