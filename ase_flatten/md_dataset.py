"""Small real datasets made on the spot: GFN2-xTB molecular dynamics with tblite.

The demo and the tests need labelled MD frames without downloading anything. This
module runs the same protocol as the reference datasets (relax, Langevin NVT at
500 K with a 0.5 fs step, 1 ps equilibration, every 5th step stored) at a size of
your choice, and labels frames with another method (GFN1-xTB) to get a realistic
"model vs reference" pair whose errors differ by region, without any training.

:func:`make_md_dataset` returns the frames in memory; :func:`write_md_dataset`
writes a long run to a file in checkpointed chunks and continues an interrupted
run (``resume``) to the same frames, bit for bit, as an uninterrupted one.

Needs the ``xtb`` extra: ``pip install 'ase-flatten[xtb]'``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units

from .data import Dataset
from .exceptions import InputError
from .files import (
    RunFolder,
    atomic_path,
    check_output_file,
    partial_directory,
    write_json,
)

logger = logging.getLogger(__name__)

#: The name :func:`write_md_dataset` records in the marker of its work folder.
COMMAND = "write_md_dataset"
#: The state of an interrupted :func:`write_md_dataset` run, in its work folder.
CHECKPOINT = "checkpoint.json"


@dataclass(frozen=True)
class MDProtocol:
    """The MD that samples the frames: relax, Langevin NVT, equilibrate, store.

    Parameters
    ----------
    temperature_K : float
        Thermostat temperature in K.
    timestep_fs : float
        MD time step in fs.
    stride : int
        MD steps between stored frames.
    equilibration_fs : float
        MD time in fs before the first stored frame.
    friction_per_fs : float
        Langevin friction in 1/fs.
    method : str
        xTB method for the forces and the labels (GFN2-xTB, GFN1-xTB, IPEA1-xTB).
    seed : int
        Seeds the initial velocities and the thermostat noise: the same seed gives
        the same frames on the same machine (xTB runs on one thread).
    """

    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    stride: int = 5
    equilibration_fs: float = 1000.0
    friction_per_fs: float = 0.01
    method: str = "GFN2-xTB"
    seed: int = 0


def xtb_calculator(method: str = "GFN2-xTB"):
    """tblite's ASE calculator for ``method`` (GFN2-xTB, GFN1-xTB, IPEA1-xTB)."""
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise InputError(
            "tblite is not installed: pip install 'ase-flatten[xtb]'"
        ) from exc
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
        the same frames on the same machine (xTB runs on one thread).

    Returns
    -------
    Dataset
    """
    protocol = MDProtocol(
        temperature_K, timestep_fs, stride, equilibration_fs, friction_per_fs,
        method, seed,
    )  # fmt: skip
    atoms = build_molecule(molecule)
    with _one_thread():
        dyn = _start_md(atoms, protocol)
        return _sample(dyn, n_frames, protocol, progress=progress)


def _one_thread():
    """BLAS and OpenMP (tblite) on one thread: the same seed gives the same bytes,
    in any process, whatever thread settings an earlier caller left behind."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def write_md_dataset(
    path: str | os.PathLike,
    molecule: str | Atoms,
    n_frames: int,
    protocol: MDProtocol | None = None,
    chunk_size: int = 200,
    resume: bool = False,
    overwrite: bool = False,
    inputs: Iterable = (),
    progress: bool | None = None,
) -> Path:
    """Run the MD of :func:`make_md_dataset` into an extxyz file, resumably.

    The frames go in chunks into the work folder ``PATH.partial``: each chunk an
    extxyz file written atomically, then ``checkpoint.json`` (frames done,
    positions, momenta, the thermostat's random state and the calculator's
    results) with tblite's wavefunction, the start of the next SCF. An
    interrupted run continues from its last chunk with ``resume``; the frames are
    then identical, bit for bit, to those of an uninterrupted run (one thread,
    the same machine and versions). At the end the chunks are joined into
    ``path`` (atomically) and the work folder is removed.

    Parameters
    ----------
    path : path
        The output extxyz file, readable by :func:`~ase_flatten.data.read_dataset`.
    molecule : str or ase.Atoms
        A name from ``ase.build.molecule`` or a starting structure.
    n_frames : int
        Frames to store after equilibration.
    protocol : MDProtocol, optional
        The MD settings (default: ``MDProtocol()``). With ``n_frames``, the
        molecule's starting structure (its SHA-256) and the versions of ase,
        tblite and numpy, they must equal those of the interrupted run to resume
        it.
    chunk_size : int
        Frames per chunk (per checkpoint); may change on resume.
    resume : bool
        Continue the interrupted run in ``PATH.partial``.
    overwrite : bool
        Replace an existing ``path`` at the end, and start an interrupted run
        again (removing its work folder) instead of refusing.
    inputs : iterable of path
        Files the run reads (the structure file); ``path`` must not be one.
    progress : bool, optional
        Show a progress bar (default: on a terminal).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        One line: ``path`` exists without ``overwrite``, the work folder holds an
        interrupted run without ``resume`` or ``overwrite``, or one with other
        settings.
    """
    if n_frames < 1 or chunk_size < 1:
        raise InputError(f"{path}: need n_frames >= 1 and chunk_size >= 1")
    protocol = protocol or MDProtocol()
    check_output_file(path, overwrite, inputs)
    atoms = build_molecule(molecule)
    settings = _run_settings(atoms, n_frames, protocol)
    work = partial_directory(path)
    folder = RunFolder.open(work, COMMAND, settings, overwrite, resume)
    state = _read_checkpoint(folder)
    with folder, _one_thread():
        if state is None:
            dyn = _start_md(atoms, protocol)
            state = {"frames_done": 0, "chunks": []}
        else:
            dyn = _restore_md(atoms, protocol, state, work)
            logger.info("resuming %s at frame %d", work, state["frames_done"])
        _run_chunks(dyn, work, state, n_frames, protocol, chunk_size, progress)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            for name in state["chunks"]:
                with open(work / name, "rb") as chunk:
                    shutil.copyfileobj(chunk, out)
        shutil.rmtree(work)
    logger.info("%d frames -> %s", n_frames, path)
    return Path(path)


def build_molecule(molecule: str | Atoms) -> Atoms:
    """A copy of ``molecule``, or the structure ``ase.build.molecule`` names."""
    from ase.build import molecule as ase_molecule

    if not isinstance(molecule, str):
        return molecule.copy()
    try:
        return ase_molecule(molecule)
    except KeyError as exc:
        raise InputError(
            f"{molecule!r}: not a molecule ase.build.molecule knows "
            "(e.g. CH3CH2OH), nor a structure file"
        ) from exc


def _start_md(atoms: Atoms, protocol: MDProtocol):
    """Relax, draw velocities, equilibrate; the thermostat, ready to sample."""
    from ase.md.velocitydistribution import (
        Stationary,
        ZeroRotation,
        thermalize_momenta,
    )
    from ase.optimize import BFGS

    atoms.calc = xtb_calculator(protocol.method)
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=200)
    rng = np.random.default_rng(protocol.seed)
    thermalize_momenta(atoms, protocol.temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = _langevin(atoms, protocol, rng)
    dyn.run(int(round(protocol.equilibration_fs / protocol.timestep_fs)))
    return dyn


def _langevin(atoms: Atoms, protocol: MDProtocol, rng: np.random.Generator):
    """Langevin NVT of ``atoms`` (centre of mass fixed) drawing noise from ``rng``."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    atoms.set_constraint(FixCom())
    return Langevin(
        atoms,
        timestep=protocol.timestep_fs * units.fs,
        temperature_K=protocol.temperature_K,
        friction=protocol.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )


def _sample(
    dyn, n_frames: int, protocol: MDProtocol, progress: bool | None = None, bar=None
) -> Dataset:
    """Run ``n_frames * stride`` steps of ``dyn``, storing every ``stride``-th."""
    from tqdm.auto import tqdm

    atoms = dyn.atoms
    positions = np.empty((n_frames, len(atoms), 3))
    energies = np.empty(n_frames)
    forces = np.empty((n_frames, len(atoms), 3))
    disable = None if progress is None else not progress
    if bar is None:
        frames = tqdm(
            range(n_frames), desc=f"{protocol.method} MD", unit="frame",
            disable=disable,
        )  # fmt: skip
    else:
        frames = range(n_frames)
    for i in frames:
        dyn.run(protocol.stride)
        positions[i] = atoms.positions
        energies[i] = atoms.get_potential_energy()
        # the raw xTB forces: FixCom's adjustment is for the integrator only
        forces[i] = atoms.get_forces(apply_constraint=False)
        if bar is not None:
            bar.update()
    name = (
        f"{atoms.get_chemical_formula()} {protocol.method} MD "
        f"{protocol.temperature_K:g} K"
    )
    return Dataset(atoms.numbers, positions, energies, forces, source=name)


# -- the resumable run ----------------------------------------------------------


def _run_settings(atoms: Atoms, n_frames: int, protocol: MDProtocol) -> dict:
    """What must not change between an interrupted run and its continuation."""
    from importlib.metadata import version

    structure = hashlib.sha256()
    structure.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    structure.update(np.ascontiguousarray(atoms.positions, dtype=float).tobytes())
    return {
        "molecule": atoms.get_chemical_formula(),
        "structure_sha256": structure.hexdigest(),
        "n_frames": int(n_frames),
        **asdict(protocol),
        "versions": {name: version(name) for name in ("ase", "tblite", "numpy")},
    }


def _read_checkpoint(folder: RunFolder) -> dict | None:
    """The checkpoint of the interrupted run ``folder`` continues, or None."""
    checkpoint = folder.path / CHECKPOINT
    if folder.resumed and checkpoint.exists():
        return json.loads(checkpoint.read_text())
    return None


def _run_chunks(
    dyn,
    work: Path,
    state: dict,
    n_frames: int,
    protocol: MDProtocol,
    chunk_size: int,
    progress: bool | None,
) -> None:
    """Sample the missing frames chunk by chunk, checkpointing after each."""
    from tqdm.auto import tqdm

    first, start = state["frames_done"], time.perf_counter()
    disable = None if progress is None else not progress
    with tqdm(
        total=n_frames, initial=first, desc=f"{protocol.method} MD", unit="frame",
        disable=disable,
    ) as bar:  # fmt: skip
        while state["frames_done"] < n_frames:
            done = state["frames_done"]
            size = min(chunk_size, n_frames - done)
            chunk = _sample(dyn, size, protocol, bar=bar)
            name = f"chunk_{len(state['chunks']):05d}.extxyz"
            chunk.write(work / name, frame=np.arange(done, done + size))
            state["chunks"].append(name)
            state["frames_done"] = done + size
            _save_checkpoint(dyn, work, state)
            rate = (done + size - first) / (time.perf_counter() - start) * 60
            logger.info(
                "%d/%d frames, %.1f frames/min, about %.0f min left",
                done + size, n_frames, rate, (n_frames - done - size) / rate,
            )  # fmt: skip


def _save_checkpoint(dyn, work: Path, state: dict) -> None:
    """Write the MD state after the last chunk: the wavefunction, then the JSON.

    The wavefunction of each checkpoint has its own file, named in the JSON, so
    an interruption between the two writes leaves the previous pair intact.
    """
    atoms, calc = dyn.atoms, dyn.atoms.calc
    wavefunction = f"wavefunction_{len(state['chunks']) - 1:05d}.npz"
    with atomic_path(work / wavefunction) as tmp:
        calc._res.save(tmp)  # tblite keeps no public handle on its restart data
    previous = state.get("wavefunction")
    state.update(
        wavefunction=wavefunction,
        positions=atoms.positions,
        momenta=atoms.get_momenta(),
        rng=dyn.rng.bit_generator.state,
        results=calc.results,
    )
    write_json(work / CHECKPOINT, state)
    if previous and previous != wavefunction:
        (work / previous).unlink(missing_ok=True)


def _restore_md(atoms: Atoms, protocol: MDProtocol, state: dict, work: Path):
    """The thermostat of an interrupted run, as it was after its last chunk.

    The calculator gets back its results at these positions (else the next step
    would recompute the forces) and its wavefunction (the next SCF starts from
    it): without either the run would continue with forces different in the
    last digits and soon a different trajectory.
    """
    from tblite.interface import Result

    atoms.set_constraint()
    atoms.set_positions(np.array(state["positions"]))
    atoms.set_momenta(np.array(state["momenta"]))
    calc = xtb_calculator(protocol.method)
    atoms.calc = calc
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    dyn = _langevin(atoms, protocol, rng)
    calc.atoms = atoms.copy()
    calc.results = {
        key: np.array(value) if isinstance(value, list) else value
        for key, value in state["results"].items()
    }
    wavefunction = Result()
    wavefunction.load(str(work / state["wavefunction"]))
    calc._res = wavefunction
    return dyn


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
