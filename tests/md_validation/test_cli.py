import csv
import json
import subprocess
import sys

import pytest

from md_validation.cli import main
from md_validation.report import RESERVED_NAMES, SUMMARY_COLUMNS
from tests.test_cli import assert_one_line_error
from tests.test_cli import run_cli as run_cli_with


def run_cli(capsys, *argv):
    return run_cli_with(capsys, *argv, entry=main)


@pytest.fixture(scope="module")
def start_file(tmp_path_factory, xtb_dataset):
    path = tmp_path_factory.mktemp("md_cli") / "ethanol.extxyz"
    xtb_dataset.write(path)
    return path


@pytest.mark.slow
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
    share = at_400["models"]["default"]["risky_share"]
    assert share["replicas"] == 2 and 0 <= share["min"] <= share["max"] <= 1
    (default_line,) = [x for x in out.splitlines() if x.startswith("400 K: default:")]
    assert (
        ", risky MD frames " in default_line and "high-error clusters" in default_line
    )
    assert "or more vs" not in out  # 2 replicas: nothing could
    assert "with 2 replicas per model no outcome could reach p < 0.05" in out
    assert (out_dir / "survival.png").stat().st_size > 1000
    # every file beside the model folders has a name no model may take
    top = {p.name for p in out_dir.iterdir() if p.is_file() and p.name[0] != "."}
    assert top <= set(RESERVED_NAMES) and "summary.csv" in top
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
        (["--model", "m=MODEL", "--model", "M=MODEL"], ["names must differ"]),
        (
            ["--model", "m=MODEL", "--temperatures", "300", "300.0000001"],
            ["--temperatures must differ", "300K, 300K"],
        ),
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


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--temperatures", "inf"], ["--temperatures", "finite"]),
        (["--temperatures", "300", "nan"], ["--temperatures", "finite"]),
        (["--temperatures", "1e9"], ["--temperatures", "at most"]),
        (["--tau", "nan"], ["--tau", "finite"]),
        (["--tau", "0"], ["--tau", "positive"]),
        (["--timestep", "nan"], ["--timestep", "finite"]),
        (["--timestep", "50"], ["--timestep", "at most 10"]),
        (["--runaway-window-fs", "inf"], ["--runaway-window-fs", "finite"]),
        (["--max-temperature-factor", "nan"], ["--max-temperature-factor", "finite"]),
        (["--max-temperature-factor", "0.9"], ["--max-temperature-factor", "> 1"]),
        (["--high-error-factor=-inf"], ["--high-error-factor", "finite"]),
        (["--seed", "-1"], ["--seed", ">= 0"]),
        (["--seed", str(2**31)], ["--seed", "at most"]),
        (["--replicas", "nan"], ["--replicas", "not a number"]),
        (["--replicas", "0"], ["--replicas", "positive"]),
        (["--stride", "-2"], ["--stride", "positive"]),
        (["--jobs", "0"], ["--jobs", "positive"]),
        (["--export-max", "0"], ["--export-max", "positive"]),
        (["--reference-replicas", "-1"], ["--reference-replicas", "positive"]),
        (["--reference-time-ps", "inf"], ["--reference-time-ps", "finite"]),
        (["--time-ps", "nan"], ["--time-ps", "finite"]),
        (["--time-ps", "1e9"], ["--time-ps", "at most 100000000"]),
        (["--steps", "1e3"], ["--steps", "not a number"]),
        (["--log-every-ps", "nan"], ["--log-every-ps", "finite"]),
        (["--log-every-ps=-1"], ["--log-every-ps", ">= 0"]),
    ],
)
def test_every_number_is_checked_before_any_work(
    tmp_path, capsys, sgdml_model, start_file, extra, needles
):
    """Non-finite and out-of-range numbers end as one line, nothing written."""
    args = ["--model", f"m={sgdml_model}", "--start", start_file]
    if "--time-ps" not in extra and "--steps" not in extra:
        args += ["--steps", "5"]
    status, _, err = run_cli(capsys, *args, *extra, "-o", tmp_path / "x")
    assert_one_line_error(status, err, *needles)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name",
    ["summary.csv", "energy_vs_time.png", "Survival.PNG", "comparison.json",
     "survival.csv", "reference.png", ".hidden", ".ase-flatten-output", " m"],
)  # fmt: skip
def test_model_names_that_collide_with_outputs_are_refused(
    tmp_path, capsys, sgdml_model, start_file, name
):
    args = ["--model", f"{name}={sgdml_model}", "--start", start_file, "--steps", "5"]
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "x")
    assert_one_line_error(status, err, "--model", "model name")
    assert not list(tmp_path.iterdir())


def test_replicas_default_and_help_show_defaults_and_power(capsys):
    """--replicas defaults to 8; the help states every default and what 4, 8 and
    16 replicas can detect, as detectable_difference computes it."""
    from md_validation.cli import build_parser
    from md_validation.survival import detectable_difference

    parser = build_parser()
    args = parser.parse_args(["--model", "m=x", "--start", "d", "-o", "o"])
    assert args.replicas == 8
    from md_validation.workflow import Protocol

    assert Protocol().replicas == 8  # the library's default too
    text = " ".join(parser.format_help().split())
    assert "seeded replicas per model and temperature (default: 8)" in text
    for option, default in [
        ("--timestep FS", "0.5"), ("--tau FS", "100.0"), ("--seed SEED", "0"),
        ("--stride STRIDE", "10"), ("--export-max K", "50"),
        ("--runaway-window-fs RUNAWAY_WINDOW_FS", "50.0"),
    ]:  # fmt: skip
        described = text.split("options:", 1)[1].split(option, 1)[1][:120]
        assert f"(default: {default}" in described, option
    for n, shown in [(4, ">= 3/4 failed, a model failing 79 %"), (8, ">= 4/8 and 58 %"),
                     (16, ">= 4/16 and 32 %")]:  # fmt: skip
        found = detectable_difference(n)
        assert shown in text
        assert f">= {found['failures']}/{n}" in shown
        assert f"{100 * found['failure_probability']:.0f} %" in shown
    assert detectable_difference(2)["failures"] is None
    assert "1 or 2 replicas cannot show any difference" in text


def test_export_risky_never_lands_on_an_input_or_a_file(
    tmp_path, capsys, sgdml_model, start_file
):
    """The red team's data loss: --export-risky DIR with DIR/<model>.extxyz being
    the --start dataset itself, a file as DIR, a folder of someone else's files,
    or the -o folder: one line each, before any MD, nothing touched."""
    data = tmp_path / "data"
    data.mkdir()
    start = data / "ethanol.extxyz"
    start.write_bytes(start_file.read_bytes())
    before = start.read_bytes()
    other = tmp_path / "labels"
    other.mkdir()
    (other / "m.extxyz").write_text("precious\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x\n")
    out = tmp_path / "md"
    base = ["--start", start, "--steps", "5", "-o", out]
    cases = [
        (["--model", f"ethanol={sgdml_model}", "--export-risky", data],
         ["is an input"]),
        (["--model", f"m={sgdml_model}", "--export-risky", a_file], ["is a file"]),
        (["--model", f"m={sgdml_model}", "--export-risky", other],
         ["not empty", "--overwrite"]),
        (["--model", f"m={sgdml_model}", "--export-risky", other, "--overwrite"],
         ["not an output of `md-validate --export-risky`"]),
        (["--model", f"m={sgdml_model}", "--export-risky", out], ["overlaps"]),
        (["--model", f"m={sgdml_model}", "--export-risky", out / "risky"],
         ["overlaps"]),
    ]  # fmt: skip
    for extra, needles in cases:
        status, _, err = run_cli(capsys, *extra, *base)
        assert_one_line_error(status, err, *needles)
        assert not out.exists() and not (tmp_path / "md.partial").exists()
    assert start.read_bytes() == before
    assert (other / "m.extxyz").read_text() == "precious\n"
    assert a_file.read_text() == "x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "data", "labels"]


@pytest.mark.slow
def test_export_risky_is_an_atomic_marked_output(
    tmp_path, capsys, sgdml_model, start_file
):
    """A real tiny export: a marked folder; a second export refuses without
    --overwrite and replaces only its own earlier export with it."""
    from ase_flatten.files import read_marker

    export = tmp_path / "risky"
    args = [
        "--model", f"m={sgdml_model}", "--start", start_file, "--temperatures", "600",
        "--steps", "40", "--stride", "4", "--replicas", "1", "--export-risky", export,
        "--export-max", "3",
    ]  # fmt: skip
    status, out, err = run_cli(capsys, *args, "-o", tmp_path / "md")
    assert status == 0, err
    assert read_marker(export) == "md-validate --export-risky"
    summary = json.loads((export / "export.json").read_text())
    assert summary["m"]["frames"] == 11 and f"m: {summary['m']['written']} of" in out
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "md2")
    assert_one_line_error(status, err, str(export), "--overwrite")
    assert not (tmp_path / "md2").exists()  # refused before any MD
    status, _, err = run_cli(capsys, *args, "-o", tmp_path / "md3", "--overwrite")
    assert status == 0, err
    assert json.loads((export / "export.json").read_text()) == summary  # same seeds
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
