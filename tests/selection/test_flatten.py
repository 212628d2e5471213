"""The flattening loop end to end with real sGDML on 150 frames of GFN2-xTB ethanol."""

import dataclasses
import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from ase_flatten import FlattenedCalculator
from ase_flatten.exceptions import InputError
from ase_flatten.files import folder_lock
from ase_flatten.selection import flatten
from ase_flatten.selection.flatten import SelectionConfig, run_selection

pytestmark = pytest.mark.slow  # selection loops that train models

SMALL = SelectionConfig(
    params={"sigma": 20},
    error_sample=None,  # the paper's loop: every pool frame predicted
    init=20,
    step=8,
    iterations=2,
    n_geometry=3,
    n_energy=2,
    n_fine=12,
    test_fraction=0.2,
)


def run(dataset, directory, **changes):
    return run_selection(dataset, dataclasses.replace(SMALL, **changes), directory)


@pytest.fixture(scope="module")
def reference_run(xtb_dataset, tmp_path_factory):
    return run(xtb_dataset, tmp_path_factory.mktemp("sel") / "run")


def test_sizes_and_exclusions(reference_run):
    train, test = reference_run.train_indices, reference_run.test_indices
    assert len(train) == 20 + 2 * 8 and len(np.unique(train)) == len(train)
    assert len(test) == 30
    assert not np.isin(train, test).any()  # the test split is never selected
    history = reference_run.history
    assert [h["n_train"] for h in history] == [20, 28, 36]
    seen = set()
    start = set(train) - {i for h in history[:-1] for i in h["added"]}
    seen |= start
    for entry in history[:-1]:
        added = set(entry["added"])
        assert len(added) == 8 and not added & seen  # never a frame already chosen
        assert not added & set(test)
        seen |= added
    assert seen == set(train)


def test_outputs_make_a_model_directory(reference_run, xtb_dataset):
    d = reference_run.directory
    np.testing.assert_array_equal(
        np.load(d / "train_indices.npy"), reference_run.train_indices
    )
    np.testing.assert_array_equal(
        np.load(d / "test_indices.npy"), reference_run.test_indices
    )
    history = json.loads((d / "history.json").read_text())
    assert history[-1]["iteration"] == "final" and len(history) == 3
    for entry in history[:-1]:
        assert set(entry["timings"]) == {"train", "predict", "select"}
        assert len(entry["why"]["added_frame_rmse"]) == 8
        assert entry["why"]["threshold"] > 0
    assert (d / "error_curves.png").stat().st_size > 10_000
    import ase.io

    frames = ase.io.read(d / "train.xyz", ":")
    assert [a.info["frame"] for a in frames] == reference_run.train_indices.tolist()
    # MACE's keys, and why each frame was picked
    reasons = {a.info["frame"]: a.info["config_type"] for a in frames}
    for entry in history[:-1]:
        for i in entry["added"]:
            assert reasons[i] == f"flatten_iter{entry['iteration']}"
    assert sum(r == "initial" for r in reasons.values()) == history[0]["n_train"]
    first = frames[0]
    assert first.calc is None
    assert first.info["REF_energy"] == pytest.approx(
        xtb_dataset.energies[first.info["frame"]]
    )
    np.testing.assert_allclose(
        first.arrays["REF_forces"], xtb_dataset.forces[first.info["frame"]], atol=1e-7
    )
    calc = FlattenedCalculator(d, domain=True)
    atoms = xtb_dataset.to_atoms(int(reference_run.test_indices[0]))
    atoms.calc = calc
    atoms.get_forces()
    assert 0 <= calc.results["cluster"] < 6
    errors = json.loads((d / "cluster_errors.json").read_text())
    final = history[-1]["test"]
    assert max(errors["force_rmse"]) == pytest.approx(final["max_cluster_force_rmse"])


def test_pick_takes_the_worst_frame_of_each_worst_fine_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    X = np.concatenate([c + rng.normal(size=(10, 2)) for c in centres])
    union = np.arange(40)
    mse = rng.uniform(0.1, 0.2, size=40)
    mse[10:20] += 1.0  # blob 1 is the worst, then blob 3
    mse[30:40] += 0.5
    mse[13] = 5.0  # its worst frame
    config = dataclasses.replace(SMALL, n_fine=4, step=2)
    added, info = flatten._pick(config, X, np.zeros(40), union, mse, rng)
    assert info["n_fine"] == 4
    assert added[0] == 13 and added[1] == 30 + np.argmax(mse[30:40])
    assert info["rmse"][0] > info["rmse"][1]


def test_deterministic(reference_run, xtb_dataset, tmp_path):
    again = run(xtb_dataset, tmp_path / "again")
    np.testing.assert_array_equal(again.train_indices, reference_run.train_indices)
    other = run(xtb_dataset, tmp_path / "other", seed=1)
    assert not np.array_equal(other.train_indices, reference_run.train_indices)


def test_resume_after_interrupt_gives_the_same_indices(
    reference_run, xtb_dataset, tmp_path, monkeypatch
):
    real = flatten._iteration
    calls = []

    def interrupted(*args):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(flatten, "_iteration", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(xtb_dataset, tmp_path / "r")
    checkpoint = json.loads((tmp_path / "r" / "checkpoint.json").read_text())
    assert checkpoint["completed_iterations"] == 1
    assert not (tmp_path / "r" / "model.json").exists()
    monkeypatch.setattr(flatten, "_iteration", real)
    with pytest.raises(InputError, match="exists and is not empty; use --resume"):
        run(xtb_dataset, tmp_path / "r")
    with pytest.raises(InputError, match=r"other settings \(step\)"):
        run_selection(
            xtb_dataset, dataclasses.replace(SMALL, step=9), tmp_path / "r", resume=True
        )
    changed = dataclasses.replace(SMALL, descriptor="inverse", assign="max")
    with pytest.raises(InputError, match=r"other settings \(assign, descriptor\)"):
        run_selection(xtb_dataset, changed, tmp_path / "r", resume=True)
    # a run started before the clustering options were settings resumes with
    # the clustering it used: the defaults
    config_file = tmp_path / "r" / "config.json"
    saved = json.loads(config_file.read_text())
    for key in ("assign", "descriptor", "reduce", "n_components"):
        del saved["config"][key]
    config_file.write_text(json.dumps(saved))
    # a second writer is refused while the first holds the folder, not after
    with folder_lock(tmp_path / "r"):
        with pytest.raises(InputError, match="another process is writing this run"):
            run_selection(xtb_dataset, SMALL, tmp_path / "r", resume=True)
    resumed = run_selection(xtb_dataset, SMALL, tmp_path / "r", resume=True)
    np.testing.assert_array_equal(resumed.train_indices, reference_run.train_indices)
    assert [h["added"] for h in resumed.history[:-1]] == [
        h["added"] for h in reference_run.history[:-1]
    ]


def test_the_clustering_options_reach_the_clusters(xtb_dataset, tmp_path, monkeypatch):
    from unittest import mock

    from ase_flatten import clustering
    from ase_flatten.clustering import load_clusters
    from ase_flatten.models import load_model

    spy = mock.Mock(wraps=clustering.save_clusters)  # the real writer, counted
    monkeypatch.setattr(clustering, "save_clusters", spy)
    result = run(
        xtb_dataset, tmp_path / "i", iterations=1, descriptor="inverse", assign="max"
    )
    clusters = load_clusters(result.directory / "clusters.npz")[0]
    assert (clusters.descriptor, clusters.assign) == ("inverse", "max")
    assert len(result.train_indices) == 28
    # the run's clusters and test split are the final model's, written once
    assert [c.args[0] for c in spy.call_args_list] == [
        result.directory / "clusters.npz"
    ]
    saved = load_model(result.directory)
    np.testing.assert_array_equal(saved.test_indices, result.test_indices)
    np.testing.assert_array_equal(saved.clusters.labels_, clusters.labels_)
    assert saved.domain is not None


# A child process whose second fit dies of a segmentation fault, as sGDML's solve did
# in multithreaded OpenBLAS: no Python exception, no cleanup.
DYING_CHILD = """
import dataclasses, json, os, signal, sys
from ase_flatten.data import read_dataset
from ase_flatten.selection import flatten

real = flatten._train
fits = []

def dies_in_the_second_iteration(*args):
    fits.append(1)
    if len(fits) == 2:
        os.kill(os.getpid(), signal.SIGSEGV)
    return real(*args)

flatten._train = dies_in_the_second_iteration
config = flatten.SelectionConfig(**json.loads(sys.argv[3]))
flatten.run_selection(read_dataset(sys.argv[1]), config, sys.argv[2])
"""


def test_a_fit_that_crashes_the_process_keeps_finished_iterations(
    reference_run, xtb_dataset, tmp_path
):
    data = tmp_path / "ethanol.npz"
    np.savez(
        data,
        z=xtb_dataset.numbers,
        R=xtb_dataset.positions,
        E=xtb_dataset.energies,
        F=xtb_dataset.forces,
        e_unit="eV",
        r_unit="Ang",
    )
    config = json.dumps(dataclasses.asdict(SMALL))
    child = subprocess.run(
        [sys.executable, "-c", DYING_CHILD, str(data), str(tmp_path / "r"), config],
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGSEGV, child.stderr[-2000:]
    checkpoint = json.loads((tmp_path / "r" / "checkpoint.json").read_text())
    assert checkpoint["completed_iterations"] == 1
    assert not (tmp_path / "r" / "model.json").exists()
    resumed = run_selection(xtb_dataset, SMALL, tmp_path / "r", resume=True)
    np.testing.assert_array_equal(resumed.train_indices, reference_run.train_indices)


def test_validation_frames_never_come_from_the_test_split(xtb_dataset, tmp_path):
    # sigma from a grid on up to 200 validation frames: every frame outside the
    # training set and the test split is taken, and a test frame would be too
    result = run(
        xtb_dataset, tmp_path / "v", iterations=1, params={"sigma_grid": [10, 20]}
    )
    train, test = result.train_indices, result.test_indices
    validation = np.load(result.directory / "validation_indices.npy")
    assert len(train) == 28 and len(test) == 30 and len(validation) == 92
    assert not np.intersect1d(validation, test).size
    assert not np.intersect1d(validation, train).size
    everything = np.concatenate([train, test, validation])
    np.testing.assert_array_equal(np.sort(everything), np.arange(150))


@pytest.mark.parametrize(
    "change",
    [{"criterion": "centroid"}, {"criterion": "random"}, {"allocation": "size"}],
)
def test_variant_flags_change_the_picks(reference_run, xtb_dataset, tmp_path, change):
    variant = run(xtb_dataset, tmp_path / "v", iterations=1, **change)
    first = reference_run.history[0]
    assert variant.history[0]["why"]["union_frames"] == first["why"]["union_frames"]
    assert variant.history[0]["added"] != first["added"]


def test_threshold_and_error_sample_variants(reference_run, xtb_dataset, tmp_path):
    mean = run(xtb_dataset, tmp_path / "mean", iterations=1, threshold="mean")
    first = reference_run.history[0]["why"]
    assert mean.history[0]["why"]["threshold"] != first["threshold"]
    mass = run(xtb_dataset, tmp_path / "mass", iterations=1, threshold="mass")
    why, rmse = mass.history[0]["why"], mass.history[0]["pool_cluster_force_rmse"]
    high = [rmse[c] for c in why["high_clusters"]]
    assert why["threshold"] == high[-1] == min(high)  # the last cluster that joined
    assert len(mass.history[0]["added"]) == 8
    sampled = run(xtb_dataset, tmp_path / "sample", iterations=1, error_sample=3)
    why = sampled.history[0]["why"]
    assert why["evaluated_frames"] <= 3 * 6 < first["evaluated_frames"]
    # the union's frames are predicted as well: the picks need their errors
    assert why["evaluated_frames"] + why["union_frames"] >= why["predicted_frames"]
    assert why["predicted_frames"] > why["evaluated_frames"]
    assert first["predicted_frames"] == first["evaluated_frames"]
    assert len(sampled.history[0]["added"]) == 8


def test_an_error_sample_of_every_frame_picks_what_the_full_pool_picks(
    reference_run, xtb_dataset, tmp_path
):
    """A sample as large as every cluster is the whole pool: the same estimates,
    the same threshold and the same picks (the sample draws its own random
    numbers, the fine clusters and picks the ones they draw without it)."""
    whole = run(xtb_dataset, tmp_path / "whole", error_sample=10_000)
    for mine, full in zip(whole.history[:-1], reference_run.history[:-1], strict=True):
        assert mine["why"]["evaluated_frames"] == full["why"]["evaluated_frames"]
        assert mine["why"]["threshold"] == pytest.approx(full["why"]["threshold"])
        assert mine["added"] == full["added"]
    np.testing.assert_array_equal(whole.train_indices, reference_run.train_indices)


def test_bad_configurations(xtb_dataset, tmp_path):
    with pytest.raises(InputError, match="only 120 frames are outside the test split"):
        run(xtb_dataset, tmp_path / "big", init=100, step=20)
    whole = r"^error_sample must be >= 1 .* \(error_sample=None: predict the whole"
    with pytest.raises(InputError, match=whole):
        run(xtb_dataset, tmp_path / "k0", error_sample=0)
    assert SelectionConfig().error_sample == 10  # the measured default
    with pytest.raises(InputError, match="unknown criterion"):
        run(xtb_dataset, tmp_path / "c", criterion="best")
    with pytest.raises(InputError, match="checkpoint.json: no checkpoint|no run"):
        run_selection(xtb_dataset, SMALL, tmp_path / "none", resume=True)


def test_diverse_share_adds_spread_frames(xtb_dataset, reference_run, tmp_path):
    """--diverse-share 0.25: 2 of every 8 frames by farthest-point sampling, the
    rest by the paper's rules; sizes and exclusions as without it."""
    from scipy.spatial.distance import cdist

    from ase_flatten.descriptors import pairwise_distances

    result = run(xtb_dataset, tmp_path / "diverse", diverse_share=0.25)
    train, test = result.train_indices, result.test_indices
    assert len(train) == 36 and len(np.unique(train)) == 36
    assert not np.isin(train, test).any()
    X = pairwise_distances(xtb_dataset.positions)
    before = set(train) - {i for h in result.history[:-1] for i in h["added"]}
    for entry in result.history[:-1]:
        diverse = entry["why"]["diverse_frames"]
        assert len(entry["added"]) == 8 and len(diverse) == 2
        assert set(diverse) <= set(entry["added"])
        chosen = sorted(before | (set(entry["added"]) - set(diverse)))
        pool = np.setdiff1d(np.arange(len(X)), np.concatenate([test, chosen]))
        far = cdist(X[pool], X[chosen]).min(axis=1)
        assert cdist(X[diverse[:1]], X[chosen]).min() == pytest.approx(far.max())
        before |= set(entry["added"])
    assert reference_run.history[0]["why"]["diverse_frames"] == []
    with pytest.raises(InputError, match="^diverse_share must be in"):
        run(xtb_dataset, tmp_path / "bad", diverse_share=1.0)


@pytest.mark.parametrize("pick", ["fps", "ranked"])
def test_pick_rules_beyond_the_paper(xtb_dataset, reference_run, tmp_path, pick):
    """--pick fps / ranked: the same sizes and exclusions, other frames, chosen
    without fine clusters, and each pick a frame whose error was measured."""
    result = run(xtb_dataset, tmp_path / pick, pick=pick)
    train, test = result.train_indices, result.test_indices
    assert len(train) == 36 and len(np.unique(train)) == 36
    assert not np.isin(train, test).any()
    assert set(train) != set(reference_run.train_indices)
    for entry in result.history[:-1]:
        why = entry["why"]
        assert len(entry["added"]) == 8 and why["n_fine"] == 0
        assert np.all(np.isfinite(why["added_frame_rmse"]))
        if pick == "fps":  # every pick at or above the threshold, or a top error
            assert min(why["added_frame_rmse"]) > 0.5 * why["threshold"]
    with pytest.raises(InputError, match="unknown pick"):
        run(xtb_dataset, tmp_path / "bad", pick="best")
