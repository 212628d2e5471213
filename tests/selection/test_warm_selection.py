"""The flattening loop with warm starts: real SchNet at a tiny size, 150 frames."""

import dataclasses
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # selection loops that train models

pytest.importorskip("schnetpack")

from ase_flatten.exceptions import InputError  # noqa: E402
from ase_flatten.selection import flatten  # noqa: E402
from ase_flatten.selection.flatten import SelectionConfig, run_selection  # noqa: E402

WARM = SelectionConfig(
    backend="schnet",
    params={
        "n_atom_basis": 16,
        "n_interactions": 2,
        "n_rbf": 10,
        "lr": 5e-3,
        "max_epochs": 8,
        "warm_epochs": 3,
        "device": "cpu",
    },
    init=20,
    step=8,
    iterations=2,
    n_geometry=3,
    n_energy=2,
    n_fine=12,
    test_fraction=0.2,
    warm_start=True,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def warm_run(xtb_dataset, tmp_path_factory):
    return run_selection(xtb_dataset, WARM, tmp_path_factory.mktemp("warm") / "run")


def test_each_fit_after_the_first_continues_from_the_previous_model(warm_run):
    history = warm_run.history
    assert [h["n_train"] for h in history] == [20, 28, 36]
    # the final model is trained from scratch unless warm_final says otherwise
    assert [h["fit"]["warm_start"] for h in history] == [False, True, False]
    assert history[0]["fit"]["epochs"] <= 8 and history[-1]["fit"]["epochs"] <= 8
    assert history[1]["fit"]["epochs"] <= 3
    # the last two iterations' models stay, for a resume to continue from
    warm = warm_run.directory / "warm"
    assert sorted(p.name for p in warm.iterdir()) == ["iteration_00", "iteration_01"]
    assert (warm / "iteration_01" / "schnet_weights.pt").is_file()
    saved = json.loads((warm_run.directory / "config.json").read_text())
    assert saved["config"]["warm_start"] is True


@pytest.mark.parametrize("where", ["_iteration", "_checkpoint"])
def test_an_interrupted_warm_run_resumes_to_the_same_frames(
    warm_run, xtb_dataset, tmp_path, monkeypatch, where
):
    """Killed in iteration 1's fit, or after its model was saved but before the
    checkpoint committed it: the resume continues from iteration 0's model."""
    real = getattr(flatten, where)
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == (2 if where == "_iteration" else 3):
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(flatten, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_selection(xtb_dataset, WARM, tmp_path / "r")
    checkpoint = json.loads((tmp_path / "r" / "checkpoint.json").read_text())
    assert checkpoint["completed_iterations"] == 1
    monkeypatch.setattr(flatten, where, real)
    resumed = run_selection(xtb_dataset, WARM, tmp_path / "r", resume=True)
    np.testing.assert_array_equal(resumed.train_indices, warm_run.train_indices)
    assert [h["added"] for h in resumed.history[:-1]] == [
        h["added"] for h in warm_run.history[:-1]
    ]
    assert resumed.history[-1]["test"]["force_rmse"] == pytest.approx(
        warm_run.history[-1]["test"]["force_rmse"], abs=1e-12
    )


def test_a_warm_run_missing_its_model_is_refused_on_resume(
    warm_run, xtb_dataset, tmp_path, monkeypatch
):
    real = flatten._iteration

    def once(*args):
        if args[1] == 1:  # the iteration number: _iteration(run, iteration)
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(flatten, "_iteration", once)
    with pytest.raises(KeyboardInterrupt):
        run_selection(xtb_dataset, WARM, tmp_path / "r")
    monkeypatch.setattr(flatten, "_iteration", real)
    import shutil

    shutil.rmtree(tmp_path / "r" / "warm" / "iteration_00")
    with pytest.raises(InputError, match="iteration_00: missing; a warm-started"):
        run_selection(xtb_dataset, WARM, tmp_path / "r", resume=True)
    # a warm run is a run of its own: resuming it cold is refused
    cold = dataclasses.replace(WARM, warm_start=False)
    with pytest.raises(InputError, match=r"other settings \(warm_start\)"):
        run_selection(xtb_dataset, cold, tmp_path / "r", resume=True)


def test_warm_final_continues_the_final_fit_too(warm_run, xtb_dataset, tmp_path):
    config = dataclasses.replace(WARM, warm_final=True)
    result = run_selection(xtb_dataset, config, tmp_path / "f")
    history = result.history
    assert [h["fit"]["warm_start"] for h in history] == [False, True, True]
    assert history[-1]["fit"]["epochs"] <= 3
    # the same iterations as the run with a cold final model
    np.testing.assert_array_equal(result.train_indices, warm_run.train_indices)
    with pytest.raises(InputError, match="^warm_final needs warm_start=True"):
        run_selection(
            xtb_dataset,
            dataclasses.replace(config, warm_start=False),
            tmp_path / "g",
        )


def test_warm_start_needs_a_backend_that_has_it(xtb_dataset, tmp_path):
    config = dataclasses.replace(WARM, backend="gap", params={})
    with pytest.raises(InputError, match="^warm_start: the gap backend cannot"):
        run_selection(xtb_dataset, config, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_sgdml_warm_start_keeps_the_first_fits_sigma(xtb_dataset, tmp_path):
    """sGDML's warm start kept: the grid searched once, its sigma kept after that."""
    pytest.importorskip("sgdml")
    from ase_flatten.models import SavedModel

    params = {"sigma_grid": [2, 10, 40], "warm_sigma": "keep"}
    config = dataclasses.replace(WARM, backend="sgdml", params=params, warm_final=True)
    result = run_selection(xtb_dataset, config, tmp_path / "s")
    assert [h["fit"]["warm_start"] for h in result.history] == [False, True, True]
    final = SavedModel.load(result.directory).backend
    first = flatten._warm_model(result.directory, config, xtb_dataset, 1)
    assert final.sigma_ == first.sigma_
    # a cold final model searches the grid again on the final set
    cold = run_selection(
        xtb_dataset, dataclasses.replace(config, warm_final=False), tmp_path / "c"
    )
    np.testing.assert_array_equal(cold.train_indices, result.train_indices)
    assert cold.history[-1]["fit"]["warm_start"] is False
