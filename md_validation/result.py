"""The record every engine produces: thermodynamics over time, plus run status."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ase_flatten.files import atomic_path, write_text

__all__ = [
    "COLUMNS",
    "RUN_FILE",
    "RunResult",
    "empty_record",
    "read_record",
    "write_record",
]

#: A run folder's status file, written last: its presence marks a finished run.
RUN_FILE = "run.json"

#: Columns of a run's record (``thermo.csv``), the same for every engine.
COLUMNS = (
    "step",
    "time_ps",
    "potential_eV",
    "kinetic_eV",
    "total_eV",
    "temperature_K",
    "conserved_eV",
)


def empty_record() -> dict[str, np.ndarray]:
    """A record without rows."""
    return {name: np.empty(0) for name in COLUMNS}


def write_record(path: str | Path, record: dict[str, np.ndarray]) -> None:
    """Write a record as CSV with the :data:`COLUMNS` header."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in zip(*(record[name] for name in COLUMNS), strict=True):
            writer.writerow([int(row[0])] + [f"{value:.10g}" for value in row[1:]])


def read_record(path: str | Path) -> dict[str, np.ndarray]:
    """Read a record written by :func:`write_record` (it may have no rows)."""
    rows = Path(path).read_text().splitlines()[1:]
    data = np.empty((0, len(COLUMNS)))  # a run whose model raised at once
    if rows:
        data = np.loadtxt(rows, delimiter=",", ndmin=2)
    return {name: data[:, k] for k, name in enumerate(COLUMNS)}


@dataclass
class RunResult:
    """Outcome of one MD run.

    Attributes
    ----------
    record : dict of ndarray
        :data:`COLUMNS` over time (eV, K, ps), up to the failure when it failed.
    failed : bool
        Whether the failure rule fired.
    failure_time_ps : float or None
        Simulation time of the first failing step.
    failure_reason : str or None
    n_steps : int
        Steps asked for.
    steps_done : int
        Steps completed (fewer than ``n_steps`` after a failure).
    wall_s : float
        Wall-clock seconds of the run.
    outdir : Path or None
        The run's folder (``thermo.csv``, ``trajectory.extxyz``, ``run.json``).
    meta : dict
        Engine, thermostat, temperature, seed, time step, stride.
    """

    record: dict
    failed: bool
    failure_time_ps: float | None
    failure_reason: str | None
    n_steps: int
    steps_done: int
    wall_s: float
    outdir: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        """Throughput of the run."""
        return self.steps_done / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def trajectory(self) -> Path | None:
        """The saved trajectory (extxyz), when the run had a folder."""
        return None if self.outdir is None else self.outdir / "trajectory.extxyz"

    def save(self) -> None:
        """Write ``thermo.csv`` and then ``run.json`` into :attr:`outdir`.

        ``run.json`` is written last and atomically: a run folder holding it is a
        finished run (``md-validate --resume`` keeps it).
        """
        if self.outdir is None:
            return
        write_record(self.outdir / "thermo.csv", self.record)
        info = {k: v for k, v in asdict(self).items() if k not in ("record", "meta")}
        info["outdir"] = str(self.outdir)
        info["steps_per_second"] = self.steps_per_second
        info["meta"] = self.meta
        info.update(self.meta)
        write_text(self.outdir / RUN_FILE, json.dumps(info, indent=1) + "\n")

    @classmethod
    def load(cls, outdir: str | Path) -> RunResult:
        """Read a finished run folder written by :meth:`save`."""
        outdir = Path(outdir)
        info = json.loads((outdir / RUN_FILE).read_text())
        fields = ("failed", "failure_time_ps", "failure_reason", "n_steps")
        return cls(
            record=read_record(outdir / "thermo.csv"),
            **{name: info[name] for name in fields},
            steps_done=info["steps_done"],
            wall_s=info["wall_s"],
            outdir=outdir,
            meta=info.get("meta", {}),
        )
