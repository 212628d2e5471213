"""`ase-flatten predict` with a real sGDML model."""

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ase_flatten import FlattenedCalculator
from ase_flatten.backends.sgdml import SGDMLBackend
from ase_flatten.data import read_dataset
from ase_flatten.models import load_model, save_model
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # whole command lines that train models

EXTRAS = ("cluster", "cluster_force_rmse", "domain_distance", "outside_domain")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, xtb_files):
    """sGDML on 20 frames, saved with 3 x 2 clusters and their errors."""
    from ase_flatten.cli.main import main

    reference, _ = xtb_files
    out = tmp_path_factory.mktemp("predict") / "model"
    args = ["train", str(reference), "--backend", "sgdml", "-p", "sigma=20"]
    args += ["--size", "20", "--n-geometry", "3", "--n-energy", "2", "-o", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, xtb_files, model_dir):
    """The 150 reference frames predicted, read back with ASE."""
    from ase_flatten.cli.main import main

    reference, _ = xtb_files
    out = tmp_path_factory.mktemp("predicted") / "out.extxyz"
    assert (
        main(["predict", str(reference), "--model", str(model_dir), "-o", str(out)])
        == 0
    )
    return ase.io.read(out, ":")


def test_output_agrees_with_the_calculator(predicted, xtb_files, model_dir):
    reference = read_dataset(xtb_files[0])
    assert len(predicted) == 150
    calc = FlattenedCalculator(model_dir, domain=True)
    for i, frame in enumerate(predicted):
        atoms = reference.to_atoms(i)
        atoms.calc = calc
        # extxyz keeps 8 decimals of positions and forces
        assert frame.info["flattened_energy"] == pytest.approx(
            atoms.get_potential_energy(), abs=1e-8
        )
        np.testing.assert_allclose(
            frame.arrays["flattened_forces"], atoms.get_forces(), atol=2e-8
        )
        assert frame.info["cluster"] == atoms.info["cluster"]
        assert frame.info["outside_domain"] == atoms.info["outside_domain"]
        for key in ("cluster_force_rmse", "domain_distance"):
            assert frame.info[key] == pytest.approx(
                atoms.info[key], rel=1e-6, nan_ok=True
            )
        assert frame.info["model"] == calc.parameters["model"]
        assert frame.info["frame"] == i
        # the reference labels of DATA stay under their own names (here the
        # calculator's energy and forces), beside the model's
        assert frame.get_potential_energy() == pytest.approx(reference.energies[i])
        np.testing.assert_allclose(frame.get_forces(), reference.forces[i], atol=1e-7)


def test_output_reports_the_measured_cluster_errors(predicted, model_dir):
    saved = load_model(model_dir)
    clusters = np.array([f.info["cluster"] for f in predicted])
    rmse = np.array([f.info["cluster_force_rmse"] for f in predicted])
    assert set(clusters) <= set(range(6))
    measured = np.isfinite(saved.cluster_force_rmse[clusters])
    np.testing.assert_allclose(
        rmse[measured], saved.cluster_force_rmse[clusters][measured], rtol=1e-12
    )
    assert np.isnan(rmse[~measured]).all()
    # frames of the data itself lie inside its domain (99.5th percentile threshold)
    assert np.mean([f.info["outside_domain"] for f in predicted]) < 0.05


def test_selection_batches_and_unlabelled_frames(
    tmp_path, capsys, monkeypatch, xtb_files, model_dir, predicted
):
    reference, _ = xtb_files
    calls = []
    original = SGDMLBackend._predict

    def counting(self, positions):
        calls.append(len(positions))
        return original(self, positions)

    monkeypatch.setattr(SGDMLBackend, "_predict", counting)
    out = tmp_path / "part.extxyz"
    args = ("predict", f"{reference}@100:130", "--model", model_dir, "-o", out)
    status, stdout, err = run_cli(capsys, *args, "--batch-size", "8")
    assert status == 0, err
    assert "predicted 30 frames with the sgdml model" in stdout
    assert calls == [8, 8, 8, 6]  # batches, not one call per frame
    part = ase.io.read(out, ":")
    for frame, whole in zip(part, predicted[100:130], strict=True):
        np.testing.assert_allclose(
            frame.arrays["flattened_forces"], whole.arrays["flattened_forces"]
        )
        assert frame.info["cluster"] == whole.info["cluster"]

    # frames without any labels
    bare = [Atoms(f.numbers, f.positions) for f in predicted[:5]]
    ase.io.write(tmp_path / "bare.xyz", bare, format="extxyz")
    status, _, err = run_cli(
        capsys, "predict", tmp_path / "bare.xyz", "--model", model_dir, "-o", out,
        "--overwrite",
    )  # fmt: skip
    assert status == 0, err
    back = ase.io.read(out, ":")
    assert len(back) == 5 and back[0].calc is None
    np.testing.assert_allclose(
        back[4].arrays["flattened_forces"], predicted[4].arrays["flattened_forces"]
    )


def test_overwrite_and_bad_input(tmp_path, capsys, xtb_files, model_dir):
    reference, _ = xtb_files
    out = tmp_path / "out.extxyz"
    out.write_text("keep me")
    base = ("predict", f"{reference}@0:3", "--model", model_dir)
    status, _, err = run_cli(capsys, *base, "-o", out)
    assert_one_line_error(status, err, "out.extxyz: exists; pass --overwrite")
    assert out.read_text() == "keep me"

    water = molecule("H2O")
    ase.io.write(tmp_path / "water.xyz", [water, water], format="extxyz")
    boxed = read_dataset(reference).to_atoms(0)
    boxed.set_cell([10, 10, 10], scale_atoms=False)
    boxed.pbc = True
    ase.io.write(
        tmp_path / "boxed.extxyz", [read_dataset(reference).to_atoms(1), boxed]
    )
    cases = [
        (
            (tmp_path / "water.xyz", "--model", model_dir),
            "water.xyz: frame 0: this sgdml model was trained on another molecule",
        ),
        ((tmp_path / "boxed.extxyz", "--model", model_dir), "boxed.extxyz: frame 1:"),
        ((reference, "--model", tmp_path / "none"), "none: no such model directory"),
        ((f"{reference}@id<3", "--model", model_dir), "is not a frame index"),
        ((tmp_path / "none.xyz", "--model", model_dir), "none.xyz: no such file"),
    ]
    for args, message in cases:
        status, _, err = run_cli(capsys, "predict", *args, "-o", out, "--overwrite")
        assert_one_line_error(status, err, message)
    status, _, err = run_cli(capsys, *base, "-o", reference, "--overwrite")
    assert_one_line_error(status, err, "is an input of this run")
    status, _, err = run_cli(capsys, *base, "-o", tmp_path / "out.npz")
    assert_one_line_error(status, err, "out.npz: the output must be an .extxyz or .xyz")
    assert out.read_text() == "keep me"  # nothing replaced by a failed run

    status, _, err = run_cli(capsys, *base, "-o", out, "--overwrite")
    assert status == 0, err
    assert len(ase.io.read(out, ":")) == 3


def test_a_model_without_clusters(tmp_path, capsys, caplog, xtb_files, model_dir):
    reference, _ = xtb_files
    saved = load_model(model_dir)
    plain = save_model(tmp_path / "plain", saved.backend, saved.train_indices)
    out = tmp_path / "out.extxyz"
    status, _, err = run_cli(
        capsys, "predict", f"{reference}@0:4", "--model", plain, "-o", out
    )
    assert status == 0, err
    frames = ase.io.read(out, ":")
    assert len(frames) == 4 and not set(EXTRAS) & set(frames[0].info)
    assert "saved without its data's clusters" in caplog.text
