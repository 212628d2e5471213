import csv
import json
import subprocess
import sys

import pytest

from md_validation.cli import main
from md_validation.report import SUMMARY_COLUMNS
from tests.test_cli import assert_one_line_error
from tests.test_cli import run_cli as run_cli_with


def run_cli(capsys, *argv):
    return run_cli_with(capsys, *argv, entry=main)


@pytest.fixture(scope="module")
def start_file(tmp_path_factory, xtb_dataset):
    path = tmp_path_factory.mktemp("md_cli") / "ethanol.extxyz"
    xtb_dataset.write(path)
    return path


def test_end_to_end_two_models(tmp_path, capsys, sgdml_model, start_file, xtb_dataset):
    out_dir = tmp_path / "md"
    args = [
        "--model", f"default={sgdml_model}", "--model", f"improved={sgdml_model}",
        "--temperatures", "300", "400", "--steps", "60", "--replicas", "2",
        "--stride", "5", "--start", start_file, "-o", out_dir,
    ]  # fmt: skip
    status, out, err = run_cli(capsys, *args)
    assert status == 0, err
    rows = list(csv.DictReader(open(out_dir / "summary.csv")))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    assert len(rows) == 2 * 2 * 2
    assert {(r["model"], r["temperature_K"], r["replica"]) for r in rows} == {
        (m, t, k) for m in ("default", "improved") for t in ("300", "400") for k in "01"
    }
    for row in rows:
        assert row["failed"] == "False" and row["time_to_failure_ps"] == ""
        assert row["steps_done"] == "60"
        assert 0.0 < float(row["mean_total_energy_eV"]) < 3.0  # eV above data min
        assert 0.0 <= float(row["risky_fraction"]) <= 1.0
        run_dir = out_dir / row["run_dir"]
        assert (run_dir / "thermo.csv").exists()
        assert (run_dir / "trajectory.extxyz").exists()
    # the same model under two names with the same seeds: identical runs
    by_key = {(r["model"], r["temperature_K"], r["replica"]): r for r in rows}
    assert (
        by_key["default", "300", "0"]["mean_total_energy_eV"]
        == by_key["improved", "300", "0"]["mean_total_energy_eV"]
    )
    assert (out_dir / "energy_vs_time.png").stat().st_size > 1000
    assert (out_dir / "default" / "400K" / "replica1" / "run.json").exists()
    assert "300 K:" in out and "400 K:" in out
    for temperature in ("300", "400"):
        assert (
            f"{temperature} K: no difference detectable between default and "
            "improved (0/2 vs 0/2 failed, no failures)"
        ) in out
    survival = list(csv.DictReader(open(out_dir / "survival.csv")))
    assert len(survival) == 8 and {r["failed"] for r in survival} == {"0"}
    assert {r["time_ps"] for r in survival} == {"0.03"}  # 60 steps of 0.5 fs
    comparison = json.loads((out_dir / "comparison.json").read_text())
    at_400 = comparison["temperatures"]["400"]
    assert at_400["pairs"][0]["models"] == ["default", "improved"]
    assert at_400["pairs"][0]["logrank_p"] is None
    assert at_400["models"]["default"]["median_time_to_failure"] == "> 0.03 ps"
    assert (out_dir / "survival.png").stat().st_size > 1000
    # never silently overwrite
    status, _, err = run_cli(capsys, *args)
    assert_one_line_error(status, err, "exists", "--overwrite")
    assert run_cli(capsys, *args, "--overwrite", "--temperatures", "300")[0] == 0


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--model", "nameonly"], ["expected NAME=PATH"]),
        (["--model", "m=/no/such/model"], ["/no/such/model", "no such model"]),
        (["--model", "m=MODEL", "--engine", "gromacs"], ["invalid choice", "gromacs"]),
        (["--model", "m=MODEL", "--steps", "-3"], ["must be positive"]),
        (["--model", "m=MODEL", "--bogus"], ["unrecognized arguments"]),
        (["--model", "m=MODEL", "--model", "m=MODEL"], ["names must differ"]),
        (["--model", "m=MODEL", "--start-frame", "999"], ["out of range"]),
    ],
)
def test_bad_input_is_one_line(
    tmp_path, capsys, sgdml_model, start_file, extra, needles
):
    extra = [a.replace("MODEL", str(sgdml_model)) for a in extra]
    args = [*extra, "--start", start_file, "--steps", "5", "-o", tmp_path / "x"]
    if "--steps" in extra:
        args = [*extra, "--start", start_file, "-o", tmp_path / "x"]
    status, _, err = run_cli(capsys, *args)
    assert_one_line_error(status, err, *needles)
    assert not (tmp_path / "x").exists()


def test_python_dash_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "md_validation", "--model", "x", "--start", "d", "-o",
         str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "NAME=PATH" in proc.stderr


def test_version_and_usage_errors_come_from_the_shared_runtime(capsys):
    from ase_flatten import __version__

    status, out, _ = run_cli(capsys, "--version")
    assert status == 0 and out.strip() == __version__
    status, _, err = run_cli(capsys, "--start", "x.xyz", "-o", "md", "-v", "-q")
    assert_one_line_error(status, err, "md-validate: error:", "see md-validate --help")
