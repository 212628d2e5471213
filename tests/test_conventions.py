"""The conventions users bring: MACE-style label keys, moved folders, model hashes.

Real sGDML models on 20 of the 150 GFN2-xTB ethanol frames, read from an extxyz
file that keeps its labels as MACE does (``REF_energy`` / ``REF_forces``).
"""

import json

import ase.io
import numpy as np
import pytest

from ase_flatten.data import REF_ENERGY_KEY, REF_FORCES_KEY, read_dataset
from ase_flatten.exceptions import InputError
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # whole command lines that train models

SGDML = ["--backend", "sgdml", "--size", "20"]
CLUSTERS = ["--n-geometry", "3", "--n-energy", "2"]
KEYS = ["--energy-key", "REF_energy", "--forces-key", "REF_forces"]


@pytest.fixture(scope="module")
def mace_file(tmp_path_factory, xtb_dataset):
    """The ethanol frames with MACE's keys and no calculator labels."""
    path = tmp_path_factory.mktemp("mace") / "ethanol_ref.extxyz"
    xtb_dataset.write(path, energy_key=REF_ENERGY_KEY, forces_key=REF_FORCES_KEY)
    return path


@pytest.fixture(scope="module")
def mace_models(mace_file):
    """Two models trained on ``mace_file`` with its keys, given relative paths: 20
    random frames with sigma 20, and 20 energy-stratified frames with sigma chosen
    on validation frames."""
    import os

    from ase_flatten.cli.main import main

    folder = mace_file.parent
    before = os.getcwd()
    os.chdir(folder)
    try:
        for name, sigma in (("random", "sigma=20"), ("energy", "sigma_grid=[10,20]")):
            argv = ["train", mace_file.name, *SGDML, *KEYS, *CLUSTERS, "-p", sigma]
            assert main([*argv, "--strategy", name, "-o", name]) == 0
    finally:
        os.chdir(before)
    return folder / "random", folder / "energy"


def test_the_file_has_mace_keys_and_no_calculator(mace_file, xtb_dataset):
    frame = ase.io.read(mace_file, 3)
    assert frame.calc is None
    assert frame.info["REF_energy"] == pytest.approx(xtb_dataset.energies[3])
    np.testing.assert_allclose(
        frame.arrays["REF_forces"], xtb_dataset.forces[3], atol=1e-7
    )


def test_missing_energy_names_the_parameters_and_the_keys_the_file_has(mace_file):
    with pytest.raises(InputError) as caught:
        read_dataset(mace_file)
    message = str(caught.value)
    assert "frame 0 has no energy" in message
    assert "energy_key=KEY forces_key=KEY" in message  # called from Python
    assert "(MACE files: energy_key=REF_energy forces_key=REF_forces)" in message
    assert "--" not in message
    assert "info keys: REF_energy, frame;" in message
    assert "arrays keys: REF_forces" in message
    with pytest.raises(InputError, match="no arrays key 'forces'.*REF_forces"):
        read_dataset(mace_file, energy_key="REF_energy", forces_key="forces")


def test_cluster_refuses_in_one_line_naming_the_flags(capsys, tmp_path, mace_file):
    status, _, err = run_cli(capsys, "cluster", mace_file, "-o", tmp_path / "c.npz")
    assert_one_line_error(status, err, "frame 0 has no energy", "--energy-key KEY")


def test_model_records_the_keys_and_the_absolute_dataset(mace_models, mace_file):
    meta = json.loads((mace_models[0] / "model.json").read_text())
    assert meta["energy_key"] == "REF_energy"
    assert meta["forces_key"] == "REF_forces"
    assert meta["dataset"] == "ethanol_ref.extxyz"  # as given, relative
    assert meta["dataset_path"] == str(mace_file.resolve())


def test_errors_with_the_model_reuses_its_keys(capsys, tmp_path, mace_models):
    model = mace_models[0]
    data = model.parent / "ethanol_ref.extxyz"
    status, _, err = run_cli(
        capsys, "errors", data, "--model", model, *CLUSTERS, "-o", tmp_path / "r"
    )
    assert status == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["n_frames"] == 130


def test_compare_from_another_folder_with_the_recorded_keys(
    capsys, tmp_path, monkeypatch, mace_models
):
    """The runs recorded a relative path from their own folder; compare runs
    elsewhere and finds the data by the absolute path, read with the keys."""
    monkeypatch.chdir(tmp_path)
    random, energy = mace_models
    status, out, err = run_cli(capsys, "compare", random, energy, "-o", "cmp")
    assert status == 0, err
    assert (tmp_path / "cmp" / "comparison.csv").exists()
    # keys given on the command line win over the recorded ones
    status, _, err = run_cli(
        capsys, "compare", random, energy, "-o", "cmp2", "--energy-key", "nope"
    )
    assert_one_line_error(status, err, "no info key 'nope'", "REF_energy")


def test_compare_says_when_the_data_moved(capsys, tmp_path, mace_models):
    import shutil

    copies = []
    for model in mace_models:
        copy = tmp_path / model.name
        shutil.copytree(model, copy)
        meta = json.loads((copy / "model.json").read_text())
        meta["dataset_path"] = str(tmp_path / "gone.extxyz")
        (copy / "model.json").write_text(json.dumps(meta))
        copies.append(copy)
    status, _, err = run_cli(capsys, "compare", *copies, "-o", tmp_path / "c")
    assert_one_line_error(status, err, "gone.extxyz", "is not there", "--data")


# -- predict: the input's labels stay, the model's go under a prefix ----------------
def test_predict_keeps_mace_labels_and_prefixes_the_predictions(
    capsys, tmp_path, mace_file, mace_models, xtb_dataset
):
    from ase_flatten import FlattenedCalculator

    model = mace_models[0]
    out = tmp_path / "out.extxyz"
    argv = ("predict", f"{mace_file}@0:6", "--model", model)
    status, stdout, err = run_cli(capsys, *argv, "-o", out)
    assert status == 0, err
    assert "(flattened_energy, flattened_forces)" in stdout
    frames = ase.io.read(out, ":")
    calc = FlattenedCalculator(model)
    for i, frame in enumerate(frames):
        assert frame.calc is None  # nothing poses as the reference
        assert frame.info["REF_energy"] == pytest.approx(xtb_dataset.energies[i])
        np.testing.assert_allclose(
            frame.arrays["REF_forces"], xtb_dataset.forces[i], atol=1e-7
        )
        atoms = frame.copy()  # the positions as the file has them
        atoms.calc = calc
        assert frame.info["flattened_energy"] == pytest.approx(
            atoms.get_potential_energy(), abs=1e-8
        )
        np.testing.assert_allclose(
            frame.arrays["flattened_forces"], atoms.get_forces(), atol=2e-8
        )
    # the same file read as reference and as predictions, as for MACE's output
    status, _, err = run_cli(
        capsys, "errors", out, *KEYS, "--predicted", out,
        "--pred-energy-key", "flattened_energy",
        "--pred-forces-key", "flattened_forces",
        "--n-geometry", "2", "--n-energy", "1", "-o", tmp_path / "r",
    )  # fmt: skip
    assert status == 0, err
    # a second prediction over the output needs its own prefix
    twice = tmp_path / "twice.extxyz"
    status, _, err = run_cli(capsys, "predict", out, "--model", model, "-o", twice)
    assert_one_line_error(status, err, "already has 'flattened_energy'", "--prefix")
    status, _, err = run_cli(
        capsys, "predict", out, "--model", model, "-o", twice, "--prefix", "MACE_"
    )
    assert status == 0, err
    back = ase.io.read(twice, 0)
    assert back.info["MACE_energy"] == pytest.approx(frames[0].info["flattened_energy"])
    assert "flattened_energy" in back.info and "REF_energy" in back.info
    status, _, err = run_cli(capsys, *argv, "-o", twice, "--prefix", "a b")
    assert_one_line_error(status, err, "--prefix", "letters, digits or _")


def test_train_xyz_keeps_ref_keys_and_the_strategy(mace_models, xtb_dataset):
    for model in mace_models:
        frames = ase.io.read(model / "train.xyz", ":")
        train = np.load(model / "train_indices.npy")
        assert [a.info["frame"] for a in frames] == train.tolist()
        assert {a.info["config_type"] for a in frames} == {model.name}
        for atoms in frames[:3]:
            assert atoms.calc is None
            i = atoms.info["frame"]
            assert atoms.info["REF_energy"] == pytest.approx(xtb_dataset.energies[i])
            np.testing.assert_allclose(
                atoms.arrays["REF_forces"], xtb_dataset.forces[i], atol=1e-7
            )
        # what mace_run_train --energy_key REF_energy --forces_key REF_forces reads
        back = read_dataset(model / "train.xyz", energy_key="REF_energy",
                            forces_key="REF_forces")  # fmt: skip
        np.testing.assert_allclose(back.energies, xtb_dataset.energies[train])


# -- export: files ready for mace_run_train -------------------------------------------
LOOP = ["--init", "20", "--step", "6", "--iterations", "2", "--n-fine", "8",
        "-p", "sigma=20", *CLUSTERS]  # fmt: skip


def test_export_a_select_run_for_mace(capsys, tmp_path, mace_file, xtb_dataset):
    run = tmp_path / "flat"
    status, _, err = run_cli(capsys, "select", mace_file, *KEYS, *LOOP, "-o", run)
    assert status == 0, err
    out = tmp_path / "mace_data"
    status, stdout, err = run_cli(capsys, "export", run, "-o", out)
    assert status == 0, err
    assert "--energy_key REF_energy --forces_key REF_forces" in stdout
    assert (out / ".ase-flatten-output").exists()
    # a fixed sigma: sGDML validated on no frames, mace_run_train splits its own
    assert len(np.load(run / "validation_indices.npy")) == 0
    assert not (out / "valid.xyz").exists() and "--valid_fraction" in stdout
    train = np.load(run / "train_indices.npy")
    test = np.load(run / "test_indices.npy")
    history = json.loads((run / "history.json").read_text())
    expected = {}
    for name, indices in (("train", train), ("test", test)):
        frames = ase.io.read(out / f"{name}.xyz", ":")
        assert [a.info["frame"] for a in frames] == indices.tolist(), name
        for atoms in frames:
            assert atoms.calc is None
            i = atoms.info["frame"]
            assert atoms.info["REF_energy"] == pytest.approx(xtb_dataset.energies[i])
            np.testing.assert_allclose(
                atoms.arrays["REF_forces"], xtb_dataset.forces[i], atol=1e-7
            )
        expected[name] = [a.info["config_type"] for a in frames]
    assert set(expected["test"]) == {"test"} and len(test) == 15
    assert expected["train"].count("initial") == 20
    assert expected["train"].count("flatten_iter0") == 6
    assert expected["train"].count("flatten_iter1") == 6
    assert not set(train) & set(test) and len(history) == 3
    # the same as train.xyz in the run, which select writes itself
    inside = ase.io.read(run / "train.xyz", ":")
    assert [a.info["config_type"] for a in inside] == expected["train"]


def test_export_a_train_model_and_bad_input(capsys, tmp_path, mace_models):
    model = mace_models[1]  # --strategy energy
    out = tmp_path / "e"
    status, _, err = run_cli(capsys, "export", model, "-o", out)
    assert status == 0, err
    frames = ase.io.read(out / "train.xyz", ":")
    assert {a.info["config_type"] for a in frames} == {"energy"} and len(frames) == 20
    valid = ase.io.read(out / "valid.xyz", ":")  # the frames sigma was chosen on
    indices = np.load(model / "validation_indices.npy")
    assert [a.info["frame"] for a in valid] == indices.tolist() and len(valid) > 0
    assert {a.info["config_type"] for a in valid} == {"validation"}
    test = set(np.load(model / "test_indices.npy").tolist())
    assert not test & set(indices.tolist())
    assert {a.info["frame"] for a in ase.io.read(out / "test.xyz", ":")} == test
    status, _, err = run_cli(capsys, "export", model, "-o", out)
    assert_one_line_error(status, err, "exists", "--overwrite")
    status, _, err = run_cli(capsys, "export", model, "-o", model)
    assert_one_line_error(status, err, "input")
    status, _, err = run_cli(
        capsys, "export", model, "-o", tmp_path / "x", "--data",
        f"{model.parent / 'ethanol_ref.extxyz'}@0:100",
    )  # fmt: skip
    assert_one_line_error(status, err, "not the frames", "fingerprint")
    assert not (tmp_path / "x").exists()


def test_mace_reads_the_export(capsys, tmp_path, mace_models, xtb_dataset):
    """mace-torch's own reader, with mace_run_train's --energy_key/--forces_key."""
    pytest.importorskip("mace")
    from mace.data.utils import KeySpecification, load_from_xyz

    model = mace_models[1]
    status, _, err = run_cli(capsys, "export", model, "-o", tmp_path / "m")
    assert status == 0, err
    keys = KeySpecification.from_defaults()
    keys.update(
        info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"}
    )
    for name, indices in (("train", "train"), ("valid", "validation")):
        _, configs = load_from_xyz(str(tmp_path / "m" / f"{name}.xyz"), keys)
        frames = np.load(model / f"{indices}_indices.npy")
        assert len(configs) == len(frames)
        energies = [c.properties["energy"] for c in configs]
        np.testing.assert_allclose(energies, xtb_dataset.energies[frames])
        np.testing.assert_allclose(
            configs[0].properties["forces"], xtb_dataset.forces[frames[0]], atol=1e-7
        )
    assert {c.config_type for c in configs} == {"validation"}


# -- which model gave a result: its content hash --------------------------------------
def test_calculator_records_a_content_hash_that_follows_the_files(
    tmp_path, mace_models, xtb_dataset
):
    import shutil

    from ase.calculators.calculator import CalculatorSetupError

    from ase_flatten import FlattenedCalculator
    from ase_flatten.models import model_content_hash

    model = mace_models[0]
    copy = tmp_path / "moved" / "copy"
    shutil.copytree(model, copy)
    digest = FlattenedCalculator(model).todict()["model_sha256"]
    assert len(digest) == 64 and digest == model_content_hash(model)
    # the same files in another folder: the same model
    assert FlattenedCalculator(copy).todict()["model_sha256"] == digest
    assert FlattenedCalculator(copy, model_sha256=digest).name == "flattened"
    other = FlattenedCalculator(mace_models[1]).todict()["model_sha256"]
    assert other != digest
    # a changed model file is another model; asking for the old one is refused
    (copy / "cluster_errors.json").write_text('{"force_rmse": [0.1]}')
    assert model_content_hash(copy) != digest
    with pytest.raises(CalculatorSetupError, match="not the model_sha256 asked for"):
        FlattenedCalculator(copy, model_sha256=digest)


# -- installing into an existing MACE or SchNet environment --------------------------
def test_extras_leave_torch_to_the_environment():
    """No extra pins torch (an existing MACE/SchNet environment keeps its own); the
    measured pin lives in constraints.txt, and the Makefile installs that CPU wheel
    first and passes the constraints to every pip call."""
    import configparser
    from pathlib import Path

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    extras = config["options.extras_require"]
    for name in ("sgdml", "schnet", "mace"):
        for line in extras[name].split("\n"):
            if not line.strip() or line.startswith("%"):
                continue
            requirement = Requirement(line.strip())
            if requirement.name == "torch":
                assert not any(s.operator == "==" for s in requirement.specifier), (
                    name,
                    line,
                )
    assert "torch==2.13.0" in (root / "constraints.txt").read_text().split()
    makefile = (root / "Makefile").read_text()
    torch_first = makefile.index("install --quiet -c constraints.txt torch==2.13.0")
    package = makefile.index("install --quiet -c constraints.txt -e '.[test,all")
    assert torch_first < package
    for line in makefile.splitlines():
        if "$(PIP) install" in line and "--upgrade pip" not in line:
            assert "-c constraints.txt" in line, line


def test_predictions_without_energy_name_the_pred_flags(
    capsys, tmp_path, mace_file, mace_models
):
    out = tmp_path / "out.extxyz"
    argv = ("predict", f"{mace_file}@0:6", "--model", mace_models[0], "-o", out)
    assert run_cli(capsys, *argv)[0] == 0
    status, _, err = run_cli(
        capsys, "errors", f"{mace_file}@0:6", *KEYS, "--predicted", out,
        *CLUSTERS, "-o", tmp_path / "r",
    )  # fmt: skip
    assert_one_line_error(
        status, err, "out.extxyz: frame 0 has no energy", "flattened_energy",
        "--pred-energy-key KEY --pred-forces-key KEY",
    )  # fmt: skip
