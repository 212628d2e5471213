"""The workflows callable from Python: the command lines' numbers, parameter names."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ase_flatten import (
    InputError,
    ReportSettings,
    TrainSettings,
    compare_models,
    error_report,
    train_model,
)
from ase_flatten.clustering_options import ClusteringSettings
from ase_flatten.exceptions import flag_spelling, option
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
SMALL = ClusteringSettings(n_geometry=4, n_energy=2)
SMALL_FLAGS = ["--n-geometry", "4", "--n-energy", "2"]


def test_option_names_parameters_or_flags():
    assert option("include_train", True) == "include_train=True"
    assert option("model", "DIR") == "model=DIR"
    with flag_spelling():
        assert option("include_train", True) == "--include-train"
        assert option("model", "DIR") == "--model DIR"
        assert option("extra_test") == "--extra-test"
    assert option("extra_test") == "extra_test"


def test_library_messages_name_parameters(tmp_path, xtb_files):
    reference, predicted = xtb_files
    out = tmp_path / "r"
    with pytest.raises(InputError) as info:
        error_report(reference, out, predicted=predicted, extra_test=reference)
    message = str(info.value)
    assert message.startswith("extra_test needs a model to predict its frames")
    assert "give model=DIR or calculator, not predicted" in message
    assert "--" not in message
    with pytest.raises(InputError, match="exactly one of predicted, model and"):
        error_report(reference, out, predicted=predicted, model=tmp_path)
    with pytest.raises(InputError, match="calc_kwargs must be a dict"):
        error_report(reference, out, calculator="tblite.ase:TBLite", calc_kwargs=[1])
    with pytest.raises(InputError, match="backend sgdml: bad hyperparameter") as info:
        train_model(reference, out, backend="sgdml", size=5, params={"random_state": 3})
    assert "-p" not in str(info.value)
    with pytest.raises(TypeError, match="settings: a TrainSettings"):
        train_model(reference, out, ReportSettings())
    assert not out.exists()


def test_error_report_matches_the_command_line(tmp_path, capsys, xtb_files):
    reference, predicted = xtb_files
    settings = ReportSettings(predicted=predicted, clustering=SMALL, write_worst=2)
    report = error_report(reference, tmp_path / "py", settings)
    argv = ("errors", reference, "--predicted", predicted, *SMALL_FLAGS,
            "--write-worst", "2", "-o", tmp_path / "cli")  # fmt: skip
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0
    for name in ("summary.json", "cluster_errors.csv", "frame_errors.csv",
                 "worst_clusters.extxyz"):  # fmt: skip
        assert (tmp_path / "py" / name).read_bytes() == (
            tmp_path / "cli" / name
        ).read_bytes(), name
    summary = report.summary
    assert report.left_out is None and report.extra_errors is None
    assert summary["n_frames"] == 150
    assert f"overall force RMSE {summary['force_rmse']:.4f} eV/Å" in out
    assert report.directory == tmp_path / "py"


@pytest.mark.slow
def test_train_model_matches_the_command_line(tmp_path, capsys, xtb_files):
    reference, _ = xtb_files
    settings = TrainSettings(
        backend="sgdml", size=20, params={"sigma": 20}, clustering=SMALL
    )
    model = train_model(reference, tmp_path / "py", settings)
    argv = ("train", reference, "--backend", "sgdml", "-p", "sigma=20", "--size",
            "20", *SMALL_FLAGS, "-o", tmp_path / "cli")  # fmt: skip
    status, out, _ = run_cli(capsys, *argv)
    assert status == 0
    for name in ("train_indices.npy", "test_indices.npy", "cluster_errors.json",
                 "validation_indices.npy", "train.xyz"):  # fmt: skip
        assert (tmp_path / "py" / name).read_bytes() == (
            tmp_path / "cli" / name
        ).read_bytes(), name
    assert model.path == tmp_path / "py"
    assert len(model.train_indices) == 20 and len(model.test_indices) == 15
    assert not np.isin(model.train_indices, model.test_indices).any()
    errors = json.loads((tmp_path / "cli" / "cluster_errors.json").read_text())
    assert model.overall_force_rmse == errors["overall_force_rmse"]
    assert f"force RMSE {model.overall_force_rmse:.4f} eV/Å" in out
    # the same settings compare with themselves: ratio 1, the same split
    comparison = compare_models([model.path, tmp_path / "cli"], tmp_path / "cmp")
    first, second = comparison.rows
    assert first["force_rmse"] == second["force_rmse"]
    assert second["force_rmse_ratio"] == pytest.approx(1.0)
    assert (tmp_path / "cmp" / "comparison.csv").exists()


@pytest.mark.slow
def test_the_python_api_example(tmp_path, capsys, xtb_dataset):
    spec = importlib.util.spec_from_file_location(
        "python_api", ROOT / "examples" / "python_api.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    xtb_dataset.write(tmp_path / "ethanol_gfn2_500K.extxyz")  # no MD to run
    result = example.main(tmp_path, size=30)
    out = capsys.readouterr().out
    assert [row["run"] for row in result["rows"]] == ["random", "energy"]
    first, second = result["rows"]
    assert first["force_rmse_ratio"] == 1.0 and first["test_frames"] == 15
    assert second["force_rmse_ratio_low"] <= second["force_rmse_ratio"]
    assert second["force_rmse_ratio"] <= second["force_rmse_ratio_high"]
    assert first["force_rmse"] == pytest.approx(result["test_force_rmse"])
    assert result["max_ratio"] >= 1.0
    assert result["forces"].shape == (9, 3)
    assert f"random: test force RMSE {result['test_force_rmse']:.4f}" in out
    assert "calculator: |F| max" in out
    for folder in ("random", "energy", "errors", "comparison"):
        assert (tmp_path / folder).is_dir()
