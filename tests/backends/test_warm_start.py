"""Warm starts: real schnetpack, mace-torch and sgdml, tiny sizes.

A warm fit continues from a previous model's weights on a grown training set; it
must start where that model was (its first epoch beats a cold fit's), keep the
energy offsets consistent with the new set, repeat itself with the same seed,
and give the same model whether the previous one is in memory or read back from
its files (which is what a resumed selection run does).
"""

import importlib.util

import numpy as np
import pytest

from ase_flatten.data import Dataset
from ase_flatten.exceptions import InputError
from tests.helpers import one_thread  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.slow  # trains SchNet and MACE models

TRAIN = np.arange(0, 60, 2)  # 30 frames
GROWN = np.concatenate([TRAIN, np.arange(60, 100, 2)])  # 20 more
VALID = np.arange(1, 40, 2)  # 20 frames between them
TEST = np.arange(100, 120)


def predictions(backend, dataset, idx=TEST):
    return backend.predict(dataset, idx, progress=False)


# -- SchNet ---------------------------------------------------------------------

SCHNET = {"n_atom_basis": 16, "n_interactions": 2, "n_rbf": 10, "batch_size": 10}


@pytest.fixture(scope="module")
def schnet_previous(xtb_dataset):
    """The model a warm fit continues from: 30 frames, up to 30 epochs."""
    pytest.importorskip("schnetpack")
    from ase_flatten.backends.schnet import SchNetBackend

    backend = SchNetBackend(**SCHNET, max_epochs=30, lr=5e-3)
    return backend.fit(xtb_dataset, TRAIN, VALID)


def schnet(random_state=0, **params):
    from ase_flatten.backends.schnet import SchNetBackend

    params = {**SCHNET, "warm_epochs": 4, **params}
    return SchNetBackend(random_state=random_state, **params)


def test_schnet_warm_fit_starts_from_the_previous_weights(xtb_dataset, schnet_previous):
    warm = schnet().fit(xtb_dataset, GROWN, VALID, init_from=schnet_previous)
    cold = schnet(max_epochs=4).fit(xtb_dataset, GROWN, VALID)
    assert warm.history_["epochs"] <= 4 and cold.history_["epochs"] == 4
    # the first epoch of the warm fit is already far below the cold one's, and
    # near where the previous model ended
    first_warm, first_cold = (
        warm.history_["val_losses"][0],
        cold.history_["val_losses"][0],
    )
    assert first_warm < 0.75 * first_cold
    assert first_warm < 1.1 * schnet_previous.history_["best_val_loss"]
    test_rmse = {
        name: float(np.sqrt(np.mean((f - xtb_dataset.forces[TEST]) ** 2)))
        for name, (_, f) in {
            "warm": predictions(warm, xtb_dataset),
            "cold": predictions(cold, xtb_dataset),
        }.items()
    }
    assert test_rmse["warm"] < 0.9 * test_rmse["cold"]
    record = warm.history_["warm_start"]
    assert record["from_n_train"] == 30 and cold.history_["warm_start"] is None


def test_schnet_warm_fit_takes_the_new_sets_energy_offset(xtb_dataset, schnet_previous):
    """The offset is the grown set's mean; the bias takes the change, so a fit
    that barely moves the weights predicts what the previous model did."""
    n_atoms = len(xtb_dataset.numbers)
    still = schnet(warm_lr=1e-12, warm_epochs=1).fit(
        xtb_dataset, GROWN, VALID, init_from=schnet_previous
    )
    mean = float(np.mean(xtb_dataset.energies[GROWN])) / n_atoms
    assert still._architecture()["energy_mean"] == pytest.approx(mean, abs=1e-12)
    change = mean - schnet_previous._architecture()["energy_mean"]
    assert still.history_["warm_start"]["energy_offset_change"] == pytest.approx(
        change * n_atoms
    )
    assert abs(change * n_atoms) > 1e-3  # the sets differ: the test means something
    energies, forces = predictions(still, xtb_dataset)
    before_e, before_f = predictions(schnet_previous, xtb_dataset)
    np.testing.assert_allclose(energies, before_e, atol=2e-4)
    np.testing.assert_allclose(forces, before_f, atol=2e-4)


def test_schnet_warm_fit_repeats_and_resumes_from_saved_files(
    xtb_dataset, schnet_previous, tmp_path
):
    from ase_flatten.backends.schnet import SchNetBackend

    first = schnet().fit(xtb_dataset, GROWN, VALID, init_from=schnet_previous)
    again = schnet().fit(xtb_dataset, GROWN, VALID, init_from=schnet_previous)
    np.testing.assert_array_equal(
        predictions(first, xtb_dataset)[1], predictions(again, xtb_dataset)[1]
    )
    # the previous model read back from its files gives the same warm model
    schnet_previous.save(tmp_path / "previous")
    loaded = SchNetBackend.load(
        tmp_path / "previous", xtb_dataset.numbers, schnet_previous.params
    )
    resumed = schnet().fit(xtb_dataset, GROWN, VALID, init_from=loaded)
    np.testing.assert_array_equal(
        predictions(first, xtb_dataset)[1], predictions(resumed, xtb_dataset)[1]
    )
    # and the warm model itself round-trips
    first.save(tmp_path / "warm")
    back = SchNetBackend.load(tmp_path / "warm", xtb_dataset.numbers, first.params)
    for a, b in zip(
        predictions(first, xtb_dataset), predictions(back, xtb_dataset), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    seed1 = schnet(random_state=1)
    seed1.fit(xtb_dataset, GROWN, VALID, init_from=schnet_previous)
    assert not np.array_equal(
        predictions(first, xtb_dataset)[1], predictions(seed1, xtb_dataset)[1]
    )


def test_schnet_warm_start_parameter_continues_from_its_own_weights(xtb_dataset):
    """scikit-learn's convention: fit again with warm_start=True continues."""
    backend = schnet(warm_start=True, max_epochs=3, warm_epochs=2)
    backend.fit(xtb_dataset, TRAIN, VALID)
    assert backend.history_["warm_start"] is None  # nothing to continue from yet
    cold_last = backend.history_["val_losses"][-1]
    backend.fit(xtb_dataset, GROWN, VALID)
    assert backend.history_["warm_start"]["from_n_train"] == 30
    assert backend.history_["val_losses"][0] < 1.5 * cold_last


def test_schnet_warm_start_refuses_what_it_cannot_continue(
    xtb_dataset, schnet_previous
):
    with pytest.raises(InputError, match=r"other n_atom_basis \(16, not 32\)"):
        schnet(n_atom_basis=32).fit(
            xtb_dataset, GROWN, VALID, init_from=schnet_previous
        )
    with pytest.raises(InputError, match="schnet model is not trained"):
        schnet().fit(xtb_dataset, GROWN, VALID, init_from=schnet())
    swapped = Dataset(
        xtb_dataset.numbers[::-1].copy(),
        xtb_dataset.positions,
        xtb_dataset.energies,
        xtb_dataset.forces,
        source="swapped.xyz",
    )
    with pytest.raises(InputError, match="swapped.xyz: .*another molecule"):
        schnet().fit(swapped, GROWN, VALID, init_from=schnet_previous)
    with pytest.raises(InputError, match="warm_lr must be a number > 0"):
        schnet(warm_lr=0)
    if importlib.util.find_spec("sgdml") is not None:
        from ase_flatten.backends import backend_class

        sgdml = backend_class("sgdml")(sigma=10)
        with pytest.raises(InputError, match="sgdml model to continue from, got Sch"):
            sgdml.fit(xtb_dataset, TRAIN, init_from=schnet_previous)


# -- MACE -----------------------------------------------------------------------

MACE = {
    "num_channels": 8,
    "max_ell": 2,
    "correlation": 2,
    "radial_MLP": [16],
    "batch_size": 5,
}
MACE_TRAIN = np.arange(0, 40, 2)  # 20 frames
MACE_GROWN = np.concatenate([MACE_TRAIN, np.arange(40, 60, 2)])  # 10 more
MACE_VALID = np.arange(1, 20, 2)


def mace(**params):
    if importlib.util.find_spec("mace") is None:
        pytest.skip("mace-torch is not installed (extra 'mace')")
    from ase_flatten.backends.mace import MACEBackend

    return MACEBackend(**{**MACE, "warm_epochs": 3, **params})


@pytest.fixture(scope="module")
def mace_previous(xtb_dataset):
    return mace(max_epochs=15).fit(xtb_dataset, MACE_TRAIN, MACE_VALID)


def test_mace_warm_fit_starts_from_the_previous_weights(xtb_dataset, mace_previous):
    warm = mace().fit(xtb_dataset, MACE_GROWN, MACE_VALID, init_from=mace_previous)
    cold = mace(max_epochs=3).fit(xtb_dataset, MACE_GROWN, MACE_VALID)
    assert warm.history_["val_losses"][0] < 0.5 * cold.history_["val_losses"][0]
    record = warm.history_["warm_start"]
    assert record["from_n_train"] == 20 and cold.history_["warm_start"] is None
    # the message normalisation and output scale are the previous model's; the
    # new set's values are recorded beside them
    for name in ("avg_num_neighbors", "atomic_inter_scale"):
        assert warm.settings_[name] == mace_previous.settings_[name]
        assert record[name]["kept"] == mace_previous.settings_[name]
        assert record[name]["this_set"] == pytest.approx(cold.settings_[name])
    # the isolated-atom energies are the new set's, as a cold fit's
    np.testing.assert_allclose(
        warm.settings_["atomic_energies"], cold.settings_["atomic_energies"]
    )


def test_mace_warm_fit_keeps_the_forces_of_a_barely_moved_model(
    xtb_dataset, mace_previous
):
    still = mace(warm_lr=1e-12, warm_epochs=1).fit(
        xtb_dataset, MACE_GROWN, MACE_VALID, init_from=mace_previous
    )
    energies, forces = predictions(still, xtb_dataset)
    before_e, before_f = predictions(mace_previous, xtb_dataset)
    np.testing.assert_allclose(forces, before_f, atol=1e-7)
    # energies move by one constant: the new set's E0s and offset alignment
    assert np.ptp(energies - before_e) < 1e-7


def test_mace_warm_fit_repeats_and_resumes_from_saved_files(
    xtb_dataset, mace_previous, tmp_path
):
    from ase_flatten.backends.mace import MACEBackend

    first = mace().fit(xtb_dataset, MACE_GROWN, MACE_VALID, init_from=mace_previous)
    mace_previous.save(tmp_path / "previous")
    loaded = MACEBackend.load(
        tmp_path / "previous", xtb_dataset.numbers, mace_previous.params
    )
    resumed = mace().fit(xtb_dataset, MACE_GROWN, MACE_VALID, init_from=loaded)
    for a, b in zip(
        predictions(first, xtb_dataset), predictions(resumed, xtb_dataset), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    first.save(tmp_path / "warm")
    back = MACEBackend.load(tmp_path / "warm", xtb_dataset.numbers, first.params)
    for a, b in zip(
        predictions(first, xtb_dataset), predictions(back, xtb_dataset), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match=r"other num_channels \(8, not 16\)"):
        mace(num_channels=16).fit(
            xtb_dataset, MACE_GROWN, MACE_VALID, init_from=mace_previous
        )


# -- sGDML ----------------------------------------------------------------------


def sgdml(**params):
    pytest.importorskip("sgdml")
    from ase_flatten.backends.sgdml import SGDMLBackend

    return SGDMLBackend(**{"sigma_grid": [2, 10, 40], **params})


def test_sigma_neighbours_are_the_grid_values_next_to_it():
    from ase_flatten.backends.sgdml import sigma_neighbours

    grid = [40, 5, 10, 20, 80]
    assert sigma_neighbours(10, grid) == [5, 10, 20]
    assert sigma_neighbours(5, grid) == [5, 10]
    assert sigma_neighbours(80, grid) == [40, 80]
    assert sigma_neighbours(15, grid) == [10, 15, 20]  # an explicit earlier sigma


def test_sgdml_warm_fit_searches_the_previous_sigma_and_its_neighbours(xtb_dataset):
    from ase_flatten.backends.sgdml import sigma_neighbours

    grid = [2, 5, 10, 20, 40]
    previous = sgdml(sigma_grid=grid).fit(xtb_dataset, TRAIN, VALID)
    assert len(previous.validation_) == 5
    warm = sgdml(sigma_grid=grid).fit(xtb_dataset, GROWN, VALID, init_from=previous)
    near = sigma_neighbours(previous.sigma_, grid)
    assert sorted(warm.validation_) == near and len(near) in (2, 3)
    assert warm.validation_[warm.sigma_] == min(warm.validation_.values())
    # the same model as a cold fit that searches those values: nothing else carries
    cold = sgdml(sigma_grid=near).fit(xtb_dataset, GROWN, VALID)
    assert cold.validation_ == warm.validation_
    for a, b in zip(
        predictions(warm, xtb_dataset), predictions(cold, xtb_dataset), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_sgdml_warm_fit_keeps_the_previous_sigma_without_a_search(xtb_dataset):
    previous = sgdml().fit(xtb_dataset, TRAIN, VALID)
    assert len(previous.validation_) == 3  # the cold fit searched the grid
    warm = sgdml(warm_sigma="keep").fit(xtb_dataset, GROWN, VALID, init_from=previous)
    assert warm.sigma_ == previous.sigma_
    assert warm.validation_ == {}  # one solve, no candidates
    assert warm.validation_indices_.size == 0
    # the same model as a cold fit told that sigma: nothing else carries over
    fixed = sgdml(sigma=previous.sigma_).fit(xtb_dataset, GROWN)
    for a, b in zip(
        predictions(warm, xtb_dataset), predictions(fixed, xtb_dataset), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    # a cold fit on the grown set searches again
    assert len(sgdml().fit(xtb_dataset, GROWN, VALID).validation_) == 3


def test_sgdml_warm_fit_takes_an_explicit_sigma_over_the_kept_one(xtb_dataset):
    previous = sgdml(sigma=40).fit(xtb_dataset, TRAIN)
    assert sgdml(sigma=10).fit(xtb_dataset, GROWN, init_from=previous).sigma_ == 10
    kept = sgdml(warm_sigma="keep").fit(xtb_dataset, GROWN, VALID, init_from=previous)
    assert kept.sigma_ == 40
    with pytest.raises(InputError, match="warm_sigma must be one of neighbours, keep"):
        sgdml(warm_sigma="all")
