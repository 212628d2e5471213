"""Pieces both engines share: trajectory frames, records, model errors."""

from __future__ import annotations

import logging

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..result import COLUMNS, RunResult

logger = logging.getLogger(__name__)


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
