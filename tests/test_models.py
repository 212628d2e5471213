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


# -- the error map: SavedModel.locate -------------------------------------------


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, backend, xtb_dataset):
    """A model saved with its clusters, errors and test split; frames to place.

    The probes are the data's frames, frames stretched by 40 % (far outside the
    data) and by 10 % (some outside), and frames with 0.08 Å noise.
    """
    from ase_flatten.selection.split import holdout_split

    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=3)
    test, _ = holdout_split(len(xtb_dataset), 0.2, 0)
    energies, forces = backend.predict(xtb_dataset, test)
    errors = cluster_errors(
        xtb_dataset.subset(test), energies, forces, clusters.labels_[test]
    )
    path = save_model(
        tmp_path_factory.mktemp("mapped") / "m",
        backend,
        TRAIN,
        xtb_dataset,
        clusters=clusters,
        cluster_errors=errors,
        test_indices=test,
    )
    rng = np.random.default_rng(0)
    positions = xtb_dataset.positions
    probes = np.concatenate(
        [
            positions,
            positions[:15] * 1.4,
            positions[15:30] * 1.1,
            positions[30:90] + rng.normal(0, 0.08, (60, 9, 3)),
        ]
    )
    return path, clusters, errors, test, probes


def _parts(saved, probes, energies):
    """What locate is made of, computed from the model's parts one by one."""
    from ase_flatten.clustering import cluster_features

    X = cluster_features(saved.clusters.describe(probes), energies)
    labels, ward = saved.clusters.predict(X, return_distance=True)
    rmse = np.full(len(labels), np.nan)
    if saved.cluster_force_rmse is not None:
        known = labels < len(saved.cluster_force_rmse)
        rmse[known] = saved.cluster_force_rmse[labels[known]]
    return labels, ward, rmse


def test_locate_is_its_parts(mapped, xtb_dataset):
    """Cluster, measured error, domain distance and flags, number for number."""
    path, clusters, errors, test, probes = mapped
    saved = load_model(path)
    energies = saved.backend.predict_positions(probes)[0]
    where = saved.locate(probes, energies)
    labels, _, rmse = _parts(saved, probes, energies)
    distance = saved.domain.distance(probes)
    np.testing.assert_array_equal(where.cluster, labels)
    np.testing.assert_array_equal(where.cluster_force_rmse, rmse)
    np.testing.assert_allclose(
        where.cluster_force_rmse, errors.force_rmse[labels], rtol=0, atol=0
    )
    np.testing.assert_array_equal(where.domain_distance, distance)
    np.testing.assert_array_equal(
        where.outside_domain, distance > saved.domain.threshold_
    )
    overall = errors.overall["force_rmse"]
    np.testing.assert_array_equal(where.high_error, rmse > 1.1 * overall)
    np.testing.assert_array_equal(where.risky, where.high_error | where.outside_domain)
    # the data itself is inside, stretched frames are not; some clusters are worse
    assert not where.outside_domain[:150].any()
    assert where.outside_domain[150:165].all()
    assert 0 < where.outside_domain[165:].sum() < len(probes) - 165
    assert 0 < where.high_error.sum() < len(probes)
    assert where.domain_distance[:150].max() < 1e-6
    # energies predicted inside; one structure; small blocks: the same numbers
    again = saved.locate(probes)
    for name in ("cluster", "domain_distance", "outside_domain", "high_error"):
        np.testing.assert_array_equal(getattr(again, name), getattr(where, name))
    one = saved.locate(probes[160], energies[160:161])
    assert one.row(0) == {key: getattr(where, key)[160].item() for key in one.REPORTED}
    assert type(one.row(0)["outside_domain"]) is bool
    stricter = saved.locate(probes, energies, high_error_factor=0.5)
    np.testing.assert_array_equal(stricter.high_error, rmse > 0.5 * overall)


def test_locate_in_blocks_and_edge_cases(mapped, monkeypatch):
    from ase_flatten import models

    path, _, _, _, probes = mapped
    saved = load_model(path)
    energies = saved.backend.predict_positions(probes)[0]
    whole = saved.locate(probes, energies)
    monkeypatch.setattr(models, "LOCATE_CHUNK", 7)
    blocks = saved.locate(probes, energies)
    for name in ("cluster", "cluster_force_rmse", "domain_distance", "high_error"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name))
    empty = saved.locate(np.zeros((0, 9, 3)), [])
    assert len(empty) == 0 and empty.outside_domain.dtype == bool
    with pytest.raises(InputError, match=r"shape \(M, 9, 3\) expected"):
        saved.locate(np.zeros((2, 3, 3)), [0.0, 0.0])
    with pytest.raises(InputError, match="3 structures but 2 energies"):
        saved.locate(probes[:3], energies[:2])
    saved.clusters = None
    with pytest.raises(InputError, match="saved without its data's cluster model"):
        saved.locate(probes[:3])


def test_locate_for_older_models(mapped, xtb_dataset):
    """Models saved before domain.npz, without cluster errors or their overall."""
    path, clusters, errors, _, probes = mapped
    saved = load_model(path)
    energies = saved.backend.predict_positions(probes)[0]
    labels, ward, rmse = _parts(saved, probes, energies)
    # no calibrated domain: the Ward subset's distance and the recorded threshold
    saved.domain, saved.domain_threshold = None, clusters.domain_threshold()
    where = saved.locate(probes, energies)
    np.testing.assert_array_equal(where.domain_distance, ward)
    np.testing.assert_array_equal(
        where.outside_domain, ward > clusters.domain_threshold()
    )
    saved.domain_threshold = None  # no threshold at all: nothing outside
    assert not saved.locate(probes, energies).outside_domain.any()
    # no overall RMSE recorded: the clusters' root mean square
    saved.overall_force_rmse = None
    level = 1.1 * np.sqrt(np.nanmean(errors.force_rmse**2))
    np.testing.assert_array_equal(
        saved.locate(probes, energies).high_error, rmse > level
    )
    # no cluster errors: nothing measured, nothing high
    saved.cluster_force_rmse = None
    where = saved.locate(probes, energies)
    assert np.isnan(where.cluster_force_rmse).all() and not where.high_error.any()
    np.testing.assert_array_equal(where.cluster, labels)


# -- the test split and the data files ------------------------------------------


def test_the_test_split_is_a_model_file(mapped, tmp_path, backend, xtb_dataset):
    import shutil

    from ase_flatten.models import model_content_hash

    path, _, _, test, _ = mapped
    saved = load_model(path)
    np.testing.assert_array_equal(saved.test_indices, test)
    assert np.load(path / "test_indices.npy").dtype == np.int64
    # not part of the content hash: hashes of models saved before stay valid
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    digest = model_content_hash(copy)
    (copy / "test_indices.npy").unlink()
    assert model_content_hash(copy) == digest
    assert load_model(copy).test_indices is None
    # replacing the model replaces its split (a stale one would mislead compare)
    save_model(copy, backend, TRAIN, xtb_dataset, test_indices=test[:3], overwrite=True)
    np.testing.assert_array_equal(load_model(copy).test_indices, test[:3])
    save_model(copy, backend, TRAIN, xtb_dataset, overwrite=True)
    assert load_model(copy).test_indices is None


def test_data_files_written_first_are_kept(tmp_path, backend, xtb_dataset):
    """A selection run writes clusters.npz and the split when it starts; its final
    model keeps those very files."""
    from ase_flatten.clustering import load_clusters
    from ase_flatten.models import DATA_FILES, write_data_files

    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=2)
    test = np.arange(140, 150)
    run = tmp_path / "run"
    run.mkdir()
    write_data_files(run, xtb_dataset, clusters, test)
    before = {name: (run / name).stat() for name in DATA_FILES}
    save_model(
        run, backend, TRAIN, xtb_dataset, clusters=clusters, keep_data_files=True
    )
    for name in DATA_FILES:
        after = (run / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (
            before[name].st_ino,
            before[name].st_mtime_ns,
        )
    saved = load_model(run)
    np.testing.assert_array_equal(saved.test_indices, test)
    assert saved.domain is not None  # calibrated with the kept clusters
    arrays = load_clusters(run / "clusters.npz")[1]
    assert str(arrays["fingerprint"]) == xtb_dataset.fingerprint()
    np.testing.assert_array_equal(arrays["numbers"], xtb_dataset.numbers)
    (run / "test_indices.npy").unlink()
    with pytest.raises(InputError, match="test_indices.npy: missing"):
        save_model(
            run,
            backend,
            TRAIN,
            clusters=clusters,
            overwrite=True,
            keep_data_files=True,
        )
