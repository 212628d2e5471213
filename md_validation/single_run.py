"""One runner interface for both engines: :func:`run_md`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator

from .result import RunResult
from .settings import RunSettings

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
    *,
    outdir: str | Path | None = None,
    progress: bool = False,
    label: str = "",
    settings: RunSettings | None = None,
    log_every_ps: float = 0.0,
    **options,
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
    outdir : path, optional
        Run folder for ``thermo.csv``, ``trajectory.extxyz``, ``run.json`` (and
        i-PI's files); required by the ipi engine.
    progress : bool
        Show a tqdm bar over steps.
    log_every_ps : float
        Off a terminal: log where the run is every this many simulated ps
        (0: never); see :class:`md_validation.engines.common.StepProgress`.
    label : str
        Name of the run in logs and the progress bar.
    settings : RunSettings, optional
        All settings at once; then ``temperature_K``, ``n_steps`` and
        ``options`` are ignored.
    **options
        The other fields of :class:`~md_validation.settings.RunSettings`:
        ``timestep_fs``, ``seed``, ``engine`` ("ase" or "ipi"), ``thermostat``,
        ``stride``, ``tau_fs``, ``criteria``.

    Returns
    -------
    RunResult
        Record of energies, temperature and conserved quantity at every step, and
        whether and when the run failed (a failed run stops at that step).
    """
    if settings is None:
        settings = RunSettings(temperature_K=temperature_K, n_steps=n_steps, **options)
    factory = calculator_factory(calc_factory)
    if outdir is not None:
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
    if settings.engine == "ase":
        from .engines.ase import run_ase as run
    else:
        from .engines.ipi import run_ipi as run
    result = run(
        factory,
        atoms,
        settings,
        outdir,
        progress=progress,
        label=label,
        log_every_ps=log_every_ps,
    )
    result.meta = dict(settings.describe(), label=label)
    result.save()
    logger.info(
        "%s: %d/%d steps, %.0f steps/s%s",
        label or settings.engine,
        result.steps_done,
        settings.n_steps,
        result.steps_per_second,
        f", FAILED at {result.failure_time_ps:.3f} ps" if result.failed else "",
    )
    return result
