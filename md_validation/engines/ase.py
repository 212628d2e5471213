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
from tqdm.auto import tqdm

from ..failure import FailureCriteria, TemperatureWatch, check_frame
from ..result import RunResult
from .common import allocate_record, trajectory_frame, trim_record

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


def run_ase(
    calc_factory,
    atoms: Atoms,
    temperature_K: float,
    n_steps: int,
    timestep_fs: float = 0.5,
    seed: int = 0,
    thermostat: str = "langevin",
    stride: int = 10,
    outdir: Path | None = None,
    tau_fs: float = 100.0,
    criteria: FailureCriteria | None = None,
    progress: bool = False,
    label: str = "",
    init_velocities: bool = True,
) -> RunResult:
    """Run MD with an ASE integrator; see :func:`md_validation.runner.run_md`."""
    criteria = criteria or FailureCriteria()
    atoms = atoms.copy()
    atoms.calc = calc_factory()
    rng = np.random.default_rng(seed)
    if init_velocities:
        thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
    dyn = make_integrator(atoms, thermostat, temperature_K, timestep_fs, tau_fs, rng)
    watch = TemperatureWatch(temperature_K, timestep_fs, criteria)
    record = allocate_record(n_steps + 1)
    traj = open(outdir / "trajectory.extxyz", "w") if outdir is not None else None
    failure = None
    step = 0
    start = time.perf_counter()
    bar = tqdm(total=n_steps, desc=label or "md", unit="step", disable=not progress)
    try:
        while True:
            energy = float(np.asarray(atoms.get_potential_energy()).reshape(-1)[0])
            forces = atoms.get_forces()
            kinetic = atoms.get_kinetic_energy()
            temperature = atoms.get_temperature()
            heat = getattr(dyn, "transferred_energy", 0.0)
            time_ps = step * timestep_fs / 1000.0
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
                atoms.numbers, atoms.positions, energy, forces, criteria
            ) or (watch.update(temperature) if step else None)
            if traj is not None and (step % stride == 0 or reason):
                frame = trajectory_frame(atoms, step, time_ps, energy, forces)
                ase.io.write(traj, frame, format="extxyz")
            if reason:
                failure = (time_ps, reason)
                break
            if step == n_steps:
                break
            dyn.step()
            step += 1
            bar.update(1)
    finally:
        bar.close()
        if traj is not None:
            traj.close()
    wall = time.perf_counter() - start
    if failure:
        logger.warning("%s failed at %.4f ps: %s", label or "run", *failure)
    return RunResult(
        record=trim_record(record, step + 1),
        failed=failure is not None,
        failure_time_ps=failure[0] if failure else None,
        failure_reason=failure[1] if failure else None,
        n_steps=n_steps,
        steps_done=step,
        wall_s=wall,
        outdir=outdir,
    )
