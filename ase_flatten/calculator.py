"""FlattenedCalculator: any saved ase-flatten model as an ASE calculator.

::

    from ase_flatten import FlattenedCalculator
    atoms.calc = FlattenedCalculator("models/ethanol_sgdml")
    atoms.get_potential_energy(), atoms.get_forces()

Its parameters, ASE's way, are ``model`` (the model directory, stored as an
absolute path), ``domain`` and ``model_sha256`` (the SHA-256 of the model's files,
filled in when the model loads; given, it must match): ``calc.todict()`` and
``ase db`` record which model gave a result, under the calculator name
``flattened`` (the registered plugin name), and
``FlattenedCalculator(**calc.todict())`` refuses a model whose files changed since.
An unknown keyword (``domian=True``) raises
:class:`ase.calculators.calculator.InputError`.

When the model was saved with its dataset's cluster model (the selection loop does
this), ``FlattenedCalculator(path, domain=True)`` also reports these properties
(``calc.get_property(name, atoms)``; also copied into ``atoms.info``, so they are
written to extxyz and databases with the structure):

``cluster``
    the cluster the structure falls in;
``cluster_force_rmse``
    the model's measured force RMSE on that cluster (eV/Å);
``domain_distance``
    descriptor distance (Å) to the nearest frame of the reference data (the
    minimum over permutations of equivalent hydrogens, see ``domain.py``); for a
    model saved with ``--domain quests``, QUESTS' dH (nats) of the structure's
    most novel atomic environment;
``outside_domain``
    True when that score exceeds the model's threshold, calibrated on
    time-separated frames of the data: the structure lies outside every
    cluster seen in the data, where no error was measured.

A structure whose shortest or longest interatomic distance lies far outside the
training data's range (a molecule scaled, exploded or collapsed; see
:mod:`ase_flatten.geometry`) logs a warning, once per calculator, in the default
path too.

A structure the model cannot describe raises instead of returning a number:
periodic boundary conditions, another molecule or atom order (checked by the
nearest heavy atom of every hydrogen, see :mod:`ase_flatten.atom_order`) raise
:class:`~ase.calculators.calculator.CalculatorSetupError`; NaN positions and atoms
closer than ``MIN_DISTANCE`` raise
:class:`~ase.calculators.calculator.CalculationFailed`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase.calculators.calculator import (
    CalculationFailed,
    Calculator,
    CalculatorSetupError,
    InputError,
    all_changes,
)

__all__ = ["DOMAIN_PROPERTIES", "MIN_DISTANCE", "FlattenedCalculator"]

logger = logging.getLogger(__name__)

#: extra properties of ``domain=True``: the keys of
#: :meth:`ase_flatten.models.Location.row` (``Location.REPORTED``)
DOMAIN_PROPERTIES = (
    "cluster",
    "cluster_force_rmse",
    "domain_distance",
    "outside_domain",
)
#: Å; atoms closer than this are refused. The four shared 500 K datasets come no
#: closer than 0.85 Å; md_validation declares a run failed below 0.5 Å.
MIN_DISTANCE = 0.3


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
        ASE's own calculator keywords (``label``, ``directory``, ``atoms``).

    Attributes
    ----------
    model : SavedModel
    backend : Backend
    implemented_properties : list of str
        Energy, free energy, forces, and with ``domain=True`` the
        ``DOMAIN_PROPERTIES``.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters = {"model": None, "domain": False, "model_sha256": None}

    def __init__(self, model=None, domain: bool = False, model_sha256=None, **kwargs):
        self.model = self.backend = self._order = None
        self._size_warned = False  # the distance-range warning, once per calculator
        # Calculator.__init__ takes its own keywords and passes the rest to set()
        super().__init__(
            model=model, domain=domain, model_sha256=model_sha256, **kwargs
        )

    def _get_name(self) -> str:
        """``flattened``, as registered with ASE (``calc.name``, ``ase db``)."""
        return "flattened"

    @property
    def domain(self) -> bool:
        """Whether the cluster and domain extras are reported."""
        return bool(self.parameters["domain"])

    def set(self, **kwargs) -> dict:
        """Set ``model`` and/or ``domain``; any other name raises InputError."""
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise InputError(
                f"FlattenedCalculator has no parameter {unknown[0]!r} "
                f"(parameters: {', '.join(self.default_parameters)})"
            )
        if "model" in kwargs:
            kwargs["model"] = self._load(kwargs["model"])
        if "model" in kwargs or "model_sha256" in kwargs:
            kwargs["model_sha256"] = self._check_hash(kwargs.get("model_sha256"))
        domain = bool(kwargs.get("domain", self.domain))
        if domain and self.model.clusters is None:
            raise CalculatorSetupError(
                "domain=True needs a model saved with its cluster model"
            )
        changed = super().set(**{**kwargs, "domain": domain})
        self.implemented_properties = list(type(self).implemented_properties)
        if self.domain:
            self.implemented_properties += DOMAIN_PROPERTIES
        if changed:
            self.reset()
        return changed

    def _load(self, model) -> str:
        """Load ``model``; returns what ``parameters["model"]`` records."""
        from .atom_order import AtomOrderCheck
        from .backends import Backend
        from .models import SavedModel, load_model

        if model is None:
            raise CalculatorSetupError("FlattenedCalculator needs a model directory")
        if isinstance(model, Backend):
            model = SavedModel(backend=model, meta={}, train_indices=np.empty(0, int))
        elif not isinstance(model, SavedModel):
            model = load_model(model)
        self.model, self.backend = model, model.backend
        reference = model.meta.get("hydrogen_partners")
        self._order = None
        if reference is not None:
            self._order = AtomOrderCheck(self.backend.numbers_, reference)
        else:
            logger.warning(
                "%s: saved without its data's hydrogen partners (an older model, or "
                "save_model without the dataset): the atom order is not checked",
                model.path or f"the {self.backend.name} model",
            )
        if model.path is None:
            return f"<{self.backend.name} model in memory>"
        return str(Path(model.path).resolve())

    def _check_hash(self, expected) -> str | None:
        """The loaded model's content hash; raise when ``expected`` differs."""
        digest = self.model.content_hash()
        if expected is not None and expected != digest:
            where = self.model.path or f"the {self.backend.name} model in memory"
            raise CalculatorSetupError(
                f"{where}: its files are not the model_sha256 asked for "
                f"(sha256 {str(digest)[:16]}..., asked {str(expected)[:16]}...): "
                "the model changed since that result"
            )
        return digest

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.check_structure(self.atoms)
        positions = np.asarray(self.atoms.positions, dtype=float)
        if not self._size_warned:
            self._check_size(positions)
        energies, forces = self.backend.predict_positions(positions[None])
        energy = float(energies[0])
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            raise CalculationFailed(
                f"the {self.backend.name} model returned a non-finite energy or force"
            )
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.array(forces[0], dtype=float).reshape(-1, 3),
        }
        if self.domain:
            extras = self.model.locate(positions, [energy]).row(0)
            self.results.update(extras)
            if atoms is not None:  # travels with the structure (extxyz, ase db)
                atoms.info.update(extras)

    def check_structure(self, atoms) -> None:
        """Raise for a structure the model cannot describe (see module docstring).

        ``calculate`` calls it; ``ase-flatten predict`` calls it for every frame of
        a file before predicting them together.
        """
        positions = np.asarray(atoms.positions, dtype=float)
        if atoms.pbc.any():
            raise CalculatorSetupError(
                f"periodic boundary conditions (pbc={atoms.pbc.tolist()}) are not "
                f"supported: the {self.backend.name} model describes one isolated "
                "molecule; set atoms.pbc = False with the molecule whole"
            )
        if not np.array_equal(atoms.numbers, self.backend.numbers_):
            raise CalculatorSetupError(
                f"this {self.backend.name} model was trained on another molecule or "
                f"atom order ({len(self.backend.numbers_)} atoms), got "
                f"{atoms.get_chemical_formula()}"
            )
        if not np.isfinite(positions).all():
            atom = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
            raise CalculationFailed(f"atom {atom} has a non-finite position")
        diff = positions[:, None, :] - positions[None, :, :]
        squared = np.einsum("ijx,ijx->ij", diff, diff)
        np.fill_diagonal(squared, np.inf)
        if squared.min() < MIN_DISTANCE**2:
            i, j = np.unravel_index(squared.argmin(), squared.shape)
            raise CalculationFailed(
                f"atoms {i} and {j} are {np.sqrt(squared[i, j]):.3f} Å apart "
                f"(< {MIN_DISTANCE} Å)"
            )
        problem = self._order.problem(positions) if self._order else None
        if problem:
            raise CalculatorSetupError(problem)

    def _check_size(self, positions: np.ndarray) -> None:
        """Warn (once per calculator) for a structure far outside the data's size.

        Its shortest or longest interatomic distance outside the training data's
        range (:mod:`ase_flatten.geometry`): a scaled, exploded or collapsed
        structure, whose energy is an extrapolation. Costs a distance matrix.
        """
        limits = self.model.distance_range
        if limits is None:
            return
        diff = positions[:, None, :] - positions[None, :, :]
        squared = np.einsum("ijx,ijx->ij", diff, diff)
        longest = float(np.sqrt(squared.max()))
        np.fill_diagonal(squared, np.inf)
        shortest = float(np.sqrt(squared.min()))
        if limits.inside(shortest, longest):
            return
        self._size_warned = True
        logger.warning(
            "%s: a structure far outside the model's training data: %s; its energy "
            "and forces are an extrapolation (warned once per calculator; "
            "domain=True reports every structure)",
            self.parameters["model"],
            limits.describe(shortest, longest),
        )
