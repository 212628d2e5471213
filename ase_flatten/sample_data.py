"""Small real datasets made on the spot: GFN2-xTB molecular dynamics with tblite.

The demo and the tests need labelled MD frames without downloading anything. This
module runs the same protocol as the reference datasets (relax, Langevin NVT at
500 K with a 0.5 fs step, 1 ps equilibration, every 5th step stored) at a size of
your choice, and labels frames with another method (GFN1-xTB) to get a realistic
"model vs reference" pair whose errors differ by region, without any training.

Needs the ``xtb`` extra: ``pip install 'ase-flatten[xtb]'``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from ase import Atoms, units

from .data import Dataset
from .exceptions import InputError

logger = logging.getLogger(__name__)


def xtb_calculator(method: str = "GFN2-xTB"):
    """tblite's ASE calculator for ``method`` (GFN2-xTB, GFN1-xTB, IPEA1-xTB)."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise InputError(
            "tblite is not installed: pip install 'ase-flatten[xtb]'"
        ) from None
    return TBLite(method=method, verbosity=0)


def make_md_dataset(
    molecule: str | Atoms = "CH3CH2OH",
    n_frames: int = 2000,
    temperature_K: float = 500.0,
    timestep_fs: float = 0.5,
    stride: int = 5,
    equilibration_fs: float = 1000.0,
    friction_per_fs: float = 0.01,
    method: str = "GFN2-xTB",
    seed: int = 0,
    progress: bool | None = None,
) -> Dataset:
    """Run Langevin NVT with an xTB calculator and return the stored frames.

    Parameters
    ----------
    molecule : str or ase.Atoms
        A name from ``ase.build.molecule`` (e.g. ``"CH3CH2OH"`` for ethanol) or a
        starting structure.
    n_frames : int
        Frames to store after equilibration.
    temperature_K, timestep_fs, stride, equilibration_fs, friction_per_fs
        The MD protocol; frames are ``stride`` steps apart.
    method : str
        xTB method for the reference labels.
    seed : int
        Seeds the initial velocities and the thermostat noise: the same seed gives
        the same frames on the same machine (run with one thread).

    Returns
    -------
    Dataset
    """
    from ase.build import molecule as build_molecule
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import (
        Stationary,
        ZeroRotation,
        thermalize_momenta,
    )
    from ase.optimize import BFGS
    from tqdm.auto import tqdm

    if isinstance(molecule, str):
        try:
            atoms = build_molecule(molecule)
        except KeyError:
            raise InputError(
                f"{molecule!r}: not a molecule ase.build.molecule knows "
                "(e.g. CH3CH2OH), nor a structure file"
            ) from None
    else:
        atoms = molecule.copy()
    atoms.calc = xtb_calculator(method)
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=200)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    dyn.run(int(round(equilibration_fs / timestep_fs)))

    positions = np.empty((n_frames, len(atoms), 3))
    energies = np.empty(n_frames)
    forces = np.empty((n_frames, len(atoms), 3))
    disable = None if progress is None else not progress
    for i in tqdm(range(n_frames), desc=f"{method} MD", unit="frame", disable=disable):
        dyn.run(stride)
        positions[i] = atoms.positions
        energies[i] = atoms.get_potential_energy()
        # the raw xTB forces: FixCom's adjustment is for the integrator only
        forces[i] = atoms.get_forces(apply_constraint=False)
    name = f"{atoms.get_chemical_formula()} {method} MD {temperature_K:g} K"
    return Dataset(atoms.numbers, positions, energies, forces, source=name)


def relabel(
    dataset: Dataset, method: str = "GFN1-xTB", progress: bool | None = None
) -> Dataset:
    """The same frames labelled by another xTB method (a stand-in for a model)."""
    from .error_analysis import predict_with_calculator

    energies, forces = predict_with_calculator(
        dataset, xtb_calculator(method), progress=progress
    )
    return Dataset(
        dataset.numbers,
        dataset.positions,
        energies,
        forces,
        source=f"{dataset.source} relabelled with {method}",
    )


def make_example_files(
    directory: str | os.PathLike,
    n_frames: int = 3000,
    seed: int = 0,
    predictions: bool = False,
) -> tuple[str, str | None]:
    """Write the demo's ethanol dataset (and GFN1-xTB "predictions"), once.

    Returns the paths of ``ethanol_gfn2_500K.extxyz`` (reference) and, with
    ``predictions``, ``ethanol_gfn1_predictions.extxyz`` (else None); existing files
    are reused.
    """
    from .data import read_dataset

    directory = os.fspath(directory)
    reference = os.path.join(directory, "ethanol_gfn2_500K.extxyz")
    predicted = os.path.join(directory, "ethanol_gfn1_predictions.extxyz")
    if os.path.exists(reference):
        dataset = read_dataset(reference)
    else:
        logger.info("making %d frames of ethanol GFN2-xTB MD at 500 K", n_frames)
        dataset = make_md_dataset("CH3CH2OH", n_frames=n_frames, seed=seed)
        dataset.write(reference)
    if not predictions:
        return reference, None
    if not os.path.exists(predicted):
        logger.info("labelling them with GFN1-xTB")
        relabel(dataset, "GFN1-xTB").write(predicted)
    return reference, predicted
