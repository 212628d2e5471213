"""Real sGDML training at tiny sizes (tens of frames of GFN2-xTB ethanol)."""

import logging

import numpy as np
import pytest

from ase_flatten.backends import make_backend
from ase_flatten.backends.sgdml import MODEL_FILE, SGDMLBackend, plain_arrays
from ase_flatten.exceptions import InputError
from tests.helpers import PlantedPayload

TRAIN = np.arange(0, 150, 5)  # 30 frames
TEST = np.setdiff1d(np.arange(150), TRAIN)


def force_rmse(forces, reference):
    return float(np.sqrt(np.mean((forces - reference) ** 2)))


@pytest.fixture(scope="module")
def trained(xtb_dataset):
    return make_backend("sgdml", sigma=20).fit(xtb_dataset, TRAIN)


def test_trains_on_exactly_the_given_frames(trained, xtb_dataset):
    # sGDML was handed exactly these frames and used all of them, in order
    np.testing.assert_array_equal(trained.model_["idxs_train"], np.arange(len(TRAIN)))
    assert trained.model_["alphas_F"].shape == (len(TRAIN) * 27,)
    assert trained.sigma_ == 20 and trained.solver_ == "analytic"
    assert len(trained.model_["perms"]) > 1  # ethanol's methyl/hydroxyl symmetries


def test_predicts_in_ev_and_angstrom(trained, xtb_dataset):
    energies, forces = trained.predict(xtb_dataset, TEST)
    assert energies.shape == (len(TEST),) and forces.shape == (len(TEST), 9, 3)
    assert energies.dtype == np.float64
    spread = xtb_dataset.forces[TEST].std()
    rmse = force_rmse(forces, xtb_dataset.forces[TEST])
    assert rmse < 0.5 * spread  # learned something real on 30 frames
    e_rmse = np.sqrt(np.mean((energies - xtb_dataset.energies[TEST]) ** 2))
    assert e_rmse < 0.1  # eV; the absolute energies are about -310 eV
    # the training frames are fitted better than unseen ones
    _, train_forces = trained.predict(xtb_dataset, TRAIN)
    assert force_rmse(train_forces, xtb_dataset.forces[TRAIN]) < 0.8 * rmse


def test_save_load_same_numbers(trained, xtb_dataset, tmp_path):
    trained.save(tmp_path / "m")
    loaded = SGDMLBackend.load(tmp_path / "m", xtb_dataset.numbers, trained.params)
    a = trained.predict(xtb_dataset, TEST[:20])
    b = loaded.predict(xtb_dataset, TEST[:20])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_saved_without_pickle_and_sgdmls_own_calculator_reads_it(
    trained, xtb_dataset, tmp_path
):
    trained.save(tmp_path / "m")
    with np.load(tmp_path / "m" / MODEL_FILE, allow_pickle=False) as npz:
        saved = dict(npz)  # raises if any field needed pickle
    assert "md5_test" not in saved  # None in sGDML's dict: dropped
    assert np.isnan(saved["f_err"]["rmse"]) and "e_err" in saved  # dicts kept
    atoms = xtb_dataset.to_atoms(int(TEST[0]))
    atoms.calc = trained.bare_calculator(tmp_path / "m")
    energies, forces = trained.predict_positions(atoms.positions[None])
    assert atoms.get_potential_energy() == pytest.approx(energies[0], abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), forces[0], atol=1e-8)


def test_a_pickle_planted_in_the_model_file_never_runs(trained, xtb_dataset, tmp_path):
    marker = tmp_path / "payload_ran"
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / MODEL_FILE
    payload = np.array([PlantedPayload(marker)], dtype=object)
    np.savez_compressed(path, **plain_arrays(trained.model_), payload=payload)
    with pytest.raises(InputError, match=f"{MODEL_FILE}: holds pickled Python obj"):
        SGDMLBackend.load(tmp_path / "m", xtb_dataset.numbers, trained.params)
    with pytest.raises(InputError, match="never loaded"):
        trained.bare_calculator(tmp_path / "m")  # sgdml itself would unpickle
    assert not marker.exists()
    # the payload is real: reading the file as before (allow_pickle=True) runs it
    with np.load(path, allow_pickle=True) as npz:
        npz["payload"]
    assert marker.is_dir()


def test_a_model_in_the_old_pickled_format_says_retrain(trained, xtb_dataset, tmp_path):
    (tmp_path / "m").mkdir()
    np.savez_compressed(tmp_path / "m" / MODEL_FILE, **trained.model_)  # as before
    with pytest.raises(InputError, match="retrain it with `ase-flatten train`"):
        SGDMLBackend.load(tmp_path / "m", xtb_dataset.numbers, trained.params)


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


def test_iterative_solver_when_memory_is_short(xtb_dataset, trained):
    # 30 frames need ~16 MB analytically: allow 12 MB and sGDML switches to CG
    backend = make_backend("sgdml", sigma=20, max_memory_gb=0.012)
    backend.fit(xtb_dataset, TRAIN)
    assert backend.solver_ == "cg"
    _, f_cg = backend.predict(xtb_dataset, TEST)
    _, f_an = trained.predict(xtb_dataset, TEST)
    assert np.abs(f_cg - f_an).max() < 0.01  # eV/Å, same model up to CG tolerance


def test_deterministic_and_one_trainer_per_process(xtb_dataset, trained):
    np.random.seed(1234)
    expected = np.random.random(3)
    np.random.seed(1234)
    again = make_backend("sgdml", sigma=20).fit(xtb_dataset, TRAIN)
    # sGDML seeds numpy's global generator for its fit; the caller's state is back
    np.testing.assert_array_equal(np.random.random(3), expected)
    np.testing.assert_array_equal(
        again.predict(xtb_dataset, TEST[:5])[1],
        trained.predict(xtb_dataset, TEST[:5])[1],
    )


def test_logging_left_alone(trained):
    assert logging.getLoggerClass() is logging.Logger
    assert hasattr(np, "in1d")


def test_bad_input(xtb_dataset, tmp_path):
    with pytest.raises(InputError, match="unknown parameter 'sigmaa'"):
        make_backend("sgdml", sigmaa=3)
    with pytest.raises(InputError, match="sigma must be an integer >= 1 or null"):
        make_backend("sgdml", sigma=-1)
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
    with pytest.raises(InputError, match="not trained"):
        make_backend("sgdml").predict(xtb_dataset)
