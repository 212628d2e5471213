"""Risky MD frames to label next: exported, labelled with GFN2-xTB, trained on."""

import json

import ase.io
import numpy as np
import pytest

from ase_flatten.backends import make_backend
from ase_flatten.data import Dataset
from ase_flatten.md_dataset import xtb_calculator
from ase_flatten.models import load_model
from md_validation import run_md
from md_validation.export import (
    ExportSettings,
    RunTrajectory,
    export_risky_frames,
)

pytestmark = pytest.mark.slow  # MD runs and retraining

MAX = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sgdml_model, xtb_dataset):
    """Two 100 fs runs at 500 K of the 30-frame sGDML model, exported."""
    root = tmp_path_factory.mktemp("export")
    runs = []
    for k in range(2):
        run_dir = root / "md" / f"replica{k}"
        start = xtb_dataset.to_atoms(0)
        run_md(sgdml_model, start, 500.0, 200, seed=k, stride=5, outdir=run_dir)
        runs.append(RunTrajectory("small", 500.0, k, run_dir / "trajectory.extxyz"))
    settings = ExportSettings(max_frames=MAX)
    summary = export_risky_frames(runs, {"small": sgdml_model}, root / "out", settings)
    return root / "out", summary, runs


def test_exports_flagged_frames_thinned_to_the_maximum(exported, sgdml_model):
    out, summary, runs = exported
    counts = summary["small"]
    assert counts["frames"] == 2 * 41  # 200 steps, every 5th, both replicas
    assert counts["risky"] > MAX  # so FPS had to thin them
    assert counts["written"] == MAX
    assert json.loads((out / "export.json").read_text()) == summary
    frames = ase.io.read(out / "small.extxyz", ":")
    assert len(frames) == MAX
    assert all(f.calc is None for f in frames)  # model predictions are no labels
    keys = {(f.info["replica"], f.info["step"]) for f in frames}
    assert len(keys) == MAX  # distinct MD frames
    where = load_model(sgdml_model).locate(
        np.array([f.positions for f in frames]),
        np.array([f.info["model_energy_eV"] for f in frames]),
    )
    for k, f in enumerate(frames):
        assert f.info["model"] == "small" and f.info["temperature_K"] == 500.0
        assert f.info["replica"] in (0, 1) and 0 <= f.info["time_ps"] <= 0.1
        assert f.info["cluster"] == where.cluster[k]
        reasons = set(f.info["reason"].split("+"))
        assert reasons <= {"outside_domain", "high_error"} and reasons
        assert ("high_error" in reasons) == where.high_error[k]
        assert ("outside_domain" in reasons) == where.outside_domain[k]


def test_labelled_frames_lower_the_retrained_models_error(
    exported, sgdml_model, xtb_dataset
):
    """Label the exported frames with GFN2-xTB, add them, retrain: their error drops."""
    out, _, _ = exported
    frames = ase.io.read(out / "small.extxyz", ":")
    calc = xtb_calculator("GFN2-xTB")
    energies, forces = [], []
    for atoms in frames:
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    new = Dataset(
        xtb_dataset.numbers,
        np.array([f.positions for f in frames]),
        np.array(energies),
        np.array(forces),
    )
    before = load_model(sgdml_model)
    merged = Dataset(
        xtb_dataset.numbers,
        np.concatenate([xtb_dataset.positions, new.positions]),
        np.concatenate([xtb_dataset.energies, new.energies]),
        np.concatenate([xtb_dataset.forces, new.forces]),
    )
    train = np.concatenate([before.train_indices, len(xtb_dataset) + np.arange(MAX)])
    after = make_backend("sgdml", sigma=20).fit(merged, train)

    def force_rmse(backend):
        predicted = backend.predict_positions(new.positions)[1]
        return float(np.sqrt(np.mean((predicted - new.forces) ** 2)))

    old, retrained = force_rmse(before.backend), force_rmse(after)
    print(f"force RMSE on the exported frames: {old:.4f} -> {retrained:.4f} eV/Å")
    assert retrained < 0.5 * old, (old, retrained)


def test_command_line_export(tmp_path, sgdml_model, xtb_files, capsys):
    from md_validation.cli import main

    reference, _ = xtb_files

    def args(output):
        return [
            *("--model", f"m={sgdml_model}", "--start", str(reference)),
            *("--temperatures", "500", "--steps", "100", "--stride", "5"),
            *("--replicas", "1"),
            *("-o", str(tmp_path / output), "--export-risky", str(tmp_path / "label")),
            *("--export-max", "3"),
        ]

    assert main(args("md")) == 0
    summary = json.loads((tmp_path / "label" / "export.json").read_text())
    assert summary["m"]["frames"] == 21
    assert summary["m"]["written"] == min(3, summary["m"]["risky"])
    assert "risky MD frames" in capsys.readouterr().out
    # an existing export is not replaced without --overwrite, before any MD
    assert main(args("md2")) == 2
    err = capsys.readouterr().err
    assert "label: exists and is not empty; pass --overwrite" in err
    assert not (tmp_path / "md2").exists()
