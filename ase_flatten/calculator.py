"""FlattenedCalculator: any saved ase-flatten model as an ASE calculator.

::

    from ase_flatten import FlattenedCalculator
    atoms.calc = FlattenedCalculator("models/ethanol_sgdml")
    atoms.get_potential_energy(), atoms.get_forces()

When the model was saved with its dataset's cluster model (the selection loop does
this), ``FlattenedCalculator(path, domain=True)`` also reports, in ``calc.results``
of every calculation:

``cluster``
    the cluster the structure falls in;
``cluster_force_rmse``
    the model's measured force RMSE on that cluster (eV/Å);
``domain_distance``
    descriptor distance (Å) to the nearest frame of the reference data (the
    minimum over permutations of equivalent hydrogens, see ``domain.py``);
``outside_domain``
    True when that distance exceeds the model's threshold, calibrated on
    time-separated frames of the data: the structure lies outside every
    cluster seen in the data, where no error was measured.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, CalculatorError, all_changes

from .domain import model_domain_distance

__all__ = ["FlattenedCalculator"]


class FlattenedCalculator(Calculator):
    """ASE calculator for a model trained by ase-flatten (sGDML, SchNet, GAP, ...).

    Parameters
    ----------
    model : str, path, SavedModel or Backend
        A model directory (``ase-flatten train -o DIR``), a loaded
        :class:`~ase_flatten.models.SavedModel`, or a trained backend.
    domain : bool
        Report cluster and applicability-domain extras (needs a model saved with
        its cluster model). Off by default: they cost a descriptor and a distance
        to every Ward-subset frame per call (see BENCHMARKS.md), which plain
        energy/force calls should not pay.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters: dict = {}

    def __init__(self, model=None, domain: bool = False, **kwargs):
        super().__init__(**kwargs)
        from .backends import Backend
        from .models import SavedModel, load_model

        if model is None:
            raise CalculatorError("FlattenedCalculator needs a model directory")
        if isinstance(model, Backend):
            model = SavedModel(backend=model, meta={}, train_indices=np.empty(0, int))
        elif not isinstance(model, SavedModel):
            model = load_model(model)
        self.model = model
        self.backend = model.backend
        self.domain = bool(domain)
        if self.domain and model.clusters is None:
            raise CalculatorError(
                "domain=True needs a model saved with its cluster model"
            )

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        numbers = self.atoms.numbers
        if not np.array_equal(numbers, self.backend.numbers_):
            raise CalculatorError(
                f"this {self.backend.name} model was trained on another molecule or "
                f"atom order ({len(self.backend.numbers_)} atoms), got "
                f"{self.atoms.get_chemical_formula()}"
            )
        positions = self.atoms.positions[None]
        energies, forces = self.backend.predict_positions(positions)
        energy = float(energies[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.array(forces[0], dtype=float).reshape(-1, 3),
        }
        if self.domain:
            self.results.update(self._domain_report(positions, energy))

    def _domain_report(self, positions: np.ndarray, energy: float) -> dict:
        clusters = self.model.clusters
        X = clusters.describe(positions)
        labels, distance = clusters.predict(X, [energy], return_distance=True)
        distance, threshold = model_domain_distance(self.model, positions, distance)
        cluster = int(labels[0])
        rmse = self.model.cluster_force_rmse
        return {
            "cluster": cluster,
            "cluster_force_rmse": (
                float(rmse[cluster])
                if rmse is not None and cluster < len(rmse)
                else float("nan")
            ),
            "domain_distance": float(distance[0]),
            "outside_domain": bool(threshold is not None and distance[0] > threshold),
        }
