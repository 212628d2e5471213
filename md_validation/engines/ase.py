"""The ``ase`` engine: NVT (or NVE) MD with ASE integrators in this process.

Thermostats: ``langevin`` uses :class:`ase.md.langevinbaoab.LangevinBAOAB` (its
Ornstein-Uhlenbeck step is separate from the Hamiltonian steps, so the heat it
exchanges is booked exactly and the conserved quantity is meaningful; the older
:class:`ase.md.langevin.Langevin` mixes the two); ``bussi``/``svr`` uses
:class:`ase.md.bussi.Bussi` (stochastic velocity rescaling, the same thermostat as
i-PI's ``svr``); ``nve`` uses :class:`ase.md.verlet.VelocityVerlet`. The conserved
quantity is the total energy minus the heat the thermostat put in.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.md.bussi import Bussi
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.velocitydistribution import (
    Stationary,
    ZeroRotation,
    thermalize_momenta,
)
from ase.md.verlet import VelocityVerlet

from ..failure import TemperatureWatch, check_frame
from ..result import RunResult
from ..settings import RunSettings
from .common import (
    StepProgress,
    allocate_record,
    finish_run,
    model_error_reason,
    trajectory_frame,
    trim_record,
)

logger = logging.getLogger(__name__)


class _BookedLangevin(LangevinBAOAB):
    """LangevinBAOAB that books the kinetic energy its thermostat step adds."""

    transferred_energy = 0.0

    def _BAOAB_OU(self, drag_gamma_mod=0.0):
        before = self.atoms.get_kinetic_energy()
        super()._BAOAB_OU(drag_gamma_mod)
        self.transferred_energy += self.atoms.get_kinetic_energy() - before


def make_integrator(atoms, thermostat, temperature_K, timestep_fs, tau_fs, rng):
    """The ASE integrator for ``thermostat`` (see the module docstring)."""
    dt = timestep_fs * units.fs
    if thermostat == "langevin":
        return _BookedLangevin(
            atoms, dt, temperature_K=temperature_K, T_tau=tau_fs * units.fs, rng=rng
        )
    if thermostat in ("bussi", "svr"):
        return Bussi(
            atoms, dt, temperature_K=temperature_K, taut=tau_fs * units.fs, rng=rng
        )
    if thermostat == "nve":
        return VelocityVerlet(atoms, dt)
    raise ValueError(f"unknown thermostat {thermostat!r}")


class _ModelError(Exception):
    """The model raised inside an MD step; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _call_model(function, *args):
    """``function(*args)``; an exception from the model becomes :class:`_ModelError`."""
    try:
        return function(*args)
    except Exception as exc:
        raise _ModelError(model_error_reason(exc)) from exc


def _energy_and_forces(atoms: Atoms) -> tuple[float, np.ndarray]:
    energy = float(np.asarray(atoms.get_potential_energy()).reshape(-1)[0])
    return energy, atoms.get_forces()


def run_ase(
    calc_factory,
    atoms: Atoms,
    settings: RunSettings,
    outdir: Path | None = None,
    progress: bool = False,
    label: str = "",
    init_velocities: bool = True,
    log_every_ps: float = 0.0,
) -> RunResult:
    """Run MD with an ASE integrator; see :func:`md_validation.single_run.run_md`.

    A model that raises during the run makes it a failed run (reason ``"model
    error: <type>: <message>"``, at the step whose energy or forces it could not
    give; the record ends at the step before).
    """
    s = settings
    atoms = atoms.copy()
    atoms.calc = calc_factory()
    rng = np.random.default_rng(s.seed)
    if init_velocities:
        thermalize_momenta(atoms, temperature_K=s.temperature_K, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
    watch = TemperatureWatch(s.temperature_K, s.timestep_fs, s.criteria)
    record = allocate_record(s.n_steps + 1)
    traj = open(outdir / "trajectory.extxyz", "w") if outdir is not None else None
    failure = None
    step = 0
    n_rows = None  # rows of the record: up to the last step with an energy
    n_frames = 0
    start = time.perf_counter()
    bar = StepProgress(s.n_steps, s.timestep_fs, label, progress, log_every_ps)
    try:
        # LangevinBAOAB asks for the first forces already
        dyn = _call_model(
            make_integrator,
            atoms,
            s.thermostat,
            s.temperature_K,
            s.timestep_fs,
            s.tau_fs,
            rng,
        )
        while True:
            time_ps = s.time_ps(step)
            energy, forces = _call_model(_energy_and_forces, atoms)
            kinetic = atoms.get_kinetic_energy()
            temperature = atoms.get_temperature()
            heat = getattr(dyn, "transferred_energy", 0.0)
            row = {
                "step": step,
                "time_ps": time_ps,
                "potential_eV": energy,
                "kinetic_eV": kinetic,
                "total_eV": energy + kinetic,
                "temperature_K": temperature,
                "conserved_eV": energy + kinetic - heat,
            }
            for name, value in row.items():
                record[name][step] = value
            reason = check_frame(
                atoms.numbers, atoms.positions, energy, forces, s.criteria
            ) or (watch.update(temperature) if step else None)
            if traj is not None and (step % s.stride == 0 or reason):
                frame = trajectory_frame(atoms, step, time_ps, energy, forces)
                ase.io.write(traj, frame, format="extxyz")
                n_frames += 1
            if reason:
                failure = (step, reason)
                break
            if step == s.n_steps:
                break
            step += 1
            _call_model(dyn.step)  # the integrators ask for the new step's forces
            bar.update(1)
    except _ModelError as exc:  # a failed run, not a crash
        logger.debug("%s: the model raised", label or "run", exc_info=True)
        failure = (step, exc.reason)
        n_rows = step  # this step has no energy
    finally:
        bar.close()
        if traj is not None:
            traj.close()
            if not n_frames:  # the model raised at once: no frame, no file
                Path(traj.name).unlink()
    wall = time.perf_counter() - start
    record = trim_record(record, step + 1 if n_rows is None else n_rows)
    return finish_run(record, failure, step, s, wall, outdir, label)
