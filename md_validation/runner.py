"""One runner interface for both engines: :func:`run_md`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator

from ase_flatten.exceptions import InputError

from .engines import ENGINES, THERMOSTATS
from .failure import FailureCriteria
from .result import RunResult

logger = logging.getLogger(__name__)

__all__ = ["calculator_factory", "run_md"]


def calculator_factory(model) -> Callable[[], Calculator]:
    """A zero-argument callable building a calculator for ``model``.

    Parameters
    ----------
    model : str, path, SavedModel, Calculator or callable
        A saved model directory (or loaded :class:`~ase_flatten.models.SavedModel`)
        becomes a :class:`~ase_flatten.FlattenedCalculator`; a calculator is
        returned as is (the ``ipi`` engine uses it in a forked copy); a callable is
        taken to be a factory already.
    """
    if isinstance(model, Calculator):
        return lambda: model
    if callable(model):
        return model
    from ase_flatten.calculator import FlattenedCalculator
    from ase_flatten.models import SavedModel, load_model

    saved = model if isinstance(model, SavedModel) else load_model(model)
    return lambda: FlattenedCalculator(saved)


def run_md(
    calc_factory,
    atoms: Atoms,
    temperature_K: float = 300.0,
    n_steps: int = 1000,
    timestep_fs: float = 0.5,
    seed: int = 0,
    engine: str = "ase",
    thermostat: str | None = None,
    stride: int = 10,
    outdir: str | Path | None = None,
    tau_fs: float = 100.0,
    criteria: FailureCriteria | None = None,
    progress: bool = False,
    label: str = "",
) -> RunResult:
    """Run one seeded NVT (or NVE) MD run and check it for failure on every step.

    Parameters
    ----------
    calc_factory : callable, Calculator, str or path
        Builds the calculator (see :func:`calculator_factory`).
    atoms : Atoms
        Starting frame; velocities are drawn from Maxwell-Boltzmann at
        ``temperature_K`` (seeded; i-PI draws its own with the same seed).
    temperature_K : float
        Thermostat target (K); also the initial velocity temperature.
    n_steps : int
        Number of MD steps.
    timestep_fs : float
        Time step (fs).
    seed : int
        Seed of the velocities and the thermostat noise.
    engine : {"ase", "ipi"}
    thermostat : {"langevin", "bussi", "svr", "nve"}, optional
        Default: ``langevin`` for ase, ``svr`` for ipi. ``bussi`` and ``svr``
        are the same thermostat.
    stride : int
        Steps between saved trajectory frames.
    outdir : path, optional
        Run folder for ``thermo.csv``, ``trajectory.extxyz``, ``run.json`` (and
        i-PI's files); required by the ipi engine.
    tau_fs : float
        Thermostat time constant (fs).
    criteria : FailureCriteria, optional
        Failure rule thresholds.
    progress : bool
        Show a tqdm bar over steps.
    label : str
        Name of the run in logs and the progress bar.

    Returns
    -------
    RunResult
        Record of energies, temperature and conserved quantity at every step, and
        whether and when the run failed (a failed run stops at that step).
    """
    if engine not in ENGINES:
        raise InputError(
            f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}"
        )
    thermostat = thermostat or ("langevin" if engine == "ase" else "svr")
    if thermostat not in THERMOSTATS[engine]:
        raise InputError(
            f"unknown thermostat {thermostat!r} for engine {engine}; choose one of "
            f"{', '.join(THERMOSTATS[engine])}"
        )
    if n_steps < 1 or stride < 1 or timestep_fs <= 0 or temperature_K <= 0:
        raise InputError(
            "n_steps and stride must be >= 1, timestep and temperature positive"
        )
    factory = calculator_factory(calc_factory)
    if outdir is not None:
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        temperature_K=temperature_K,
        n_steps=n_steps,
        timestep_fs=timestep_fs,
        seed=seed,
        thermostat=thermostat,
        stride=stride,
        outdir=outdir,
        tau_fs=tau_fs,
        criteria=criteria,
        progress=progress,
        label=label,
    )
    if engine == "ase":
        from .engines.ase import run_ase as run
    else:
        from .engines.ipi import run_ipi as run
    result = run(factory, atoms, **kwargs)
    result.meta = dict(
        engine=engine,
        thermostat=thermostat,
        temperature_K=temperature_K,
        timestep_fs=timestep_fs,
        seed=seed,
        stride=stride,
        tau_fs=tau_fs,
        label=label,
    )
    result.save()
    logger.info(
        "%s: %d/%d steps, %.0f steps/s%s",
        label or engine,
        result.steps_done,
        n_steps,
        result.steps_per_second,
        f", FAILED at {result.failure_time_ps:.3f} ps" if result.failed else "",
    )
    return result
