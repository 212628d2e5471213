"""Is a structure in the atom order of the model's data? A check by hydrogen partners.

A model sees atom i as "the i-th atom of the training data". A structure with the
same formula in another order (the hydroxyl H of ethanol swapped with a methyl H)
is a different molecule to it: sGDML gave an energy 18 eV off without an error.

Every hydrogen sits next to one heavy atom, its partner: the nearest heavy atom, a
choice without a threshold. :func:`reference_partners` records, for each hydrogen,
every partner it had in the data (a proton transfer gives two: salicylic acid's
hydroxyl H is nearest the carbonyl O in 4 of 20,000 frames of 500 K MD; every other
hydrogen of the four shared molecules keeps one partner). :class:`AtomOrderCheck`
names the first hydrogen whose partner is not one of them. Swapping atoms of
different partners (or heavy atoms carrying hydrogens) changes a partner; a swap
that changes none (two H of one methyl group) leaves the molecule as it was.
Molecules without hydrogen, or without heavy atoms, are not checked.
"""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols

__all__ = [
    "AtomOrderCheck",
    "check_reference",
    "hydrogen_partners",
    "reference_partners",
]


def hydrogen_partners(numbers, positions, chunk: int = 2000) -> np.ndarray:
    """Index of the nearest heavy atom of every hydrogen.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
        Atomic numbers.
    positions : ndarray, shape (M, N, 3)
        Positions in Å.
    chunk : int
        Frames per block (bounds memory).

    Returns
    -------
    ndarray of int, shape (M, n_H)
        Atom indices (into ``numbers``) of the partners, hydrogens in index order.
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=float)
    hydrogens = np.flatnonzero(numbers == 1)
    heavy = np.flatnonzero(numbers > 1)
    out = np.empty((len(positions), len(hydrogens)), dtype=int)
    for start in range(0, len(positions), chunk):
        block = positions[start : start + chunk]
        diff = block[:, hydrogens, None, :] - block[:, None, heavy, :]
        out[start : start + chunk] = heavy[
            np.einsum("mhkx,mhkx->mhk", diff, diff).argmin(-1)
        ]
    return out


def reference_partners(numbers, positions) -> dict[str, list[int]]:
    """Every partner each hydrogen had in frames ``positions`` (M, N, 3), in Å.

    Returns
    -------
    dict
        ``str(hydrogen index) -> sorted heavy-atom indices`` (JSON-ready, as
        ``model.json`` stores it); empty when nothing can be checked.
    """
    numbers = np.asarray(numbers)
    if not (numbers == 1).any() or not (numbers > 1).any():
        return {}
    partners = hydrogen_partners(numbers, positions)
    hydrogens = np.flatnonzero(numbers == 1)
    return {
        str(h): sorted(set(partners[:, k].tolist())) for k, h in enumerate(hydrogens)
    }


def check_reference(numbers, reference) -> str | None:
    """What is wrong with a :func:`reference_partners` dict read from a file, or None.

    Keys must be indices of hydrogens, values non-empty lists of indices of heavy
    atoms of the molecule ``numbers``.
    """
    numbers = np.asarray(numbers)
    if not isinstance(reference, dict):
        return f"is a {type(reference).__name__}, not a dict"
    for key, partners in reference.items():
        if not (isinstance(key, str) and key.isdigit()):
            return f"has the key {key!r}, not an atom index"
        h = int(key)
        if h >= len(numbers) or numbers[h] != 1:
            return f"names atom {key}, not a hydrogen of the molecule"
        if not isinstance(partners, list) or not partners:
            return f"gives hydrogen {key} {partners!r}, not a list of atom indices"
        for a in partners:
            if not (isinstance(a, int) and 0 <= a < len(numbers) and numbers[a] > 1):
                return f"gives hydrogen {key} partner {a!r}, not a heavy atom index"
    return None


class AtomOrderCheck:
    """Compare the hydrogen partners of a structure with those of the data.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
        Atomic numbers of the model's molecule.
    reference : dict
        :func:`reference_partners` of the data.
    """

    def __init__(self, numbers, reference: dict):
        self.numbers = np.asarray(numbers)
        self.hydrogens = np.array(sorted(int(h) for h in reference), dtype=int)
        self.heavy = np.flatnonzero(self.numbers > 1)
        column = {int(a): k for k, a in enumerate(self.heavy)}
        self.allowed = np.zeros((len(self.hydrogens), len(self.heavy)), dtype=bool)
        for row, h in enumerate(self.hydrogens):
            self.allowed[row, [column[a] for a in reference[str(h)]]] = True

    def problem(self, positions: np.ndarray) -> str | None:
        """Why ``positions`` (N, 3) in Å are not in the data's order, or None."""
        if not len(self.hydrogens):
            return None
        diff = positions[self.hydrogens, None, :] - positions[None, self.heavy, :]
        nearest = np.einsum("hkx,hkx->hk", diff, diff).argmin(axis=1)
        ok = self.allowed[np.arange(len(self.hydrogens)), nearest]
        if ok.all():
            return None
        row = int(np.flatnonzero(~ok)[0])
        seen = ", ".join(self._name(a) for a in self.heavy[self.allowed[row]])
        return (
            f"hydrogen {self.hydrogens[row]} sits next to "
            f"{self._name(self.heavy[nearest[row]])}, in the model's data only next "
            f"to {seen}: the atoms are in another order than the model's data "
            "(or the molecule has reacted)"
        )

    def _name(self, index) -> str:
        return f"{chemical_symbols[self.numbers[index]]}{index}"
