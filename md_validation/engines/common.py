"""Pieces both engines share: trajectory frames, records, model errors."""

from __future__ import annotations

import logging
import time

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..result import COLUMNS, RunResult

logger = logging.getLogger(__name__)


class StepProgress:
    """Progress over one run's MD steps: a tqdm bar, or a log line every so often.

    The bar shows on a terminal (``progress``); off one (a batch job, a log
    file, a worker process) ``log_every_ps`` > 0 logs one INFO line each time
    that much simulated time has passed: where the run is, its speed and about
    how long it has left. Used as the engines used tqdm: ``update(k)``, ``n``,
    ``close()``.

    Parameters
    ----------
    total : int
        Steps of the run.
    timestep_fs : float
    label : str
        Name of the run.
    progress : bool
        Show a tqdm bar.
    log_every_ps : float
        Simulated ps between log lines (0: none).
    """

    def __init__(
        self,
        total: int,
        timestep_fs: float,
        label: str = "",
        progress: bool = False,
        log_every_ps: float = 0.0,
    ):
        from tqdm.auto import tqdm

        self.total, self.timestep_fs, self.label = total, timestep_fs, label or "md"
        self.bar = tqdm(total=total, desc=self.label, unit="step", disable=not progress)
        self.every = 0
        if log_every_ps and log_every_ps > 0:
            self.every = max(1, int(round(log_every_ps * 1000.0 / timestep_fs)))
        self.n = 0
        self._next = self.every
        self._start = time.perf_counter()

    def update(self, steps: int = 1) -> None:
        """``steps`` more steps done."""
        if steps <= 0:
            return
        self.n += steps
        self.bar.update(steps)
        if self.every and self.n >= self._next and self.n < self.total:
            self._next = (self.n // self.every + 1) * self.every
            self._log()

    def _log(self) -> None:
        wall = time.perf_counter() - self._start
        rate = self.n / wall if wall > 0 else float("nan")
        left = (self.total - self.n) / rate if rate > 0 else float("nan")
        logger.info(
            "%s: %.4g of %.4g ps (%d/%d steps), %.0f steps/s, about %.0f s left",
            self.label,
            self.n * self.timestep_fs / 1000.0,
            self.total * self.timestep_fs / 1000.0,
            self.n,
            self.total,
            rate,
            left,
        )

    def close(self) -> None:
        self.bar.close()


def allocate_record(n_rows: int) -> dict[str, np.ndarray]:
    """A record of ``n_rows`` NaN rows (step column zero)."""
    record = {name: np.full(n_rows, np.nan) for name in COLUMNS}
    record["step"] = np.zeros(n_rows)
    return record


def trim_record(record: dict, n_rows: int) -> dict:
    """The first ``n_rows`` rows of a record."""
    return {name: np.asarray(values[:n_rows]) for name, values in record.items()}


def trajectory_frame(
    atoms: Atoms, step: int, time_ps: float, energy: float, forces=None
) -> Atoms:
    """A copy of ``atoms`` labelled with its step, time, energy and forces."""
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    if atoms.has("momenta"):
        frame.set_momenta(atoms.get_momenta())
    frame.info.update(step=int(step), time_ps=float(time_ps))
    frame.calc = SinglePointCalculator(frame, energy=float(energy), forces=forces)
    return frame


def model_error_reason(exc: BaseException) -> str:
    """The failure reason of a run whose model raised ``exc``.

    A model that raises during MD (a library error, an out-of-memory, a geometry
    it refuses) makes that replica fail with this reason; the validation goes on
    with the next replica.
    """
    return f"model error: {type(exc).__name__}: {exc}"


def finish_run(
    record: dict,
    failure: tuple[int, str] | None,
    steps_done: int,
    settings,
    wall_s: float,
    outdir,
    label: str = "",
) -> RunResult:
    """The end of a run, the same for every engine: log a failure, make the result.

    Parameters
    ----------
    record : dict of ndarray
        The run's record, already ending at the failing step.
    failure : (int, str) or None
        The failing MD step and the reason, None for a run that went the distance.
    steps_done : int
        The last MD step reached (the failing step for a failed run).
    settings : RunSettings
        The run's settings.
    wall_s : float
        Wall time of the run (s).
    outdir : Path or None
        The run folder.
    label : str
        Name of the run in logs.
    """
    failure_time = settings.time_ps(failure[0]) if failure else None
    if failure:
        logger.warning(
            "%s failed at %.4f ps: %s", label or "run", failure_time, failure[1]
        )
    return RunResult(
        record=record,
        failed=failure is not None,
        failure_time_ps=failure_time,
        failure_reason=failure[1] if failure else None,
        n_steps=settings.n_steps,
        steps_done=steps_done,
        wall_s=wall_s,
        outdir=outdir,
    )
