"""Blow-up detection: when an MD run has failed, as a result rather than a crash.

The structural rule is the one that held on a reference GFN2-xTB trajectory with
intramolecular proton transfer (see docs/measured_facts.md, "The MD failure
rule"); "bond stretched beyond 2x" and a covalent graph over all atoms both
declared that reference failed, so they are not used:

* every energy and force is finite;
* the heavy-atom skeleton stays one connected graph, two heavy atoms being bonded
  when closer than ``bond_factor`` (1.3) times the sum of their covalent radii;
* every hydrogen stays within ``max_hydrogen_distance`` (1.7 Å) of some heavy atom;
* no two atoms come closer than ``min_distance`` (0.5 Å);
* the instantaneous temperature does not stay above ``max_temperature_factor``
  (3) times the target for a whole ``temperature_window_fs`` (50 fs) window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.data import covalent_radii

__all__ = [
    "FailureCriteria",
    "MDFailure",
    "MonitoredCalculator",
    "TemperatureWatch",
    "check_frame",
    "check_structure",
]


@dataclass(frozen=True)
class FailureCriteria:
    """Thresholds of the failure rule (Å, K, fs).

    Parameters
    ----------
    bond_factor : float
        Heavy atoms closer than this times the sum of covalent radii are bonded.
    max_hydrogen_distance : float
        Largest allowed distance (Å) from a hydrogen to its nearest heavy atom.
    min_distance : float
        Smallest allowed distance (Å) between any two atoms.
    max_temperature_factor : float
        Temperature runaway: instantaneous T above this times the target ...
    temperature_window_fs : float
        ... at every step of a window this long (fs).
    """

    bond_factor: float = 1.3
    max_hydrogen_distance: float = 1.7
    min_distance: float = 0.5
    max_temperature_factor: float = 3.0
    temperature_window_fs: float = 50.0


class MDFailure(RuntimeError):
    """Raised inside a run when the failure rule fires; carries the reason."""

    def __init__(self, reason: str, step: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.step = step


def check_structure(
    numbers: np.ndarray, positions: np.ndarray, criteria: FailureCriteria = None
) -> str | None:
    """Apply the structural rule to one frame.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
        Atomic numbers.
    positions : ndarray, shape (N, 3)
        Positions in Å.
    criteria : FailureCriteria, optional

    Returns
    -------
    str or None
        Why the frame counts as failed, or None when it is fine.
    """
    criteria = criteria or FailureCriteria()
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=float)
    if not np.all(np.isfinite(positions)):
        return "non-finite positions"
    diff = positions[:, None, :] - positions[None, :, :]
    dist = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    np.fill_diagonal(dist, np.inf)
    if dist.min() < criteria.min_distance:
        i, j = np.unravel_index(dist.argmin(), dist.shape)
        return (
            f"atoms {i} and {j} collapsed to {dist[i, j]:.2f} Å "
            f"(< {criteria.min_distance} Å)"
        )
    heavy = np.flatnonzero(numbers > 1)
    hydrogens = np.flatnonzero(numbers == 1)
    if len(heavy) > 1:
        radii = covalent_radii[numbers[heavy]]
        cutoff = criteria.bond_factor * (radii[:, None] + radii[None, :])
        n_parts = _count_components(dist[np.ix_(heavy, heavy)] < cutoff)
        if n_parts > 1:
            return (
                f"heavy-atom skeleton split into {n_parts} fragments "
                f"(bonds at {criteria.bond_factor}x covalent radii)"
            )
    if len(heavy) and len(hydrogens):
        nearest = dist[np.ix_(hydrogens, heavy)].min(axis=1)
        worst = nearest.argmax()
        if nearest[worst] > criteria.max_hydrogen_distance:
            return (
                f"hydrogen {hydrogens[worst]} is {nearest[worst]:.2f} Å from every "
                f"heavy atom (> {criteria.max_hydrogen_distance} Å)"
            )
    return None


def _count_components(bonded: np.ndarray) -> int:
    """Connected parts of the graph with symmetric adjacency ``bonded`` (n, n).

    Each atom takes the smallest label among itself and its neighbours until no
    label changes (at most n rounds); scipy's ``connected_components`` gives the
    same count, at ten times the cost on a molecule's few heavy atoms, which
    every MD step pays.
    """
    n = len(bonded)
    labels = np.arange(n)
    linked = bonded | np.eye(n, dtype=bool)
    for _ in range(n):
        new = np.where(linked, labels[None, :], n).min(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return len(np.unique(labels))


def check_frame(
    numbers, positions, energy, forces, criteria: FailureCriteria = None
) -> str | None:
    """:func:`check_structure` plus finite energy and forces."""
    if not np.isfinite(energy):
        return f"non-finite energy ({energy})"
    if forces is not None and not np.all(np.isfinite(forces)):
        return "non-finite forces"
    return check_structure(numbers, positions, criteria)


class TemperatureWatch:
    """Temperature runaway: T above ``factor`` x target for a whole window.

    Parameters
    ----------
    target_K : float
        Thermostat temperature.
    timestep_fs : float
        Time between the temperatures given to :meth:`update`.
    criteria : FailureCriteria, optional
    """

    def __init__(self, target_K: float, timestep_fs: float, criteria=None):
        criteria = criteria or FailureCriteria()
        self.limit = criteria.max_temperature_factor * target_K
        self.window = max(1, int(round(criteria.temperature_window_fs / timestep_fs)))
        self._hot = 0

    def update(self, temperature_K: float) -> str | None:
        """Feed the next temperature; return a reason once the rule fires."""
        if not np.isfinite(temperature_K):
            return f"non-finite temperature ({temperature_K})"
        self._hot = self._hot + 1 if temperature_K > self.limit else 0
        if self._hot >= self.window:
            return (
                f"temperature above {self.limit:.0f} K for {self.window} steps "
                "(runaway)"
            )
        return None

    def first_failure(self, temperatures) -> tuple[int, str] | None:
        """Index and reason of the first failing entry of a whole series."""
        for i, t in enumerate(temperatures):
            reason = self.update(float(t))
            if reason:
                return i, reason
        return None


class MonitoredCalculator(Calculator):
    """Wraps a calculator; checks every result and raises :class:`MDFailure`.

    The i-PI client uses it to stop the run at the first bad force call; it counts
    its calls (``n_calls``; call 0 is the starting frame, call k is step k).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, calc, criteria: FailureCriteria = None, **kwargs):
        super().__init__(**kwargs)
        from ase_flatten.calculator import FlattenedCalculator

        self.calc = calc
        self.criteria = criteria or FailureCriteria()
        self.n_calls = 0
        #: FlattenedCalculator computes energy and forces in one calculate;
        #: another calculator is asked through get_potential_energy/get_forces
        self._direct = isinstance(calc, FlattenedCalculator)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces = self.evaluate(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}

    def evaluate(self, atoms) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (N, 3; eV/Å) of ``atoms``, checked; no cache.

        One force call (it counts as the next step); raises :class:`MDFailure`
        when the failure rule fires. The i-PI client calls it once per step.
        """
        step = self.n_calls
        self.n_calls += 1
        if self._direct:
            # one call of its calculate, which gives energy and forces together:
            # no copy of the frame, no two cache checks (the same numbers)
            self.calc.calculate(atoms, ["energy", "forces"], all_changes)
            energy = float(self.calc.results["energy"])
            forces = np.asarray(self.calc.results["forces"], dtype=float)
        else:
            work = atoms.copy()
            work.calc = self.calc
            energy = float(np.asarray(work.get_potential_energy()).reshape(-1)[0])
            forces = np.asarray(work.get_forces(), dtype=float).reshape(-1, 3)
        reason = check_frame(
            atoms.numbers, atoms.positions, energy, forces, self.criteria
        )
        if reason:
            raise MDFailure(reason, step)
        return energy, forces
