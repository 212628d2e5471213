"""Metrics of one run: energies relative to the data's zero, drifts, failure, domain.

Where a run's frames fall in the model's error map is the model's to say
(:meth:`ase_flatten.models.SavedModel.locate`); :func:`domain_fractions` counts it.
"""

from __future__ import annotations

import math

import numpy as np

from .result import RunResult

__all__ = ["domain_fractions", "drift_per_ps", "run_metrics"]


def drift_per_ps(time_ps: np.ndarray, values: np.ndarray) -> float:
    """Slope (per ps) of a least-squares line through ``values`` over time."""
    time_ps, values = np.asarray(time_ps), np.asarray(values)
    ok = np.isfinite(values) & np.isfinite(time_ps)
    if ok.sum() < 2 or np.ptp(time_ps[ok]) == 0:
        return float("nan")
    return float(np.polyfit(time_ps[ok], values[ok], 1)[0])


def domain_fractions(
    saved, positions: np.ndarray, energies: np.ndarray, high_error_factor: float = 1.1
) -> dict[str, float]:
    """Where a trajectory's frames fall in the model's cluster map.

    Parameters
    ----------
    saved : SavedModel
        A model saved with its cluster model and per-cluster force errors.
    positions : ndarray, shape (M, N, 3)
        Frames (Å).
    energies : ndarray, shape (M,)
        Their potential energies (eV) as the model predicted them.
    high_error_factor : float
        A cluster is high-error when its force RMSE exceeds this times the
        model's overall force RMSE (:meth:`~ase_flatten.models.SavedModel.locate`).

    Returns
    -------
    dict
        ``high_error_fraction`` (frames in high-error clusters),
        ``outside_domain_fraction`` (beyond the model's domain threshold, see
        :mod:`ase_flatten.domain`) and ``risky_fraction`` (either); NaN without a
        cluster model or frames.
    """
    if saved is None or saved.clusters is None or len(positions) == 0:
        return {
            "high_error_fraction": math.nan,
            "outside_domain_fraction": math.nan,
            "risky_fraction": math.nan,
        }
    where = saved.locate(positions, energies, high_error_factor)
    return {
        "high_error_fraction": float(where.high_error.mean()),
        "outside_domain_fraction": float(where.outside_domain.mean()),
        "risky_fraction": float(where.risky.mean()),
    }


def run_metrics(
    result: RunResult,
    reference_energy: float = 0.0,
    saved=None,
    high_error_factor: float = 1.1,
) -> dict:
    """Metrics of one run.

    Parameters
    ----------
    result : RunResult
    reference_energy : float
        The zero of energy: the lowest potential energy of the reference data (eV).
    saved : SavedModel, optional
        The model, for the cluster/domain fractions of the saved trajectory.
    high_error_factor : float
        See :func:`domain_fractions`.

    Returns
    -------
    dict
        ``mean_total_energy_eV`` (relative to ``reference_energy``),
        ``total_energy_drift_eV_per_ps``, ``conserved_drift_eV_per_ps``,
        ``mean_temperature_K``, ``failed``, ``time_to_failure_ps`` (None when it
        did not fail), ``failure_reason``, ``steps_done``, ``simulated_ps``,
        ``steps_per_second`` and the fractions of :func:`domain_fractions`.
    """
    rec = result.record
    t = rec["time_ps"]
    metrics = {
        "mean_total_energy_eV": float(np.mean(rec["total_eV"]) - reference_energy)
        if len(t)
        else math.nan,
        "total_energy_drift_eV_per_ps": drift_per_ps(t, rec["total_eV"]),
        "conserved_drift_eV_per_ps": drift_per_ps(t, rec["conserved_eV"]),
        "mean_temperature_K": float(np.mean(rec["temperature_K"]))
        if len(t)
        else math.nan,
        "failed": result.failed,
        "time_to_failure_ps": result.failure_time_ps,
        "failure_reason": result.failure_reason or "",
        "steps_done": result.steps_done,
        "simulated_ps": float(t[-1]) if len(t) else 0.0,
        "steps_per_second": result.steps_per_second,
    }
    fractions = domain_fractions(None, [], [])
    traj = result.trajectory
    if saved is not None and saved.clusters is not None and traj and traj.exists():
        import ase.io

        frames = ase.io.read(traj, ":", format="extxyz")
        positions = np.array([f.positions for f in frames])
        energies = np.array([f.get_potential_energy() for f in frames])
        ok = np.isfinite(energies) & np.isfinite(positions).all(axis=(1, 2))
        positions, energies = positions[ok], energies[ok]
        fractions = domain_fractions(saved, positions, energies, high_error_factor)
    metrics.update(fractions)
    return metrics
