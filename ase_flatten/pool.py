"""A selection pool whose labels are paid for on demand: :class:`LabelledPool`.

The paper's loop needs the reference energy and forces of every pool frame. With
an oracle (:mod:`ase_flatten.oracle`), a pool may hold positions only, or mix
labelled and unlabelled frames: :meth:`LabelledPool.ensure` labels the frames the
loop is about to use (the test split, the initial set, the per-cluster error
sample, the frames it picks) and nothing else. A frame that carries labels in the
file is never sent to the oracle; a frame the oracle fails on is marked failed
and never used.

Unlabelled frames hold NaN energies and forces in :attr:`LabelledPool.dataset`,
so that any use of a label that was never paid for shows as NaN instead of a
plausible number.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .data import Dataset, frame_label, read_frames
from .exceptions import InputError

logger = logging.getLogger(__name__)

__all__ = ["LabelledPool", "read_pool"]


@dataclass
class LabelledPool:
    """Frames of one molecule, some labelled; the oracle labels the rest on demand.

    Attributes
    ----------
    dataset : Dataset
        Positions of every frame; energies (eV) and forces (eV/Å) where labelled,
        NaN elsewhere.
    labelled : ndarray of bool, shape (M,)
    failed : ndarray of bool, shape (M,)
        Frames the oracle failed on (never used).
    oracle : Oracle or None
    store : LabelStore or None
    jobs : int
        Worker processes for the oracle.
    client : distributed.Client or None
        Label on these Dask workers instead.
    spent : dict
        Oracle calls per purpose (``test``, ``initial``, ``estimate``,
        ``added``), failures included, and ``oracle_seconds``.
    """

    dataset: Dataset
    labelled: np.ndarray
    failed: np.ndarray = None
    oracle: object = None
    store: object = None
    jobs: int = 1
    client: object = None
    spent: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.failed is None:
            self.failed = np.zeros(len(self.dataset), bool)

    @property
    def complete(self) -> bool:
        """Whether every frame is labelled (the loop then needs no oracle)."""
        return bool(self.labelled.all())

    def unusable(self) -> np.ndarray:
        """Frames without labels now (unlabelled or failed): never validation."""
        return np.flatnonzero(~self.labelled)

    def ensure(self, frames, purpose: str) -> np.ndarray:
        """Label ``frames`` that are not labelled yet; returns those now usable.

        Parameters
        ----------
        frames : array of int
        purpose : str
            What the labels are for, counted in :attr:`spent`.

        Returns
        -------
        ndarray of int
            ``frames`` without those the oracle failed on, in the given order.
        """
        from .oracle import label_frames

        frames = np.asarray(frames, dtype=int)
        todo = frames[~self.labelled[frames] & ~self.failed[frames]]
        if len(todo):
            if self.oracle is None:
                raise InputError(
                    f"{self.dataset.source}: {len(todo)} frames have no labels; give "
                    "an oracle to label them"
                )
            energies, forces, ok, stats = label_frames(
                self.dataset.numbers,
                self.dataset.positions[todo],
                self.oracle,
                self.store,
                jobs=self.jobs,
                progress=False,
                client=self.client,
            )
            self.dataset.energies[todo[ok]] = energies[ok]
            self.dataset.forces[todo[ok]] = forces[ok]
            self.labelled[todo[ok]] = True
            self.failed[todo[~ok]] = True
            self.spent[purpose] = self.spent.get(purpose, 0) + stats.calls
            self.spent["reused"] = self.spent.get("reused", 0) + stats.reused
            self.spent["failed"] = self.spent.get("failed", 0) + int((~ok).sum())
            self.spent["oracle_seconds"] = (
                self.spent.get("oracle_seconds", 0.0) + stats.oracle_seconds
            )
        return frames[~self.failed[frames]]

    def calls(self) -> int:
        """Oracle calls so far (labels paid for now, failures included)."""
        keys = ("test", "initial", "estimate", "added")
        return int(sum(self.spent.get(key, 0) for key in keys))


def read_pool(
    path,
    index=None,
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> LabelledPool:
    """Read frames that may lack labels into a :class:`LabelledPool`.

    Parameters as for :func:`ase_flatten.data.read_dataset`. A frame counts as
    labelled when it has both an energy and forces; one of the two alone is
    refused (a half-labelled frame is a broken file, not a pool).
    """
    frames = read_frames(path, index, format=format)
    source = str(path) if index is None else f"{path}@{index}"
    first = frames[0]
    numbers = first.get_atomic_numbers()
    n_atoms = len(first)
    positions = np.empty((len(frames), n_atoms, 3))
    energies = np.full(len(frames), np.nan)
    forces = np.full((len(frames), n_atoms, 3), np.nan)
    for i, atoms in enumerate(frames):
        if len(atoms) != n_atoms or not np.array_equal(atoms.numbers, numbers):
            raise InputError(
                f"{source}: frame {i} is {atoms.get_chemical_formula()}, frame 0 is "
                f"{first.get_chemical_formula()}: a pool holds one molecule, atoms "
                "in the same order"
            )
        positions[i] = atoms.positions
        energy = frame_label(atoms, energy_key, "energy")
        frame_forces = frame_label(atoms, forces_key, "forces")
        if (energy is None) != (frame_forces is None):
            has = "an energy" if energy is not None else "forces"
            raise InputError(
                f"{source}: frame {i} has {has} but not the other; label both or "
                "neither"
            )
        if energy is not None:
            energies[i] = float(np.asarray(energy, dtype=float).reshape(-1)[0])
            forces[i] = np.asarray(frame_forces, dtype=float).reshape(n_atoms, 3)
    if not np.isfinite(positions).all():
        raise InputError(f"{source}: positions that are not finite numbers")
    labelled = np.isfinite(energies) & np.isfinite(forces).all(axis=(1, 2))
    # the Dataset checks finite labels when made: made with zeros, NaN put in after
    dataset = Dataset(
        numbers,
        positions,
        np.where(labelled, energies, 0.0),
        np.where(labelled[:, None, None], forces, 0.0),
        source=source,
        energy_key=energy_key,  # recorded by the model, as read_dataset's
        forces_key=forces_key,
    )
    dataset.energies[~labelled] = np.nan
    dataset.forces[~labelled] = np.nan
    logger.info(
        "read a pool of %d frames of %s from %s: %d labelled, %d to label on demand",
        len(frames),
        dataset.formula,
        source,
        labelled.sum(),
        (~labelled).sum(),
    )
    return LabelledPool(dataset, labelled)
