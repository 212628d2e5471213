"""Replicas in worker processes: the same runs whatever --jobs, resume, safe -o."""

import csv
import json
import shutil

import pytest

from ase_flatten.files import MARKER
from md_validation.cli import main
from tests.test_cli import assert_one_line_error
from tests.test_cli import run_cli as run_cli_with

pytestmark = pytest.mark.slow  # MD runs in worker processes

RUNS = [f"m/300K/replica{k}" for k in range(2)]


def run_cli(capsys, *argv):
    return run_cli_with(capsys, *argv, entry=main)


@pytest.fixture(scope="module")
def start_file(tmp_path_factory, xtb_dataset):
    path = tmp_path_factory.mktemp("md_parallel") / "ethanol.extxyz"
    xtb_dataset.write(path)
    return path


def summary(out):
    """summary.csv without its timing column."""
    rows = list(csv.DictReader(open(out / "summary.csv")))
    return [{k: v for k, v in row.items() if k != "steps_per_second"} for row in rows]


def md_args(model, start_file, out):
    return [
        "--model", f"m={model}", "--start", start_file, "--temperatures", "300",
        "--steps", "300", "--replicas", "2", "--stride", "20", "-o", out,
        "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory, sgdml_model, start_file):
    """An uninterrupted run on two worker processes."""
    out = tmp_path_factory.mktemp("jobs2") / "md"
    assert main([str(a) for a in md_args(sgdml_model, start_file, out)]) == 0
    return out


def test_jobs_do_not_change_results(
    tmp_path, capsys, sgdml_model, start_file, two_jobs
):
    out = tmp_path / "md"
    status, _, err = run_cli(
        capsys, *md_args(sgdml_model, start_file, out), "--jobs", "1"
    )
    assert status == 0, err
    for run in RUNS:
        one, two = out / run / "thermo.csv", two_jobs / run / "thermo.csv"
        assert one.read_bytes() == two.read_bytes()
        info = json.loads((out / run / "run.json").read_text())
        assert info["seed"] == int(run[-1]) and info["steps_done"] == 300
    # the two replicas differ (seeds 0 and 1)
    assert (out / RUNS[0] / "thermo.csv").read_bytes() != (
        out / RUNS[1] / "thermo.csv"
    ).read_bytes()
    assert (out / MARKER).exists() and not (tmp_path / "md.partial").exists()


def test_resume_keeps_finished_replicas(
    tmp_path, capsys, sgdml_model, start_file, two_jobs
):
    out = tmp_path / "md"
    args = md_args(sgdml_model, start_file, out)
    # an interrupted run: replica 0 finished, replica 1 half-written
    work = tmp_path / "md.partial"
    shutil.copytree(two_jobs, work)
    for name in ("summary.csv", "energy_vs_time.png"):
        (work / name).unlink()
    (work / RUNS[1] / "run.json").unlink()
    thermo = work / RUNS[1] / "thermo.csv"
    thermo.write_text(thermo.read_text()[:500])
    kept = (work / RUNS[0] / "run.json").stat().st_mtime_ns
    # without --resume it is neither lost nor silently restarted
    status, _, err = run_cli(capsys, *args, "--jobs", "1")
    assert_one_line_error(status, err, "md.partial", "--resume")
    status, _, err = run_cli(capsys, *args, "--jobs", "1", "--resume")
    assert status == 0, err
    assert (out / RUNS[0] / "run.json").stat().st_mtime_ns == kept
    for run in RUNS:
        thermo = f"{run}/thermo.csv"
        assert (out / thermo).read_bytes() == (two_jobs / thermo).read_bytes()
    assert summary(out) == summary(two_jobs)
    # other settings cannot resume this run
    shutil.copytree(out, work)
    (work / RUNS[1] / "run.json").unlink()
    status, _, err = run_cli(capsys, *args, "--resume", "--overwrite", "--seed", "5")
    assert_one_line_error(status, err, "other settings", "seed")


def test_overwrite_never_deletes_an_input(
    tmp_path, capsys, sgdml_model, start_file, two_jobs
):
    model_files = sorted(p.name for p in sgdml_model.iterdir())
    data = start_file.read_bytes()
    stranger = tmp_path / "results"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("keep me")
    for out, needles in [
        (sgdml_model, ["is an input of this run", str(sgdml_model)]),
        (start_file, ["is a file, not a folder", str(start_file)]),
        (start_file.parent, ["is an input of this run"]),
        (stranger, ["not an output of `md-validate`", "remove it yourself"]),
    ]:
        args = md_args(sgdml_model, start_file, out)
        status, _, err = run_cli(capsys, *args, "--overwrite")
        assert_one_line_error(status, err, *needles)
    assert sorted(p.name for p in sgdml_model.iterdir()) == model_files
    assert start_file.read_bytes() == data
    assert (stranger / "thesis.tex").read_text() == "keep me"
    assert not list(tmp_path.glob("*.partial"))


def test_an_interrupted_worker_starts_no_queued_task(monkeypatch):
    """After a Ctrl-C (or the parent's stop) in a worker's run, the tasks the
    executor had already queued for that worker return without running."""
    import signal

    from md_validation import replicas

    ran = []

    def interrupted(task):
        ran.append(task)
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(replicas, "_STOPPING", False)
    monkeypatch.setattr(replicas, "_run_task", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            replicas._run_pool_task("first")
        assert replicas._STOPPING
        # between runs a worker ignores SIGINT (an idle worker must not die)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert replicas._run_pool_task("queued") == "not run: interrupted"
        assert ran == ["first"]
    finally:
        signal.signal(signal.SIGINT, previous)
