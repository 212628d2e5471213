"""The backend contract as a pytest class: :class:`BackendTests`.

Every backend, ase-flatten's own and a third-party plugin alike, must pass the
same checks: :meth:`~ase_flatten.backends.Backend.fit` returns the backend, the
predictions have the documented shapes and units (energies ``(n,)`` in eV,
forces ``(n, atoms, 3)`` in eV/Å), a save/load round trip predicts the same
numbers, forces are minus the gradient of the energy (for a conservative model),
a bad parameter is one clear :class:`~ase_flatten.exceptions.InputError`, the
same ``random_state`` gives the same model, and the model works through
:class:`~ase_flatten.calculator.FlattenedCalculator`. A plugin tests itself by
subclassing it in one of its pytest modules::

    from ase_flatten.testing import BackendTests


    class TestMyBackend(BackendTests):
        backend = "mine"  # its entry-point name in ase_flatten.backends
        params = {"width": 8}  # a tiny model: seconds to train

pytest collects the subclass (its name starts with ``Test``) and runs every
check on a small dataset: 60 frames of ethanol labelled by ASE's EMT
(:func:`tiny_dataset`), or the dataset of the fixture named by
``dataset_fixture``. The model is trained once per class; the class attributes
set the frames, the tolerances and which checks apply. A subclass adds its own
checks as methods, which may use the fixtures ``dataset``, ``fitted`` (the
trained backend) and ``saved_directory`` (where it was saved).

This module needs pytest (the ``test`` extra); the package never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from .data import Dataset
from .exceptions import InputError

__all__ = ["BackendTests", "tiny_dataset"]


def tiny_dataset(n_frames: int = 60, seed: int = 0) -> Dataset:
    """Ethanol frames displaced at random (0.05 Å) and labelled by ASE's EMT.

    EMT is crude for a molecule, but it is smooth, conservative, in ASE itself
    and takes milliseconds, which is what a contract test needs.

    Parameters
    ----------
    n_frames : int
    seed : int
        Seed of the displacements.

    Returns
    -------
    Dataset
        Energies in eV, forces in eV/Å, atoms C C O H H H H H H.
    """
    from ase.build import molecule
    from ase.calculators.emt import EMT

    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(seed)
    positions = atoms.positions + rng.normal(scale=0.05, size=(n_frames, len(atoms), 3))
    calc = EMT()
    energies = np.empty(n_frames)
    forces = np.empty_like(positions)
    for i, frame in enumerate(positions):
        atoms.positions = frame
        atoms.calc = calc
        energies[i] = atoms.get_potential_energy()
        forces[i] = atoms.get_forces()
    return Dataset(atoms.numbers, positions, energies, forces, source="<EMT ethanol>")


def _class_fixture(function):
    """A class-scoped fixture method that reads only class attributes.

    A classmethod from pytest 9.1 (which deprecates instance methods for class
    fixtures), an instance method before it (which knows no classmethod fixture).
    """
    major, minor = (int(part) for part in pytest.__version__.split(".")[:2])
    if (major, minor) >= (9, 1):
        function = classmethod(function)
    return pytest.fixture(scope="class")(function)


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


class BackendTests:
    """The checks every backend must pass; subclass it and set the attributes.

    Attributes
    ----------
    backend : str
        The backend's registered name (required).
    params : dict
        Hyperparameters of the model trained once for the class: make it tiny.
    load_kwargs : dict
        Extra keywords of ``Backend.load`` and ``load_model`` (the ``ase``
        backend's ``factory``).
    random_state : int
    dataset_fixture : str or None
        Name of a pytest fixture giving the dataset; None: :func:`tiny_dataset`.
    train_idx, val_idx, test_idx : array of int
        Training, validation (None: the backend chooses) and test frames.
    max_force_rmse_share : float
        Test-frame force RMSE at most this share of the reference forces' RMS
        (the error of predicting zero): the model learned, in eV/Å.
    max_energy_rmse : float
        Test-frame energy RMSE at most this, in eV (a model in kcal/mol or
        without its energy offset fails it).
    batch_atol : float
        Predictions in batches of 7, all at once and one at a time agree to this.
    load_atol : float
        A saved and loaded model predicts within this of the trained one (0:
        identical numbers).
    conservative : bool
        Check that forces are minus the energy gradient (central differences).
    gradient_step : float
        Å, the finite-difference step.
    gradient_atol : float
        eV/Å, allowed difference between forces and the numerical gradient.
    determinism_params : dict or None
        Parameters of the determinism check's fits (e.g. fewer epochs): two fits
        with them must agree. None: one more fit with ``params`` must agree with
        the class's model.
    determinism_atol : float
        How closely the two fits agree (0: identical numbers).
    seed_changes_model : bool
        Also check that another ``random_state`` gives another model.
    bad_params : list of (dict, str)
        Parameters that must raise one InputError, and a regex its message
        matches; an unknown parameter name is always checked.
    """

    backend: ClassVar[str] = ""
    params: ClassVar[dict] = {}
    load_kwargs: ClassVar[dict] = {}
    random_state: ClassVar[int] = 0
    dataset_fixture: ClassVar[str | None] = None
    train_idx: ClassVar = np.arange(0, 40, 2)
    val_idx: ClassVar = np.arange(1, 20, 2)
    test_idx: ClassVar = np.arange(40, 60)
    max_force_rmse_share: ClassVar[float] = 0.8
    max_energy_rmse: ClassVar[float] = 0.5
    batch_atol: ClassVar[float] = 1e-9
    load_atol: ClassVar[float] = 0.0
    conservative: ClassVar[bool] = True
    gradient_step: ClassVar[float] = 1e-4
    gradient_atol: ClassVar[float] = 1e-4
    determinism_params: ClassVar[dict | None] = None
    determinism_atol: ClassVar[float] = 0.0
    seed_changes_model: ClassVar[bool] = False
    bad_params: ClassVar[list] = []

    # -- fixtures: one dataset and one trained model per class ---------------------
    @_class_fixture
    def dataset(cls, request) -> Dataset:
        """The frames every check uses."""
        if cls.dataset_fixture:
            return request.getfixturevalue(cls.dataset_fixture)
        return tiny_dataset()

    @classmethod
    def make(cls, random_state=None, **params):
        """A new, untrained backend with ``params`` over the class's."""
        from .backends import make_backend

        seed = cls.random_state if random_state is None else random_state
        return make_backend(cls.backend, random_state=seed, **{**cls.params, **params})

    @_class_fixture
    def fit_result(cls, dataset):
        """(backend, what its fit returned), trained once for the class."""
        backend = cls.make()
        return backend, backend.fit(dataset, cls.train_idx, cls.val_idx)

    @_class_fixture
    def fitted(cls, fit_result):
        """The trained backend."""
        return fit_result[0]

    @_class_fixture
    def saved_directory(cls, fitted, dataset, tmp_path_factory) -> Path:
        """A model directory of the trained backend (``save_model``)."""
        from .models import save_model

        directory = tmp_path_factory.mktemp(f"{cls.backend}_contract") / "model"
        return save_model(directory, fitted, cls.train_idx, dataset)

    # -- the contract ----------------------------------------------------------------
    def test_fit_returns_the_backend_and_records_the_molecule(
        self, fit_result, dataset
    ):
        """``fit`` returns the backend itself, which knows its molecule."""
        backend, returned = fit_result
        assert returned is backend
        assert backend.name == self.backend
        np.testing.assert_array_equal(backend.numbers_, dataset.numbers)
        validation = getattr(backend, "validation_indices_", np.empty(0, int))
        assert not np.intersect1d(validation, self.train_idx).size

    def test_predictions_have_the_shapes_and_units(self, fitted, dataset):
        """Energies (n,) in eV, forces (n, atoms, 3) in eV/Å, float64, learned."""
        test = np.asarray(self.test_idx)
        energies, forces = fitted.predict(dataset, test, progress=False)
        assert energies.shape == (len(test),) and energies.dtype == np.float64
        n_atoms = len(dataset.numbers)
        assert forces.shape == (len(test), n_atoms, 3) and forces.dtype == np.float64
        assert np.isfinite(energies).all() and np.isfinite(forces).all()
        reference = dataset.forces[test]
        zero = float(np.sqrt(np.mean(reference**2)))
        force_rmse = _rmse(forces, reference)
        assert force_rmse < self.max_force_rmse_share * zero, (
            f"force RMSE {force_rmse:.4g} eV/Å on the test frames, not below "
            f"{self.max_force_rmse_share} x {zero:.4g} (predicting zero forces)"
        )
        energy_rmse = _rmse(energies, dataset.energies[test])
        assert energy_rmse < self.max_energy_rmse, (
            f"energy RMSE {energy_rmse:.4g} eV on the test frames, not below "
            f"{self.max_energy_rmse} eV"
        )

    def test_batches_do_not_change_the_numbers(self, fitted, dataset):
        """Batches of 7, all frames at once and one frame give the same numbers."""
        test = np.asarray(self.test_idx)[:10]
        energies, forces = fitted.predict(dataset, test, batch_size=7, progress=False)
        e_all, f_all = fitted.predict_positions(dataset.positions[test])
        e_one, f_one = fitted.predict_positions(dataset.positions[test[3:4]])
        atol = self.batch_atol
        np.testing.assert_allclose(e_all, energies, rtol=0, atol=atol)
        np.testing.assert_allclose(f_all, forces, rtol=0, atol=atol)
        np.testing.assert_allclose(e_one[0], e_all[3], rtol=0, atol=atol)
        np.testing.assert_allclose(f_one[0], f_all[3], rtol=0, atol=atol)

    def test_save_and_load_give_the_same_numbers(self, fitted, dataset, tmp_path):
        """``Backend.load`` of ``save``'s files predicts what the model did."""
        fitted.save(tmp_path / "files")
        loaded = type(fitted).load(
            tmp_path / "files",
            dataset.numbers,
            fitted.params,
            fitted.random_state,
            **self.load_kwargs,
        )
        test = np.asarray(self.test_idx)[:10]
        e0, f0 = fitted.predict(dataset, test, progress=False)
        e1, f1 = loaded.predict(dataset, test, progress=False)
        np.testing.assert_allclose(e1, e0, rtol=0, atol=self.load_atol)
        np.testing.assert_allclose(f1, f0, rtol=0, atol=self.load_atol)

    def test_forces_are_minus_the_energy_gradient(self, fitted, dataset):
        """Central differences of the energy give the forces (conservative)."""
        if not self.conservative:
            pytest.skip(f"the {self.backend} backend is not conservative")
        frame = dataset.positions[np.asarray(self.test_idx)[0]]
        step = self.gradient_step
        displaced = []
        for k in range(frame.size):
            for sign in (1, -1):
                moved = frame.reshape(-1).copy()
                moved[k] += sign * step
                displaced.append(moved.reshape(frame.shape))
        energies, _ = fitted.predict_positions(np.array(displaced))
        numeric = -(energies[0::2] - energies[1::2]) / (2 * step)
        _, forces = fitted.predict_positions(frame[None])
        assert np.abs(forces).max() > 0.1  # not a trivially flat model
        np.testing.assert_allclose(
            numeric, forces[0].reshape(-1), rtol=0, atol=self.gradient_atol
        )

    def test_bad_parameters_are_one_clear_input_error(self):
        """An unknown or invalid parameter: one InputError naming the backend."""
        cases = [({"no_such_parameter": 1}, "unknown parameter 'no_such_parameter'")]
        for params, match in [*cases, *self.bad_params]:
            with pytest.raises(InputError, match=match) as info:
                self.make(**params)
            message = str(info.value)
            assert message.startswith(f"{self.backend}") and "\n" not in message

    def test_an_untrained_model_cannot_predict_or_save(self, dataset, tmp_path):
        """Before ``fit``: InputError, and no directory is written."""
        backend = self.make()
        with pytest.raises(InputError, match="not trained"):
            backend.predict(dataset, [0], progress=False)
        with pytest.raises(InputError, match="not trained"):
            backend.save(tmp_path / "never")
        assert not (tmp_path / "never").exists()

    def test_same_random_state_same_model(self, fitted, dataset):
        """The same ``random_state`` and frames give the same model."""
        test = np.asarray(self.test_idx)[:10]
        if self.determinism_params is None:
            first = fitted
        else:
            first = self.make(**self.determinism_params)
            first.fit(dataset, self.train_idx, self.val_idx)
        second = self.make(**(self.determinism_params or {}))
        second.fit(dataset, self.train_idx, self.val_idx)
        e1, f1 = first.predict(dataset, test, progress=False)
        e2, f2 = second.predict(dataset, test, progress=False)
        np.testing.assert_allclose(e2, e1, rtol=0, atol=self.determinism_atol)
        np.testing.assert_allclose(f2, f1, rtol=0, atol=self.determinism_atol)
        if self.seed_changes_model:
            other = self.make(
                random_state=self.random_state + 1, **(self.determinism_params or {})
            )
            other.fit(dataset, self.train_idx, self.val_idx)
            _, f3 = other.predict(dataset, test, progress=False)
            assert np.abs(f3 - f1).max() > 1e-3

    def test_flattened_calculator_agrees_with_predict(
        self, fitted, saved_directory, dataset
    ):
        """A ``save_model`` directory through FlattenedCalculator: same numbers."""
        from .calculator import FlattenedCalculator
        from .models import load_model

        model = saved_directory
        if self.load_kwargs:  # e.g. the ase backend's factory, named by the user
            model = load_model(saved_directory, **self.load_kwargs)
        frame = int(np.asarray(self.test_idx)[1])
        atoms = dataset.to_atoms(frame)
        atoms.calc = FlattenedCalculator(model)
        energies, forces = fitted.predict_positions(dataset.positions[[frame]])
        atol = max(self.load_atol, 1e-12)
        np.testing.assert_allclose(
            atoms.get_potential_energy(), energies[0], rtol=0, atol=atol
        )
        np.testing.assert_allclose(atoms.get_forces(), forces[0], rtol=0, atol=atol)
