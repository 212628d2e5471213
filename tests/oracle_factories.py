"""Calculator factories for the oracle tests, importable by worker processes.

Each wraps the real GFN2-xTB (tblite) and breaks in one chosen way; only the
counting and failure logic of the oracle is tested with them.
"""

import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes


def gfn2():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


class Broken(Calculator):
    """GFN2-xTB whose result is spoiled on every frame whose first x exceeds cut."""

    implemented_properties = ("energy", "forces")

    def __init__(self, how="nan", cut=-np.inf, sleep_s=0.0, **kwargs):
        super().__init__(**kwargs)
        self.how, self.cut, self.sleep_s = how, cut, sleep_s
        self.inner = gfn2()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        time.sleep(self.sleep_s)
        energy = self.inner.get_potential_energy(self.atoms)
        forces = self.inner.get_forces(self.atoms)
        if self.atoms.positions[0, 0] > self.cut:
            if self.how == "raise":
                raise RuntimeError("SCF not converged")
            if self.how == "nan":
                forces = forces * np.nan
            if self.how == "shape":
                forces = forces[:-1]
            if self.how == "hang":
                time.sleep(60)
        self.results = {"energy": energy, "forces": forces}


def broken(**kwargs):
    return Broken(**kwargs)


def not_a_calculator():
    return object()


def dies_in_workers():
    """EMT in this process; in a worker process it ends the process (a crash)."""
    import multiprocessing
    import os

    from ase.calculators.emt import EMT

    if multiprocessing.parent_process() is not None:
        os._exit(3)
    return EMT()
