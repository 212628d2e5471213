"""SchNetBackend: real schnetpack training at tiny sizes on xTB ethanol frames."""

import json
import logging
import os

import numpy as np
import pytest

pytest.importorskip("schnetpack")

from ase_flatten.backends.schnet import (  # noqa: E402
    LEGACY_FILE,
    MODEL_FILE,
    SETTINGS_FILE,
    SchNetBackend,
)
from ase_flatten.exceptions import InputError  # noqa: E402
from ase_flatten.testing import BackendTests  # noqa: E402
from tests.helpers import (
    PlantedPayload,  # noqa: E402
    one_thread,  # noqa: F401  (autouse fixture)
)

TINY = {"n_atom_basis": 16, "n_interactions": 2, "n_rbf": 10, "batch_size": 10}
TRAIN = np.arange(0, 60, 2)  # 30 frames
VALID = np.arange(1, 40, 2)  # 20 frames between them
TEST = np.arange(100, 120)
GRADIENT_ATOL = 0.03  # eV/Å: float32 and a 1e-3 Å step (forces up to ~3 eV/Å)


def fit(dataset, val_idx=VALID, random_state=0, **params):
    backend = SchNetBackend(random_state=random_state, **{**TINY, **params})
    return backend.fit(dataset, TRAIN, val_idx)


def force_rmse(backend, dataset, idx):
    _, forces = backend.predict(dataset, idx, progress=False)
    return float(np.sqrt(np.mean((forces - dataset.forces[idx]) ** 2)))


@pytest.mark.slow
class TestSchNet(BackendTests):
    """The backend contract, and what only SchNet does."""

    backend = "schnet"
    params = {**TINY, "max_epochs": 40, "lr": 5e-3}  # up to 40 epochs
    dataset_fixture = "xtb_dataset"
    train_idx = TRAIN
    val_idx = VALID
    test_idx = TEST
    max_force_rmse_share = 1.0  # beats predicting zero forces
    max_energy_rmse = 0.5  # eV around the reference (the training mean added back)
    batch_atol = 1e-5  # float32
    load_atol = 1e-6
    gradient_step = 1e-3
    gradient_atol = GRADIENT_ATOL
    determinism_params = {"max_epochs": 3}
    seed_changes_model = True
    bad_params = [
        ({"loss": "huber"}, "loss must be one of energy, forces, mixed, got 'huber'"),
        ({"energy_weight": 1.5}, r"energy_weight must be a number in \(0, 1\)"),
        ({"n_interactions": 0}, "n_interactions must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"cutoff": -1.0}, "cutoff must be a number > 0"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"depth": 3}, "schnet: unknown parameter 'depth'"),
    ]

    def test_training_lowers_the_force_error(self, fitted, dataset):
        one_epoch = fit(dataset, max_epochs=1, lr=5e-3)
        history = fitted.history_
        assert history["n_train"] == 30 and history["n_valid"] == 20
        assert 1 <= history["best_epoch"] <= history["epochs"] <= 40
        assert one_epoch.history_["epochs"] == 1
        # validation and held-out force errors both drop well below the 1-epoch
        # model's
        assert history["val_force_rmse"] < 0.8 * one_epoch.history_["val_force_rmse"]
        assert force_rmse(fitted, dataset, VALID) == pytest.approx(
            history["val_force_rmse"]
        )
        assert force_rmse(fitted, dataset, TEST) < 0.8 * force_rmse(
            one_epoch, dataset, TEST
        )

    # schnetpack's ASENeighborList hands torch tensors to ase.Atoms (numpy 2 warns)
    @pytest.mark.filterwarnings("ignore:__array__ implementation")
    def test_bare_spk_calculator_agrees(self, fitted, dataset, tmp_path):
        fitted.save(tmp_path)
        atoms = dataset.to_atoms(int(TEST[5]))
        atoms.calc = fitted.bare_calculator(tmp_path)
        energies, forces = fitted.predict_positions(atoms.positions[None])
        assert atoms.get_potential_energy() == pytest.approx(energies[0], abs=1e-4)
        np.testing.assert_allclose(atoms.get_forces(), forces[0], atol=1e-4)

    def test_saved_weights_are_a_plain_state_dict(self, fitted, tmp_path):
        import torch

        fitted.save(tmp_path)
        state = torch.load(tmp_path / MODEL_FILE, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        arch = json.loads((tmp_path / SETTINGS_FILE).read_text())
        assert {k: arch[k] for k in TINY if k != "batch_size"} == {
            k: v for k, v in TINY.items() if k != "batch_size"
        }
        assert arch["energy_mean"] < 0  # eV per atom of the training frames

    def test_a_pickle_planted_in_the_weights_never_runs(
        self, fitted, dataset, tmp_path
    ):
        import torch

        marker = tmp_path / "payload_ran"
        model = tmp_path / "model"
        fitted.save(model)
        state = {**fitted.model_.state_dict(), "extra": PlantedPayload(marker)}
        torch.save(state, model / MODEL_FILE)
        with pytest.raises(InputError, match=r"must be a plain tensor state dict"):
            SchNetBackend.load(model, dataset.numbers, fitted.params)
        with pytest.raises(InputError, match=r"must be a plain tensor state dict"):
            fitted.bare_calculator(model)
        assert not marker.exists()
        torch.load(model / MODEL_FILE, weights_only=False)  # the payload is real
        assert marker.is_dir()

    def test_a_model_in_the_old_pickled_format_says_retrain(
        self, fitted, dataset, tmp_path
    ):
        import torch

        model = tmp_path / "model"
        fitted.save(model)
        (model / MODEL_FILE).unlink()
        torch.save(fitted.model_, model / LEGACY_FILE)  # how it was saved before
        with pytest.raises(InputError, match=f"{LEGACY_FILE}: a SchNet model saved"):
            SchNetBackend.load(model, dataset.numbers, fitted.params)


@pytest.mark.slow
def test_the_loss_option_changes_training(xtb_dataset):
    energy = fit(xtb_dataset, max_epochs=3, loss="energy")
    forces = fit(xtb_dataset, max_epochs=3, loss="forces")
    _, f_energy = energy.predict(xtb_dataset, TEST, progress=False)
    _, f_forces = forces.predict(xtb_dataset, TEST, progress=False)
    assert np.abs(f_energy - f_forces).max() > 1e-3
    assert energy._loss_weights() == (1.0, 0.0)
    assert forces._loss_weights() == (0.0, 1.0)
    assert SchNetBackend(loss="mixed", energy_weight=0.2)._loss_weights() == (
        0.2,
        0.8,
    )


@pytest.mark.slow
def test_default_validation_frames_avoid_the_training_frames(xtb_dataset, caplog):
    with caplog.at_level(logging.INFO, logger="ase_flatten.backends.schnet"):
        backend = fit(xtb_dataset, val_idx=None, max_epochs=1, n_valid=12)
    assert backend.history_["n_valid"] == 12
    records = [r for r in caplog.records if r.name == "ase_flatten.backends.schnet"]
    assert len(records) == 1 and "1 epochs" in records[0].getMessage()
    default = SchNetBackend(**TINY)
    assert default.params["n_valid"] is None


@pytest.mark.slow
def test_fit_leaves_the_working_directory_empty(xtb_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(xtb_dataset, max_epochs=1)
    assert list(tmp_path.iterdir()) == []
    assert os.getcwd() == str(tmp_path)


@pytest.mark.slow
def test_fit_is_quiet(xtb_dataset, capfd):
    fit(xtb_dataset, max_epochs=1)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_load_of_a_missing_or_garbage_file_is_an_input_error(xtb_dataset, tmp_path):
    with pytest.raises(InputError, match="cannot load SchNet model .no such file"):
        SchNetBackend.load(tmp_path, xtb_dataset.numbers, {})
    arch = {"n_atom_basis": 8, "n_interactions": 1, "n_rbf": 4, "cutoff": 5.0}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({**arch, "energy_mean": 0.0}))
    (tmp_path / MODEL_FILE).write_bytes(b"this is not a torch file")
    with pytest.raises(InputError, match=f"{MODEL_FILE}: cannot load SchNet model w"):
        SchNetBackend.load(tmp_path, xtb_dataset.numbers, {})
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({**arch, "n_rbf": -1}))
    with pytest.raises(InputError, match=f"{SETTINGS_FILE}: cannot load SchNet mod"):
        SchNetBackend.load(tmp_path, xtb_dataset.numbers, {})


@pytest.mark.slow
def test_validation_frames_avoid_the_held_out_frames(xtb_dataset):
    held_out = np.arange(60, 150)
    backend = SchNetBackend(**{**TINY, "max_epochs": 1, "n_valid": 100})
    backend.fit(xtb_dataset, TRAIN, held_out=held_out)
    validation = backend.validation_indices_
    # everything outside the training and held-out frames, and nothing else
    np.testing.assert_array_equal(validation, np.setdiff1d(np.arange(60), TRAIN))


@pytest.mark.slow
def test_training_on_every_frame_runs_without_validation(xtb_dataset, caplog):
    small = xtb_dataset.subset(np.arange(12))
    backend = SchNetBackend(**{**TINY, "max_epochs": 2})
    with caplog.at_level(logging.WARNING, logger="ase_flatten.backends.schnet"):
        backend.fit(small, np.arange(12))
    assert "no frames left for validation" in caplog.text
    assert backend.history_["n_valid"] == 0 and backend.history_["epochs"] == 2
    energies, forces = backend.predict(small, progress=False)
    assert np.isfinite(energies).all() and forces.shape == (12, 9, 3)
