"""select from a pool whose labels the GFN2-xTB oracle pays for on demand."""

import importlib.util
import json

import ase.io
import numpy as np
import pytest

from ase_flatten.exceptions import InputError
from ase_flatten.oracle import LabelStore, Oracle, frame_keys
from ase_flatten.pool import read_pool
from ase_flatten.selection.flatten import SelectionConfig, run_selection

pytestmark = pytest.mark.slow  # selection loops that train and label

# find_spec, not importorskip: a bare `import sgdml` replaces the logger class of
# the whole test session (backends/sgdml.py imports it and puts it back)
for _name in ("sgdml", "tblite"):
    if importlib.util.find_spec(_name) is None:
        pytest.skip(f"{_name} is not installed", allow_module_level=True)

CONFIG = dict(
    backend="sgdml", params={"sigma": 10}, init=20, step=10, iterations=2, n_fine=20,
    n_geometry=5, n_energy=1, error_sample=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory, xtb_files):
    """The 150 ethanol frames, two of every three without labels."""
    frames = ase.io.read(xtb_files[0], ":")
    for i, atoms in enumerate(frames):
        if i % 3:
            atoms.calc = None
    path = tmp_path_factory.mktemp("pool") / "pool.extxyz"
    ase.io.write(path, frames)
    return path


def _pool(path, store):
    pool = read_pool(path)
    pool.oracle = Oracle("tests.oracle_factories:gfn2")
    pool.store = LabelStore(store)
    return pool


def test_only_the_frames_used_are_paid_for(pool_file, xtb_dataset, tmp_path):
    pool = _pool(pool_file, tmp_path / "run" / "labels.jsonl")
    assert pool.labelled.sum() == 50 and not pool.complete
    result = run_selection(
        pool.dataset, SelectionConfig(**CONFIG), tmp_path / "run", labels=pool
    )
    paid = result.history[-1]["labels_paid"]
    keys = [json.loads(line)["key"] for line in open(tmp_path / "run/labels.jsonl")]
    assert len(keys) == len(set(keys)) == paid["calls"] == paid["in_store"]
    assert paid["test"] + paid["initial"] + paid["estimate"] + paid["added"] == len(
        keys
    )
    # frames labelled in the file never went to the oracle
    given = frame_keys(xtb_dataset.numbers, xtb_dataset.positions[::3])
    assert not set(given) & set(keys)
    # far fewer labels than frames; every frame used has its GFN2-xTB label
    assert paid["calls"] < 100 - 20
    used = np.union1d(result.train_indices, result.test_indices)
    assert pool.labelled[used].all()
    np.testing.assert_allclose(
        pool.dataset.energies[used], xtb_dataset.energies[used], atol=1e-4
    )
    labelled = ase.io.read(tmp_path / "run" / "labelled.extxyz", ":")
    assert len(labelled) == pool.labelled.sum()
    # a resumed run (every iteration done) pays for nothing more
    again = _pool(pool_file, tmp_path / "run" / "labels.jsonl")
    resumed = run_selection(
        again.dataset, SelectionConfig(**CONFIG), tmp_path / "run", resume=True,
        labels=again,
    )  # fmt: skip
    np.testing.assert_array_equal(resumed.train_indices, result.train_indices)
    assert again.calls() == 0


def test_a_labelled_pool_with_an_oracle_is_the_paper_loop(xtb_files, tmp_path):
    config = SelectionConfig(**{**CONFIG, "n_energy": 5, "error_sample": None})
    plain = run_selection(read_pool(xtb_files[0]).dataset, config, tmp_path / "a")
    pool = _pool(xtb_files[0], tmp_path / "labels.jsonl")
    same = run_selection(pool.dataset, config, tmp_path / "b", labels=pool)
    np.testing.assert_array_equal(plain.train_indices, same.train_indices)
    assert pool.calls() == 0 and not (tmp_path / "labels.jsonl").exists()


def test_unlabelled_frames_need_an_error_sample_and_one_energy_level(
    pool_file, tmp_path
):
    pool = _pool(pool_file, tmp_path / "labels.jsonl")
    for change, text in (({"error_sample": None}, "error sample"),
                         ({"n_energy": 5}, "energy levels")):  # fmt: skip
        config = SelectionConfig(**{**CONFIG, **change})
        with pytest.raises(InputError, match=text):
            run_selection(pool.dataset, config, tmp_path / "x", labels=pool)
    assert pool.calls() == 0 and not (tmp_path / "x").exists()


def test_a_label_budget_stops_the_loop_when_spent(pool_file, xtb_dataset, tmp_path):
    """Unlimited, the loop pays for 25 training labels (a third of the pool is
    labelled); a budget of 21 stops the picks when it is spent and the final
    model is trained on what was bought."""
    from ase_flatten.selection.split import holdout_split

    config = SelectionConfig(**{**CONFIG, "label_budget": 21})
    pool = _pool(pool_file, tmp_path / "run" / "labels.jsonl")
    result = run_selection(pool.dataset, config, tmp_path / "run", labels=pool)
    test, _ = holdout_split(150, 0.1, 0)
    test_keys = set(frame_keys(xtb_dataset.numbers, xtb_dataset.positions[test]))
    keys = [json.loads(line)["key"] for line in open(tmp_path / "run/labels.jsonl")]
    paid_for_training = [key for key in keys if key not in test_keys]
    assert 14 < len(paid_for_training) <= 21  # never a call over the budget
    final = result.history[-1]["labels_paid"]
    assert final["budget"] == 21
    assert final["budget_left"] == 21 - len(paid_for_training)
    # without the budget the same loop pays for more
    free = _pool(pool_file, tmp_path / "free" / "labels.jsonl")
    unlimited = run_selection(
        free.dataset, SelectionConfig(**CONFIG), tmp_path / "free", labels=free
    )
    assert unlimited.history[-1]["labels_paid"]["calls"] > final["calls"]
    assert len(result.train_indices) < len(unlimited.train_indices)
    # a resumed run counts what the first one paid and pays for nothing more
    again = _pool(pool_file, tmp_path / "run" / "labels.jsonl")
    resumed = run_selection(
        again.dataset, config, tmp_path / "run", resume=True, labels=again
    )
    np.testing.assert_array_equal(resumed.train_indices, result.train_indices)
    assert again.calls() == 0


def test_a_label_budget_below_the_initial_set_is_refused(pool_file, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ase_flatten.cli.main", "select", str(pool_file),
         "--oracle", "tests.oracle_factories:gfn2", "--init", "20",
         "--label-budget", "10", "-o", str(tmp_path / "run")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "ase-flatten select: error: --label-budget 10 is smaller than the initial "
        "set (20 frames); give at least 20"
    ]
    assert not (tmp_path / "run").exists()
    result = subprocess.run(
        [sys.executable, "-m", "ase_flatten.cli.main", "select", str(pool_file),
         "--label-budget", "10", "-o", str(tmp_path / "run")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--label-budget counts oracle calls: give --oracle too" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "ase_flatten.cli.main", "select", str(pool_file),
         "--oracle", "tests.oracle_factories:gfn2", "--error-estimate", "committee",
         "--committee", "1", "-o", str(tmp_path / "run")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "ase-flatten select: error: a committee of 1 model has no disagreement to "
        "estimate errors by: give at least 2 members"
    ]
    assert not (tmp_path / "run").exists()


def test_half_labelled_frames_are_refused(xtb_files, tmp_path):
    frames = ase.io.read(xtb_files[0], ":5")
    frames[2].calc = None
    frames[2].info["energy"] = -1.0
    ase.io.write(tmp_path / "half.extxyz", frames)
    with pytest.raises(InputError, match="frame 2 has an energy but not the other"):
        read_pool(tmp_path / "half.extxyz")


def test_cli_refuses_a_bad_oracle_before_any_work(pool_file, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ase_flatten.cli.main", "select", str(pool_file),
         "--oracle", "nope:Calc", "-o", str(tmp_path / "run")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ase-flatten select: error: cannot import calculator factory 'nope:Calc' "
        "(No module named 'nope')"
    ]
    assert not (tmp_path / "run").exists()


def test_a_committee_ranks_the_frames_without_labels(pool_file, tmp_path):
    """With the committee estimate the union frames without labels carry errors
    of their own, not their coarse cluster's; the labels paid stay the same
    kinds, and no committee member ever saw a frame without a label."""
    runs = {}
    for estimate in ("cluster", "committee"):
        pool = _pool(pool_file, tmp_path / estimate / "labels.jsonl")
        config = SelectionConfig(**{**CONFIG, "error_estimate": estimate})
        runs[estimate] = run_selection(
            pool.dataset, config, tmp_path / estimate, labels=pool
        )
        assert pool.labelled[runs[estimate].train_indices].all()
    first = {k: r.history[0]["why"] for k, r in runs.items()}
    # the cluster estimate gives each pick its cluster's error: few distinct values
    for estimate, why in first.items():
        distinct = len(np.unique(np.round(why["added_frame_rmse"], 10)))
        if estimate == "cluster":
            assert distinct <= len(why["high_clusters"]) + CONFIG["error_sample"]
        else:
            assert distinct == len(why["added_frame_rmse"])
    assert not np.array_equal(
        runs["cluster"].train_indices, runs["committee"].train_indices
    )
    # the same command gives the same frames
    pool = _pool(pool_file, tmp_path / "again" / "labels.jsonl")
    config = SelectionConfig(**{**CONFIG, "error_estimate": "committee"})
    again = run_selection(pool.dataset, config, tmp_path / "again", labels=pool)
    np.testing.assert_array_equal(again.train_indices, runs["committee"].train_indices)


def test_a_committee_of_one_is_refused(pool_file, tmp_path):
    pool = _pool(pool_file, tmp_path / "labels.jsonl")
    config = SelectionConfig(
        **{**CONFIG, "error_estimate": "committee", "committee": 1}
    )
    with pytest.raises(InputError, match="committee of 1"):
        run_selection(pool.dataset, config, tmp_path / "x", labels=pool)
    assert pool.calls() == 0 and not (tmp_path / "x").exists()
