"""Real sGDML training at tiny sizes (tens of frames of GFN2-xTB ethanol)."""

import logging

import numpy as np
import pytest

from ase_flatten.backends import make_backend
from ase_flatten.backends.sgdml import MODEL_FILE, SGDMLBackend, plain_arrays
from ase_flatten.exceptions import InputError
from ase_flatten.testing import BackendTests
from tests.helpers import PlantedPayload

TRAIN = np.arange(0, 150, 5)  # 30 frames
TEST = np.setdiff1d(np.arange(150), TRAIN)


def force_rmse(forces, reference):
    return float(np.sqrt(np.mean((forces - reference) ** 2)))


@pytest.mark.slow
class TestSGDML(BackendTests):
    """The backend contract, and what only sGDML does."""

    backend = "sgdml"
    params = {"sigma": 20}
    dataset_fixture = "xtb_dataset"
    train_idx = TRAIN
    val_idx = None
    test_idx = TEST
    max_force_rmse_share = 0.5  # learned something real on 30 frames
    max_energy_rmse = 0.1  # eV; the absolute energies are about -310 eV
    gradient_atol = 1e-4
    bad_params = [({"sigma": -1}, "sigma must be an integer >= 1 or null")]

    def test_trains_on_exactly_the_given_frames(self, fitted):
        # sGDML was handed exactly these frames and used all of them, in order
        np.testing.assert_array_equal(fitted.model_["idxs_train"], np.arange(30))
        assert fitted.model_["alphas_F"].shape == (len(TRAIN) * 27,)
        assert fitted.sigma_ == 20 and fitted.solver_ == "analytic"
        assert len(fitted.model_["perms"]) > 1  # ethanol's methyl/hydroxyl symmetries

    def test_training_frames_are_fitted_better(self, fitted, dataset):
        _, forces = fitted.predict(dataset, TEST)
        _, train_forces = fitted.predict(dataset, TRAIN)
        assert force_rmse(train_forces, dataset.forces[TRAIN]) < 0.8 * force_rmse(
            forces, dataset.forces[TEST]
        )

    def test_same_random_state_same_model(self, fitted, dataset):
        np.random.seed(1234)
        expected = np.random.random(3)
        np.random.seed(1234)
        super().test_same_random_state_same_model(fitted, dataset)
        # sGDML seeds numpy's global generator for its fit; the caller's state is back
        np.testing.assert_array_equal(np.random.random(3), expected)

    def test_saved_without_pickle_and_sgdmls_own_calculator_reads_it(
        self, fitted, dataset, tmp_path
    ):
        fitted.save(tmp_path / "m")
        with np.load(tmp_path / "m" / MODEL_FILE, allow_pickle=False) as npz:
            saved = dict(npz)  # raises if any field needed pickle
        assert "md5_test" not in saved  # None in sGDML's dict: dropped
        assert np.isnan(saved["f_err"]["rmse"]) and "e_err" in saved  # dicts kept
        atoms = dataset.to_atoms(int(TEST[0]))
        atoms.calc = fitted.bare_calculator(tmp_path / "m")
        energies, forces = fitted.predict_positions(atoms.positions[None])
        assert atoms.get_potential_energy() == pytest.approx(energies[0], abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), forces[0], atol=1e-8)

    def test_a_pickle_planted_in_the_model_file_never_runs(
        self, fitted, dataset, tmp_path
    ):
        marker = tmp_path / "payload_ran"
        (tmp_path / "m").mkdir()
        path = tmp_path / "m" / MODEL_FILE
        payload = np.array([PlantedPayload(marker)], dtype=object)
        np.savez_compressed(path, **plain_arrays(fitted.model_), payload=payload)
        with pytest.raises(InputError, match=f"{MODEL_FILE}: holds pickled Python"):
            SGDMLBackend.load(tmp_path / "m", dataset.numbers, fitted.params)
        with pytest.raises(InputError, match="never loaded"):
            fitted.bare_calculator(tmp_path / "m")  # sgdml itself would unpickle
        assert not marker.exists()
        # the payload is real: reading the file as before (allow_pickle=True) runs it
        with np.load(path, allow_pickle=True) as npz:
            npz["payload"]
        assert marker.is_dir()

    def test_a_model_in_the_old_pickled_format_says_retrain(
        self, fitted, dataset, tmp_path
    ):
        (tmp_path / "m").mkdir()
        np.savez_compressed(tmp_path / "m" / MODEL_FILE, **fitted.model_)  # as before
        with pytest.raises(InputError, match="retrain it with `ase-flatten train`"):
            SGDMLBackend.load(tmp_path / "m", dataset.numbers, fitted.params)

    def test_iterative_solver_when_memory_is_short(self, fitted, dataset):
        # 30 frames need ~16 MB analytically: allow 12 MB and sGDML switches to CG
        backend = make_backend("sgdml", sigma=20, max_memory_gb=0.012)
        backend.fit(dataset, TRAIN)
        assert backend.solver_ == "cg"
        _, f_cg = backend.predict(dataset, TEST)
        _, f_an = fitted.predict(dataset, TEST)
        assert np.abs(f_cg - f_an).max() < 0.01  # eV/Å, same model up to CG tolerance

    def test_logging_left_alone(self, fitted):
        assert logging.getLoggerClass() is logging.Logger
        assert hasattr(np, "in1d")


@pytest.mark.slow
def test_sigma_chosen_on_validation_frames(xtb_dataset):
    val = TEST[::4]
    backend = make_backend("sgdml", sigma_grid=[2, 20, 200]).fit(
        xtb_dataset, TRAIN, val
    )
    assert sorted(backend.validation_) == [2, 20, 200]
    np.testing.assert_array_equal(backend.validation_indices_, val)
    best = min(backend.validation_, key=backend.validation_.get)
    assert backend.sigma_ == best
    _, forces = backend.predict(xtb_dataset, val)
    rmse = force_rmse(forces, xtb_dataset.forces[val])
    assert rmse == pytest.approx(backend.validation_[best], rel=1e-9)


def test_bad_input(xtb_dataset, tmp_path):
    with pytest.raises(InputError, match="out of range"):
        make_backend("sgdml", sigma=20).fit(xtb_dataset, [0, 1000])
    with pytest.raises(InputError, match="duplicates"):
        make_backend("sgdml", sigma=20).fit(xtb_dataset, [0, 1, 1])
    with pytest.raises(InputError, match="overlap"):
        make_backend("sgdml").fit(xtb_dataset, [0, 1, 2], [2, 3])
    with pytest.raises(InputError, match="validation frames overlap the held-out"):
        make_backend("sgdml").fit(xtb_dataset, [0, 1, 2], [3, 4], held_out=[4])
    with pytest.raises(InputError, match="training frames overlap the held-out"):
        make_backend("sgdml").fit(xtb_dataset, [0, 1, 2], held_out=[2])
    with pytest.raises(InputError, match="outside the training set and the test"):
        make_backend("sgdml").fit(xtb_dataset, TRAIN, held_out=TEST)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "sgdml_model.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match="sgdml_model.npz: cannot load sGDML model"):
        SGDMLBackend.load(tmp_path / "m", xtb_dataset.numbers, {})
