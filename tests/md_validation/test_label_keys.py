"""`md-validate --start` reads a file that keeps its labels under MACE's keys."""

import csv

import pytest

from ase_flatten.data import REF_ENERGY_KEY, REF_FORCES_KEY
from md_validation.cli import main
from tests.test_cli import assert_one_line_error
from tests.test_cli import run_cli as run_cli_with

pytestmark = pytest.mark.slow  # MD runs of trained models


def test_start_with_label_keys(tmp_path, capsys, sgdml_model, xtb_dataset):
    start = tmp_path / "ethanol_ref.extxyz"
    xtb_dataset.write(start, energy_key=REF_ENERGY_KEY, forces_key=REF_FORCES_KEY)
    args = ["--model", f"m={sgdml_model}", "--start", start, "--temperatures", "300",
            "--steps", "10", "--stride", "5", "--jobs", "1",
            "--replicas", "1"]  # fmt: skip
    status, _, err = run_cli_with(capsys, *args, "-o", tmp_path / "no", entry=main)
    assert_one_line_error(status, err, "frame 0 has no energy", "--energy-key KEY")
    assert not (tmp_path / "no").exists()
    keys = ["--energy-key", "REF_energy", "--forces-key", "REF_forces"]
    out = tmp_path / "md"
    status, _, err = run_cli_with(capsys, *args, *keys, "-o", out, entry=main)
    assert status == 0, err
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [row["steps_done"] for row in rows] == ["10"]
