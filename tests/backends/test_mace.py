"""MACEBackend: real mace-torch training at tiny sizes on xTB ethanol frames."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

# find_spec, not importorskip: a bare `import mace` sets
# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for the whole test session (see import_mace)
if importlib.util.find_spec("mace") is None:
    pytest.skip("mace-torch is not installed (extra 'mace')", allow_module_level=True)

from ase_flatten.backends.mace import (  # noqa: E402
    SETTINGS_FILE,
    STATE_FILE,
    MACEBackend,
)
from ase_flatten.exceptions import InputError  # noqa: E402
from ase_flatten.models import load_model  # noqa: E402
from ase_flatten.testing import BackendTests  # noqa: E402
from tests.helpers import one_thread  # noqa: F401  (autouse fixture)
from tests.test_cli import run_cli  # noqa: E402

TINY = {
    "num_channels": 8,
    "max_ell": 2,
    "correlation": 2,
    "radial_MLP": [16],
    "batch_size": 5,
}
TRAIN = np.arange(0, 40, 2)  # 20 frames
VALID = np.arange(1, 20, 2)  # 10 frames between them
TEST = np.arange(100, 120)


def fit(dataset, random_state=0, **params):
    backend = MACEBackend(random_state=random_state, **{**TINY, **params})
    return backend.fit(dataset, TRAIN, VALID)


def force_rmse(backend, dataset, idx):
    _, forces = backend.predict(dataset, idx, progress=False)
    return float(np.sqrt(np.mean((forces - dataset.forces[idx]) ** 2)))


@pytest.mark.slow
class TestMACE(BackendTests):
    """The backend contract, and what only MACE does."""

    backend = "mace"
    params = {**TINY, "max_epochs": 25}  # up to 25 epochs
    dataset_fixture = "xtb_dataset"
    train_idx = TRAIN
    val_idx = VALID
    test_idx = TEST
    # beats predicting zero forces on held-out frames by far
    max_force_rmse_share = 0.5
    max_energy_rmse = 0.5  # eV near the reference (the training offset aligned)
    gradient_atol = 1e-5
    determinism_params = {"max_epochs": 2}
    seed_changes_model = True
    bad_params = [
        ({"max_L": 4}, r"max_L must be an integer in \[0, 3\], got 4"),
        ({"gate": "relu"}, "gate must be one of silu, tanh, abs"),
        ({"MLP_irreps": "16x1o"}, "MLP_irreps must be scalar irreps"),
        ({"radial_MLP": []}, "radial_MLP must be a non-empty list"),
        ({"dtype": "float16"}, "dtype must be one of float64, float32"),
        ({"depth": 3}, "mace: unknown parameter 'depth'"),
        ({"energy_weight": 0.0, "forces_weight": 0.0}, "both 0"),
    ]

    def test_training_history(self, fitted, dataset):
        history = fitted.history_
        assert history["n_train"] == 20 and history["n_valid"] == 10
        assert 1 <= history["best_epoch"] <= history["epochs"] <= 25
        assert history["seconds_per_epoch"] > 0
        assert force_rmse(fitted, dataset, VALID) == pytest.approx(
            history["val_force_rmse"]
        )

    def test_a_model_directory_holds_settings_and_weights(self, saved_directory):
        # (the contract loads it: test_flattened_calculator_agrees_with_predict)
        files = saved_directory / "model"
        assert sorted(p.name for p in files.iterdir()) == [SETTINGS_FILE, STATE_FILE]
        settings = json.loads((files / SETTINGS_FILE).read_text())
        assert settings["hidden_irreps"] == "8x0e" and settings["r_max"] == 5.0
        meta = json.loads((saved_directory / "model.json").read_text())
        assert meta["backend"] == "mace"

    def test_mace_own_calculator_agrees(self, fitted, dataset):
        atoms = dataset.to_atoms(int(TEST[6]))
        atoms.calc = fitted.bare_calculator()
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
        energies, forces = fitted.predict_positions(atoms.positions[None])
        assert atoms.get_potential_energy() == pytest.approx(energies[0], abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), forces[0], atol=1e-8)

    def test_a_planted_pickle_payload_is_refused(
        self, saved_directory, dataset, tmp_path
    ):
        import shutil

        import torch

        copy = tmp_path / "model"
        shutil.copytree(saved_directory / "model", copy)
        marker = tmp_path / "payload_ran"
        torch.save({"weights": _Payload(marker)}, copy / STATE_FILE)
        params = json.loads((saved_directory / "model.json").read_text())["params"]
        with pytest.raises(InputError, match=r"mace_state.pt: cannot load MACE model"):
            MACEBackend.load(copy, dataset.numbers, params)
        assert not marker.exists()

    def test_broken_settings_are_input_errors(self, saved_directory, dataset, tmp_path):
        import shutil

        copy = tmp_path / "model"
        shutil.copytree(saved_directory / "model", copy)
        settings = json.loads((copy / SETTINGS_FILE).read_text())
        settings["interaction_cls"] = "os.system"
        (copy / SETTINGS_FILE).write_text(json.dumps(settings))
        with pytest.raises(InputError, match=r"mace.json: cannot load MACE model"):
            MACEBackend.load(copy, dataset.numbers, {})
        (copy / STATE_FILE).unlink()
        with pytest.raises(InputError, match=r"mace_state.pt: cannot load .*no such"):
            MACEBackend.load(copy, dataset.numbers, {})


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious model file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_early_stopping_ends_training(xtb_dataset):
    # at this learning rate the validation loss soon stops falling
    history = fit(xtb_dataset, max_epochs=20, patience=2, lr=0.5).history_
    assert history["epochs"] == history["best_epoch"] + 2 < 20


@pytest.mark.slow  # imports mace-torch in a new process
def test_importing_mace_leaves_torch_load_safe():
    code = (
        "import os; from ase_flatten.backends.mace import import_mace; "
        "import_mace(); print(os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'))"
    )
    env = {k: v for k, v in os.environ.items() if "WEIGHTS_ONLY" not in k}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


@pytest.mark.slow
def test_train_command_line(capsys, xtb_files, tmp_path):
    reference, _ = xtb_files
    params = [f"{k}={json.dumps(v)}" for k, v in {**TINY, "max_epochs": 2}.items()]
    argv = ["train", reference, "--backend", "mace", "--size", "20"]
    argv += [item for p in params for item in ("-p", p)]
    argv += ["--n-geometry", "3", "--n-energy", "2", "-o", tmp_path / "m"]
    status, _, err = run_cli(capsys, *argv)
    assert status == 0, err
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["backend"] == "mace" and meta["n_train"] == 20
    assert (tmp_path / "m" / "model" / STATE_FILE).is_file()
    backend = load_model(tmp_path / "m").backend
    energies, forces = backend.predict_positions(read(reference, 0).positions[None])
    assert forces.shape == (1, 9, 3) and np.isfinite(energies).all()


@pytest.mark.slow
def test_validation_frames_avoid_the_held_out_frames(xtb_dataset):
    held_out = np.arange(40, len(xtb_dataset))  # leaves 20 frames beside TRAIN
    backend = MACEBackend(random_state=0, **TINY, max_epochs=1)
    backend.fit(xtb_dataset, TRAIN, held_out=held_out)
    validation = backend.validation_indices_
    assert len(validation) > 0
    assert not np.intersect1d(validation, held_out).size
    assert not np.intersect1d(validation, TRAIN).size
