"""Exploration with the real GFN2-xTB oracle from a deliberately weak sGDML model."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ase_flatten.backends.gap import find_gap_fit
from ase_flatten.data import read_dataset
from ase_flatten.exceptions import InputError
from ase_flatten.oracle import Oracle, frame_keys

pytestmark = pytest.mark.slow  # MD, GFN2-xTB labels and retraining

# find_spec, not importorskip: a bare `import sgdml` replaces the logger class of
# the whole test session (backends/sgdml.py imports it and puts it back)
for _name in ("sgdml", "tblite"):
    if importlib.util.find_spec(_name) is None:
        pytest.skip(f"{_name} is not installed", allow_module_level=True)

#: 900 K runs of a 20-frame model leave its domain within 0.25 ps
ARGS = [
    "--oracle", "tests.oracle_factories:gfn2",
    "--temperatures", "900", "--replicas", "2", "--time-ps", "0.25",
    "--per-round", "4", "--label-budget", "8", "--max-rounds", "2",
    "--stop-outside", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def weak_model(tmp_path_factory, xtb_files):
    """sGDML on 20 random frames of the 150-frame ethanol set (test split kept)."""
    folder = tmp_path_factory.mktemp("weak")
    _cli(
        "train", str(xtb_files[0]), "--backend", "sgdml", "--size", "20",
        "-p", "sigma=10", "-o", str(folder / "model"), cwd=folder,
    )  # fmt: skip
    return folder / "model"


def _cli(*argv, cwd, check=True, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ase_flatten.cli.main", *argv]
    if not check:
        return subprocess.Popen(command, cwd=cwd, env=env, **kwargs)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_a_weak_model_is_explored_labelled_and_retrained(weak_model, tmp_path):
    from ase_flatten.models import load_model

    out = tmp_path / "explored"
    result = _cli("explore", str(weak_model), *ARGS, "-o", str(out), cwd=tmp_path)
    history = json.loads((out / "history.json").read_text())
    spent = sum(entry["labels"]["calls"] for entry in history)
    assert 0 < spent <= 8  # the budget holds
    assert history[0]["candidates"] > 0 and history[0]["labels"]["calls"] == 4
    explored = read_dataset(str(out / "explored.extxyz"))
    assert len(explored) == sum(entry["added"] for entry in history)
    # the labels are GFN2-xTB's own for those MD geometries
    from tests.oracle_factories import gfn2

    atoms = explored.to_atoms(0)
    atoms.calc = gfn2()
    assert atoms.get_potential_energy() == pytest.approx(explored.energies[0], 1e-9)
    # no frame paid twice; the store holds exactly the calls of the history
    keys = [json.loads(line)["key"] for line in open(out / "labels.jsonl")]
    assert len(keys) == len(set(keys)) == spent
    # the folder is a model trained on the start frames plus the labelled ones
    start, final = load_model(weak_model), load_model(out)
    assert len(final.train_indices) == len(start.train_indices) + len(explored)
    data = read_dataset(str(out / "dataset.extxyz"))
    np.testing.assert_allclose(
        data.positions[final.train_indices[-len(explored) :]], explored.positions
    )
    assert final.meta["strategy"] == "explore"
    assert "oracle calls" in result.stdout


def test_killed_exploration_resumes_to_the_same_training_set(weak_model, tmp_path):
    """SIGKILL while labelling (a slow oracle), resume in a fresh process."""
    slow = [
        "--oracle", "tests.oracle_factories:broken",
        "--oracle-kwargs", '{"how": "none", "sleep_s": 0.3}',
    ]  # fmt: skip
    args = [*ARGS[2:], *slow]
    _cli("explore", str(weak_model), *args, "-o", str(tmp_path / "a"), cwd=tmp_path)
    process = _cli(
        "explore", str(weak_model), *args, "-o", str(tmp_path / "b"),
        cwd=tmp_path, check=False,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    store = tmp_path / "b.partial" / "labels.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists() and len(store.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    paid = len(store.read_text().splitlines())
    assert 2 <= paid < 8
    _cli(
        "explore", str(weak_model), *args, "-o", str(tmp_path / "b"), "--resume",
        cwd=tmp_path,
    )  # fmt: skip
    a = read_dataset(str(tmp_path / "a" / "explored.extxyz"))
    b = read_dataset(str(tmp_path / "b" / "explored.extxyz"))
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.energies, b.energies)
    keys = [json.loads(line)["key"] for line in open(tmp_path / "b" / "labels.jsonl")]
    assert len(keys) == len(set(keys))  # nothing labelled twice
    assert set(keys) == set(frame_keys(a.numbers, a.positions)) | set(keys)


def test_bad_oracle_or_settings_stop_before_any_md(weak_model, tmp_path):
    from md_validation.explore import ExploreSettings, explore

    with pytest.raises(InputError, match="cannot import calculator factory"):
        explore(weak_model, Oracle("nope:Calc"), ExploreSettings(), tmp_path / "x")
    with pytest.raises(InputError, match="failed on frame"):
        explore(
            weak_model,
            Oracle("tests.oracle_factories:broken", {"how": "raise"}),
            ExploreSettings(),
            tmp_path / "x",
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    for bad in ({"temperatures": (float("inf"),)}, {"replicas": 0}, {"seed": -1}):
        with pytest.raises(InputError, match="out of range"):
            ExploreSettings(**bad)
    result = subprocess.run(
        [sys.executable, "-m", "ase_flatten.cli.main", "explore", str(weak_model),
         "--oracle", "nope:Calc", "-o", str(tmp_path / "x")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ase-flatten explore: error: cannot import calculator factory 'nope:Calc' "
        "(No module named 'nope')"
    ]


def test_warm_started_exploration_continues_from_each_rounds_model(
    weak_model, xtb_files, tmp_path
):
    """A tiny SchNet start model; each retraining starts from the last model."""
    pytest.importorskip("schnetpack")
    from ase_flatten.models import load_model

    tiny = {
        "n_atom_basis": 16, "n_interactions": 2, "n_rbf": 10, "max_epochs": 10,
        "warm_epochs": 2, "device": "cpu",
    }  # fmt: skip
    params = [item for k, v in tiny.items() for item in ("-p", f"{k}={v}")]
    _cli(
        "train", str(xtb_files[0]), "--backend", "schnet", "--size", "20",
        *params, "-o", str(tmp_path / "start"), cwd=tmp_path,
    )  # fmt: skip
    out = tmp_path / "explored"
    _cli(
        "explore", str(tmp_path / "start"), *ARGS, "--warm-start", "-o", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    history = json.loads((out / "history.json").read_text())
    retrained = [entry for entry in history if "fit" in entry]
    assert retrained, "no round retrained the model"
    for entry in retrained:
        assert entry["fit"]["warm_start"] is True and entry["fit"]["epochs"] <= 2
    first = load_model(out / "rounds" / "r01" / "model")
    assert first.meta["warm_start_from"] == str((tmp_path / "start").resolve())
    # GAP has no warm start: refused in one line before any MD
    try:
        find_gap_fit()
    except InputError:
        return  # quippy-ase is not installed
    _cli(
        "train", str(xtb_files[0]), "--backend", "gap", "--size", "10",
        "-p", "n_sparse=20", "-o", str(tmp_path / "gap"), cwd=tmp_path,
    )  # fmt: skip
    process = _cli(
        "explore", str(tmp_path / "gap"), *ARGS, "--warm-start", "-o",
        str(tmp_path / "s"), cwd=tmp_path, check=False, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, stderr = process.communicate()
    assert process.returncode == 2
    assert stderr.strip().splitlines()[-1] == (
        "ase-flatten explore: error: --warm-start: the start model's gap backend "
        "cannot continue from a previous model; it retrains from scratch"
    )
    assert "Traceback" not in stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
