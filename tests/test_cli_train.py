"""`ase-flatten train` and `ase-flatten errors --model` with real sGDML."""

import importlib.util
import json

import numpy as np
import pytest

from ase_flatten import FlattenedCalculator
from ase_flatten.data import read_dataset
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # whole command lines that train models

SGDML = ["--backend", "sgdml", "-p", "sigma=20"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, xtb_files):
    reference, _ = xtb_files
    out = tmp_path_factory.mktemp("train") / "default"
    from ase_flatten.cli.main import main

    assert main(["train", str(reference), *SGDML, "--size", "20", "-o", str(out)]) == 0
    return out


def test_train_saves_a_loadable_default_model(model_dir, xtb_files):
    xtb_dataset = read_dataset(xtb_files[0])
    idx = np.load(model_dir / "train_indices.npy")
    assert len(idx) == 20 and len(np.unique(idx)) == 20 and idx.max() < 150
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["backend"] == "sgdml" and meta["strategy"] == "random"
    assert meta["seed"] == 0 and meta["params"]["sigma"] == 20
    assert meta["dataset_fingerprint"] == xtb_dataset.fingerprint()
    atoms = xtb_dataset.to_atoms(int(idx[0]))
    atoms.calc = FlattenedCalculator(model_dir)
    assert np.isfinite(atoms.get_forces()).all()


def test_train_indices_follow_the_seed(tmp_path, capsys, xtb_files, model_dir):
    reference, _ = xtb_files
    for name, seed in (("same", "0"), ("other", "1")):
        args = ("train", reference, *SGDML, "--size", "20", "--seed", seed)
        status, out, err = run_cli(capsys, *args, "-o", tmp_path / name)
        assert status == 0, err
        assert "trained sgdml on 20 random frames" in out
    first = np.load(model_dir / "train_indices.npy")
    np.testing.assert_array_equal(
        np.load(tmp_path / "same" / "train_indices.npy"), first
    )
    assert not np.array_equal(np.load(tmp_path / "other" / "train_indices.npy"), first)


def test_errors_with_a_model_leaves_out_its_training_frames(
    tmp_path, capsys, xtb_files, model_dir
):
    reference, _ = xtb_files
    xtb_dataset = read_dataset(reference)
    args = ("errors", reference, "--model", model_dir, "--n-geometry", "3")
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "r")
    assert status == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["n_frames"] == 130 and summary["excluded_training_frames"] == 20
    frames = np.loadtxt(tmp_path / "r" / "frame_errors.csv", delimiter=",", skiprows=1)
    train = np.load(model_dir / "train_indices.npy")
    assert not np.isin(frames[:, 0].astype(int), train).any()
    # the reported RMSE is the model's error on those frames
    calc = FlattenedCalculator(model_dir)
    keep = np.setdiff1d(np.arange(150), train)
    _, forces = calc.backend.predict(xtb_dataset, keep)
    direct = np.sqrt(np.mean((forces - xtb_dataset.forces[keep]) ** 2))
    assert summary["force_rmse"] == pytest.approx(direct, rel=1e-9)
    status, _, _ = run_cli(capsys, *args, "-o", tmp_path / "all", "--include-train")
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert status == 0 and summary["n_frames"] == 150


def test_errors_with_an_ase_calculator(tmp_path, capsys, xtb_files, gfn1_dataset):
    reference, _ = xtb_files
    status, _, err = run_cli(
        capsys,
        "errors",
        reference,
        "--calculator",
        "tblite.ase:TBLite",
        "--calc-kwargs",
        '{"method": "GFN1-xTB", "verbosity": 0}',
        "--n-geometry",
        "3",
        "-o",
        tmp_path / "r",
    )
    assert status == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    direct = np.sqrt(
        np.mean((gfn1_dataset.forces - read_dataset(reference).forces) ** 2)
    )
    assert summary["force_rmse"] == pytest.approx(direct, rel=1e-6)


def test_bad_train_and_model_input(tmp_path, capsys, xtb_files):
    reference, _ = xtb_files
    out = ["-o", tmp_path / "m"]
    cases = [
        (["--backend", "nequip", "--size", "5"], "unknown backend 'nequip'"),
        (["--backend", "sgdml", "--size", "5", "-p", "bogus=1"], "unknown parameter"),
        (
            ["--backend", "sgdml", "--size", "500"],
            "cannot choose 500 training frames from a pool of 135",
        ),
        (["--backend", "sgdml", "--size", "5", "-p", "sigma"], "expected KEY=VALUE"),
        (["--backend", "sgdml", "--size", "0"], "positive integer"),
    ]
    for extra, message in cases:
        status, _, err = run_cli(capsys, "train", reference, *extra, *out)
        assert_one_line_error(status, err, message)
    assert not (tmp_path / "m").exists()
    (tmp_path / "junk").mkdir()
    status, _, err = run_cli(
        capsys, "errors", reference, "--model", tmp_path / "junk", "-o", tmp_path / "r"
    )
    assert_one_line_error(status, err, "junk: not an ase-flatten model directory")
    status, _, err = run_cli(
        capsys, "errors", reference, "--calculator", "nope:Calc", "-o", tmp_path / "r"
    )
    assert_one_line_error(status, err, "cannot import calculator factory 'nope:Calc'")
    assert not (tmp_path / "r").exists()  # stopped before writing anything


def test_strategies_share_the_test_split(tmp_path, capsys, xtb_files, model_dir):
    reference, _ = xtb_files
    test = np.load(model_dir / "test_indices.npy")
    assert len(test) == 15  # 10 % of 150
    chosen = {}
    strategies = ["energy", "fps", "cur"]
    if importlib.util.find_spec("maml") is not None:  # the optional extra 'direct'
        strategies.append("direct")
    for strategy in strategies:
        args = ("train", reference, *SGDML, "--size", "20", "--strategy", strategy)
        status, out, err = run_cli(capsys, *args, "-o", tmp_path / strategy)
        assert status == 0, err
        assert "test split (15 frames): force RMSE" in out
        idx = np.load(tmp_path / strategy / "train_indices.npy")
        np.testing.assert_array_equal(
            np.load(tmp_path / strategy / "test_indices.npy"), test
        )
        assert len(np.unique(idx)) == 20 and not np.isin(idx, test).any()
        chosen[strategy] = tuple(idx)
        meta = json.loads((tmp_path / strategy / "model.json").read_text())
        assert meta["strategy"] == strategy and meta["test_force_rmse"] > 0
    chosen["random"] = tuple(np.load(model_dir / "train_indices.npy"))
    assert len(set(chosen.values())) == len(strategies) + 1  # all different
    calc = FlattenedCalculator(tmp_path / "fps", domain=True)
    assert calc.model.cluster_force_rmse is not None


@pytest.mark.parametrize("strategy", ["random", "energy"])
def test_validation_frames_never_come_from_the_test_split(
    tmp_path, capsys, xtb_files, strategy
):
    # 150 frames: 30 test, 100 training; sigma is chosen on up to 200 validation
    # frames, so every frame left (20) is taken, and a test frame would be too
    reference, _ = xtb_files
    args = ("train", reference, "--backend", "sgdml", "-p", "sigma_grid=[10,20]")
    args += ("--size", "100", "--test-fraction", "0.2", "--strategy", strategy)
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "m")
    assert status == 0, err
    train, test, validation = (
        np.load(tmp_path / "m" / f"{name}_indices.npy")
        for name in ("train", "test", "validation")
    )
    assert len(train) == 100 and len(test) == 30 and len(validation) == 20
    assert not np.intersect1d(validation, test).size
    assert not np.intersect1d(validation, train).size
    assert not np.intersect1d(train, test).size
    everything = np.concatenate([train, test, validation])
    np.testing.assert_array_equal(np.sort(everything), np.arange(150))


def test_train_on_a_selection_records_it(tmp_path, capsys, xtb_files):
    """A model trained on DATA@0:100 says so, and claims only those frames."""
    reference, _ = xtb_files
    selected = f"{reference}@0:100"
    args = ("train", selected, *SGDML, "--size", "20", "--n-geometry", "3")
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "m")
    assert status == 0, err
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    whole = read_dataset(reference)
    assert meta["dataset"] == selected
    assert meta["dataset_fingerprint"] == whole.subset(range(100)).fingerprint()
    assert meta["dataset_fingerprint"] != whole.fingerprint()
    assert np.load(tmp_path / "m" / "train_indices.npy").max() < 100
    # errors on the same selection recognise the model's own training frames
    args = ("errors", selected, "--model", tmp_path / "m", "--n-geometry", "3")
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert status == 0 and summary["excluded_training_frames"] == 20, err
    # selecting twice is one clear error
    status, _, err = run_cli(
        capsys, "cluster", selected, "--index", "0:50", "-o", tmp_path / "c.npz"
    )
    assert_one_line_error(status, err, "frames selected twice, by @0:100 and by index")


def test_frame_hashes_survive_file_formats_and_tell_frames_apart(xtb_dataset):
    from ase_flatten.data import frame_hashes, same_frames

    known = xtb_dataset.frame_hashes()
    assert known.shape == (150, 2) and known.dtype == np.uint64
    assert xtb_dataset.frame_hashes([]).shape == (0, 2)  # a model of no frames
    rng = np.random.default_rng(0)
    for noise in (5e-9, 5e-7):  # extxyz text, float32
        moved = xtb_dataset.positions + rng.uniform(-noise, noise, (150, 9, 3))
        assert same_frames(frame_hashes(xtb_dataset.numbers, moved), known).all()
    as_float32 = xtb_dataset.positions.astype(np.float32)
    assert same_frames(frame_hashes(xtb_dataset.numbers, as_float32), known).all()
    # other frames, atoms or atom order are not the same content
    assert len(np.unique(known[:, 0])) == len(np.unique(known[:, 1])) == 150
    moved = xtb_dataset.positions + 0.01
    assert not same_frames(frame_hashes(xtb_dataset.numbers, moved), known).any()
    other = xtb_dataset.numbers[::-1]
    assert not same_frames(frame_hashes(other, xtb_dataset.positions), known).any()


def _write_db_and_npz(directory, dataset):
    import ase.io

    from tests.test_data import sgdml_npz

    db = directory / "same.db"
    ase.io.write(db, [dataset.to_atoms(i) for i in range(len(dataset))])
    npz = directory / "same.npz"
    sgdml_npz(npz, dataset, e_unit="eV", e_scale=1.0)
    return db, npz


def test_errors_leaves_out_training_frames_from_any_file(
    tmp_path, capsys, xtb_files, model_dir
):
    """A slice, a database or an npz of the training frames leaks none of them."""
    reference, _ = xtb_files
    whole = read_dataset(reference)
    train = np.load(model_dir / "train_indices.npy")
    half = whole.subset(range(75, 150))  # another file, frames renumbered
    db, npz = _write_db_and_npz(tmp_path, half)
    expected = train[train >= 75] - 75
    assert 0 < len(expected) < 20
    for k, data in enumerate((f"{reference}@75:150", db, npz)):
        args = ("errors", data, "--model", model_dir, "--n-geometry", "2")
        status, out, err = run_cli(capsys, *args, "-o", tmp_path / f"r{k}")
        assert status == 0, err
        summary = json.loads((tmp_path / f"r{k}" / "summary.json").read_text())
        assert summary["excluded_training_frames"] == len(expected), data
        assert summary["n_frames"] == 75 - len(expected)
        assert summary["excluded_by"] == "matched by content"
        assert f"left out {len(expected)} frames the model trained" in out
        frames = np.loadtxt(
            tmp_path / f"r{k}" / "frame_errors.csv", delimiter=",", skiprows=1
        )
        assert not np.isin(frames[:, 0].astype(int), expected).any()
    # --include-train keeps them
    args = ("errors", db, "--model", model_dir, "--n-geometry", "2")
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "all", "--include-train")
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert status == 0 and summary["n_frames"] == 75, err
    # only training frames: one clear line
    only = tmp_path / "only.extxyz"
    whole.write(only, train)
    args = ("errors", only, "--model", model_dir, "--n-geometry", "2")
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "none")
    assert_one_line_error(status, err, "all 20 frames", "--include-train")


def test_errors_with_a_model_without_frame_hashes(
    tmp_path, capsys, caplog, xtb_files, model_dir
):
    """Models saved before the hashes: today's rule, and a log line says so."""
    import shutil

    reference, _ = xtb_files
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    (old / "frame_hashes.npz").unlink()
    args = ("errors", reference, "--model", old, "--n-geometry", "2")
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert status == 0 and summary["excluded_training_frames"] == 20, err
    assert "records no hashes of its training frames" in caplog.text
    args = ("errors", f"{reference}@0:75", "--model", old, "--n-geometry", "2")
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "s")
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert status == 0 and summary["excluded_training_frames"] == 0, err


def _frame_labels(report):
    table = np.loadtxt(report / "frame_errors.csv", delimiter=",", skiprows=1)
    return table[:, 0].astype(int), table[:, 1].astype(int)


def test_errors_labels_new_frames_with_a_saved_clustering(
    tmp_path, capsys, xtb_files, model_dir
):
    """A model's clustering labels any frames of its molecule, as predict does."""
    from ase_flatten.clustering import cluster_features, load_clusters

    reference, predicted = xtb_files
    whole = read_dataset(reference)
    clusters = model_dir / "clusters.npz"
    model, arrays = load_clusters(clusters)
    # the model's own data: the clustering's own labels
    args = ("errors", reference, "--model", model_dir, "--clusters", clusters)
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "own")
    assert status == 0, err
    frames, labels = _frame_labels(tmp_path / "own")
    np.testing.assert_array_equal(labels, arrays["labels"][frames])
    summary = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert summary["clusters_assigned"] is False
    # 75 frames of it in another file: assigned, not refused
    half = whole.subset(range(75, 150))
    other = tmp_path / "half.extxyz"
    half.write(other)
    for k, source in enumerate(("--model", "--predicted")):
        given = model_dir if source == "--model" else predicted
        data = other if source == "--model" else f"{reference}@75:150"
        if source == "--predicted":
            read_dataset(predicted).subset(range(75, 150)).write(tmp_path / "p.xyz")
            given = tmp_path / "p.xyz"
        args = ("errors", data, source, given, "--clusters", clusters)
        status, _, err = run_cli(capsys, *args, "-o", tmp_path / f"r{k}")
        assert status == 0, err
        frames, labels = _frame_labels(tmp_path / f"r{k}")
        X = cluster_features(model.describe(half.positions), half.energies)
        np.testing.assert_array_equal(labels, model.predict(X)[frames])
        summary = json.loads((tmp_path / f"r{k}" / "summary.json").read_text())
        assert summary["clusters_assigned"] is True
        assert not (tmp_path / f"r{k}" / "clusters.npz").exists()


def test_errors_refuses_a_clustering_of_another_molecule(tmp_path, capsys, xtb_files):
    from ase_flatten.md_dataset import make_md_dataset

    reference, predicted = xtb_files
    water = make_md_dataset("H2O", n_frames=30, equilibration_fs=20, progress=False)
    water.write(tmp_path / "water.extxyz")
    argv = ("cluster", tmp_path / "water.extxyz", "--n-geometry", "2")
    status, _, err = run_cli(capsys, *argv, "--n-energy", "2", "-o", tmp_path / "w.npz")
    assert status == 0, err
    argv = ("errors", reference, "--predicted", predicted)
    status, _, err = run_cli(
        capsys, *argv, "--clusters", tmp_path / "w.npz", "-o", tmp_path / "r"
    )
    assert_one_line_error(status, err, "w.npz: a clustering of H2O", "holds C2H6O")
    # a file saved before the atomic numbers were recorded: the atom count tells
    with np.load(tmp_path / "w.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "numbers"}
    np.savez(tmp_path / "old.npz", **arrays)
    status, _, err = run_cli(
        capsys, *argv, "--clusters", tmp_path / "old.npz", "-o", tmp_path / "r"
    )
    assert_one_line_error(status, err, "old.npz: a clustering of another molecule")
    assert not (tmp_path / "r").exists()
