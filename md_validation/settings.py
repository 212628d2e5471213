"""The settings of one MD run, shared by both engines: :class:`RunSettings`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ase_flatten.exceptions import InputError

from .engines import ENGINES, THERMOSTATS
from .failure import FailureCriteria

__all__ = ["RunSettings"]

#: Seeded replicas per model and temperature when none are asked for: with 8, a
#: model failing 4/8 or more against one failing none can reach log-rank
#: p < 0.05 (a 58 % failure rate found 80 % of the time); 1 or 2 replicas can
#: show no difference at all (``md_validation.survival.detectable_difference``).
DEFAULT_REPLICAS = 8

#: Thermostat of each engine when none is named.
DEFAULT_THERMOSTAT = {"ase": "langevin", "ipi": "svr"}


@dataclass(frozen=True)
class RunSettings:
    """What one seeded NVT (or NVE) run does; checked when made.

    Parameters
    ----------
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
        Default: ``langevin`` for ase, ``svr`` for ipi (filled in on creation).
        ``bussi`` and ``svr`` are the same thermostat.
    stride : int
        Steps between saved trajectory frames.
    tau_fs : float
        Thermostat time constant (fs).
    criteria : FailureCriteria
        Failure rule thresholds.

    Raises
    ------
    InputError
        An unknown engine or thermostat, or a non-positive number.
    """

    temperature_K: float = 300.0
    n_steps: int = 1000
    timestep_fs: float = 0.5
    seed: int = 0
    engine: str = "ase"
    thermostat: str | None = None
    stride: int = 10
    tau_fs: float = 100.0
    criteria: FailureCriteria = field(default_factory=FailureCriteria)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise InputError(
                f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}"
            )
        if self.thermostat is None:
            object.__setattr__(self, "thermostat", DEFAULT_THERMOSTAT[self.engine])
        if self.thermostat not in THERMOSTATS[self.engine]:
            raise InputError(
                f"unknown thermostat {self.thermostat!r} for engine {self.engine}; "
                f"choose one of {', '.join(THERMOSTATS[self.engine])}"
            )
        if (
            self.n_steps < 1
            or self.stride < 1
            or self.timestep_fs <= 0
            or self.temperature_K <= 0
        ):
            raise InputError(
                "n_steps and stride must be >= 1, timestep and temperature positive"
            )
        if self.criteria is None:
            object.__setattr__(self, "criteria", FailureCriteria())

    def time_ps(self, step: int) -> float:
        """Simulated time (ps) at MD step ``step``."""
        return step * self.timestep_fs / 1000.0

    def describe(self) -> dict:
        """What a run records of its settings (``run.json``'s ``meta``)."""
        return dict(
            engine=self.engine,
            thermostat=self.thermostat,
            temperature_K=self.temperature_K,
            timestep_fs=self.timestep_fs,
            seed=self.seed,
            stride=self.stride,
            tau_fs=self.tau_fs,
        )
