"""Fixtures: a small real sGDML model of the xTB ethanol data, with its clusters."""

import os
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes


@pytest.fixture(scope="session")
def sgdml_model(tmp_path_factory, xtb_dataset) -> Path:
    """sGDML on 30 frames (sigma 20), saved with its cluster model and errors."""
    from ase_flatten.backends import make_backend
    from ase_flatten.clustering import cluster_dataset
    from ase_flatten.error_analysis import cluster_errors
    from ase_flatten.models import save_model

    train = np.arange(0, 150, 5)
    backend = make_backend("sgdml", sigma=20).fit(xtb_dataset, train)
    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=3)
    energies, forces = backend.predict(xtb_dataset)
    errors = cluster_errors(xtb_dataset, energies, forces, clusters.labels_)
    path = tmp_path_factory.mktemp("md_models") / "sgdml"
    save_model(
        path, backend, train, xtb_dataset, clusters=clusters, cluster_errors=errors
    )
    return path


@pytest.fixture()
def start_atoms(xtb_dataset):
    return xtb_dataset.to_atoms(0)


class Broken(Calculator):
    """Wraps a calculator; after ``after`` calls returns NaN, huge forces or raises.

    ``mode``: "nan", "explode" (forces pushing atoms apart), "raise" (RuntimeError),
    "interrupt" (KeyboardInterrupt), "die" (the process exits at once).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, calc, after: int, mode: str = "nan"):
        super().__init__()
        self.calc, self.after, self.mode, self.calls = calc, after, mode, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        work = self.atoms.copy()
        work.calc = self.calc
        energy, forces = work.get_potential_energy(), work.get_forces()
        if self.calls > self.after:
            if self.mode == "nan":
                energy, forces = float("nan"), forces * np.nan
            elif self.mode == "explode":
                away = self.atoms.positions - self.atoms.positions.mean(axis=0)
                forces = 50.0 * away
            elif self.mode == "raise":
                raise RuntimeError("model exploded on purpose")
            elif self.mode == "interrupt":
                raise KeyboardInterrupt
            elif self.mode == "die":
                os._exit(9)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def broken_model(model: str, after: int, mode: str = "raise") -> Broken:
    """A calculator factory for md_validation's workers: a saved model that breaks."""
    from ase_flatten.calculator import FlattenedCalculator

    return Broken(FlattenedCalculator(model), after=after, mode=mode)
