"""The ``ase`` backend: any existing ASE calculator, for error analysis only.

Wraps a calculator you already have (MACE, tblite, a DFT code, ...) so that
``ase-flatten errors --model`` and the Python API treat it like a trained model.
It does no training. To be saved and loaded it needs a factory: a dotted
``module:callable`` that builds the calculator from keyword arguments, e.g.
``{"factory": "tblite.ase:TBLite", "kwargs": {"method": "GFN1-xTB"}}``.

A model directory names its factory, but loading it never imports what the file
names: the user passes the same factory explicitly
(``load_model(DIR, factory="tblite.ase:TBLite")``), so no code runs from a model
file that the user did not choose.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
from ase import Atoms

from ..data import Dataset
from ..exceptions import InputError
from .base import Backend
from .parameters import Mapping, Pattern


class ASEBackend(Backend):
    """An ASE calculator behind the Backend protocol.

    Parameters (``defaults``)
    -------------------------
    factory : str or None
        ``"module:callable"`` returning a calculator, called with ``kwargs``.
    kwargs : dict
        Keyword arguments for the factory.

    Other parameters
    ----------------
    calculator : ase Calculator, optional
        An existing calculator object (then ``factory`` may be None, and the
        backend cannot be saved).
    """

    name = "ase"
    extra = "all"
    defaults = {"factory": None, "kwargs": {}}
    parameter_constraints = {
        "factory": [Pattern(r"[\w.]+:[\w.]+", "a 'module:callable' string"), None],
        "kwargs": [Mapping()],
    }
    batch_size = 64

    def __init__(self, random_state: int = 0, calculator=None, **params):
        super().__init__(random_state=random_state, **params)
        self._calc = calculator
        if calculator is None and self.params["factory"] is None:
            raise InputError("the ase backend needs a calculator or a factory")

    @property
    def calc(self):
        """The wrapped calculator, built from the factory on first use."""
        if self._calc is None:
            self._calc = build(self.params["factory"], self.params["kwargs"])
        return self._calc

    def fit(
        self, dataset: Dataset, train_idx=None, val_idx=None, held_out=None
    ) -> ASEBackend:
        """Record the molecule; an ASE calculator is used as it is (no training)."""
        self.numbers_ = dataset.numbers.copy()
        return self

    def _fit(self, dataset, train_idx, val_idx) -> None:  # pragma: no cover
        raise NotImplementedError

    def _predict(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        energies = np.empty(len(positions))
        forces = np.empty_like(positions)
        for i, frame in enumerate(positions):
            atoms = Atoms(numbers=self.numbers_, positions=frame)
            atoms.calc = self.calc
            energies[i] = atoms.get_potential_energy()
            forces[i] = atoms.get_forces()
        return energies, forces

    def _save(self, directory: Path) -> None:
        if self.params["factory"] is None:
            raise InputError(
                "an ase backend built from a calculator object cannot be saved; "
                "give factory='module:callable' instead"
            )
        (directory / "factory.json").write_text(json.dumps(self.params))

    @classmethod
    def load(
        cls,
        directory: str | Path,
        numbers,
        params: dict,
        random_state: int = 0,
        factory: str | None = None,
    ) -> ASEBackend:
        """Rebuild a saved ase backend; ``factory`` must repeat the saved one.

        Raises
        ------
        InputError
            ``factory`` not given, or not the one the directory names.
        """
        saved = params.get("factory")
        if factory is None:
            raise InputError(
                f"{directory}: an ase-backend model whose calculator factory "
                f"{saved!r} is imported only when you name it yourself: "
                f"load_model(DIR, factory={saved!r}) in Python"
            )
        if factory != saved:
            raise InputError(
                f"{directory}: the model was saved with the calculator factory "
                f"{saved!r}, not {factory!r}"
            )
        return super().load(directory, numbers, params, random_state)

    def _load(self, directory: Path) -> None:
        self._calc = None


def import_factory(spec: str):
    """Import ``module:callable``; a bad spec raises one-line InputError."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise InputError(f"calculator factory {spec!r}: expected MODULE:CALLABLE")
    try:
        function = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import calculator factory {spec!r} ({exc})") from exc
    if not callable(function):
        raise InputError(f"calculator factory {spec!r} is not callable")
    return function


def build(factory: str, kwargs: dict):
    """Call ``module:callable`` with ``kwargs``; a bad spec is an InputError."""
    return import_factory(factory)(**kwargs)
