"""Outputs of a validation: summary.csv and the energy-vs-time figure."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from ase_flatten.files import atomic_path

__all__ = [
    "RESERVED_NAMES",
    "SUMMARY_COLUMNS",
    "energy_figure",
    "plot_energy_vs_time",
    "replica_band",
    "write_summary",
]

#: The files a validation writes beside the model folders: no model may be named
#: so (its folder would collide with one of them).
RESERVED_NAMES = (
    "summary.csv",
    "energy_vs_time.png",
    "survival.csv",
    "survival.png",
    "comparison.json",
    "reference.png",
)

SUMMARY_COLUMNS = (
    "model",
    "temperature_K",
    "replica",
    "seed",
    "engine",
    "thermostat",
    "failed",
    "time_to_failure_ps",
    "failure_reason",
    "steps_done",
    "simulated_ps",
    "mean_total_energy_eV",
    "total_energy_drift_eV_per_ps",
    "conserved_drift_eV_per_ps",
    "mean_temperature_K",
    "high_error_fraction",
    "outside_domain_fraction",
    "risky_fraction",
    "steps_per_second",
    "run_dir",
)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_summary(rows: list[dict], path: str | Path) -> None:
    """One row per model x temperature x replica (:data:`SUMMARY_COLUMNS`)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUMMARY_COLUMNS)
        for row in rows:
            writer.writerow([_cell(row.get(name)) for name in SUMMARY_COLUMNS])


def replica_band(records: list[dict]) -> dict[str, np.ndarray]:
    """Total energy over the replicas still running at each time.

    Returns
    -------
    dict
        ``time_ps``, ``mean``, ``low`` and ``high`` (the lowest and highest
        replica) and ``running`` (replicas that reached that time: a failed
        replica stops there).
    """
    longest = max(records, key=lambda r: len(r["time_ps"]))
    total = np.full((len(records), len(longest["time_ps"])), np.nan)
    for k, rec in enumerate(records):
        total[k, : len(rec["total_eV"])] = rec["total_eV"]
    running = np.isfinite(total).sum(axis=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return dict(
            time_ps=np.asarray(longest["time_ps"]),
            mean=np.nanmean(total, axis=0),
            low=np.nanmin(total, axis=0),
            high=np.nanmax(total, axis=0),
            running=running,
        )


def replica_mean(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Time and total energy averaged over the replicas still running."""
    band = replica_band(records)
    return band["time_ps"], band["mean"]


_STYLES = ("-", "--", ":", "-.")


def energy_figure(runs: list[dict], reference_energy: float = 0.0):
    """The Matplotlib figure of :func:`plot_energy_vs_time` (caller closes it)."""
    import matplotlib.pyplot as plt

    temperatures = sorted({run["temperature_K"] for run in runs})
    models = list(dict.fromkeys(run["model"] for run in runs))
    fig, axes = plt.subplots(
        1, len(temperatures), figsize=(5 * len(temperatures), 4.0), squeeze=False
    )
    for ax, temperature in zip(axes[0], temperatures, strict=True):
        for k, model in enumerate(models):
            group = [
                r
                for r in runs
                if r["model"] == model and r["temperature_K"] == temperature
            ]
            if not group:
                continue
            band = replica_band([r["record"] for r in group])
            n_failed = sum(bool(r["failed"]) for r in group)
            note = f", {n_failed} failed" if n_failed else ""
            line = ax.plot(
                band["time_ps"],
                band["mean"] - reference_energy,
                label=f"{model}: mean of {len(group)} "
                f"replica{'s' if len(group) > 1 else ''}{note}",
                lw=1.2,
                ls=_STYLES[k % len(_STYLES)],
                color=f"C{k}",
            )[0]
            ax.fill_between(
                band["time_ps"],
                band["low"] - reference_energy,
                band["high"] - reference_energy,
                alpha=0.15,
                color=line.get_color(),
                lw=0,
            )
        ax.set_title(f"{temperature:g} K")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("total energy - min. reference energy (eV)")
        ax.legend(fontsize=8)
    fig.text(
        0.5,
        0.005,
        "lines: mean over the replicas still running (a failed replica stops at "
        "its failure); bands: lowest to highest replica",
        ha="center",
        va="bottom",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_energy_vs_time(
    runs: list[dict], path: str | Path, reference_energy: float = 0.0
) -> None:
    """The paper's Fig. 8: mean total energy vs time, a line per model, a panel per T.

    Each line is the mean over a model's replicas still running at that time,
    named with how many replicas it averages, with a band from the lowest to the
    highest replica (:func:`energy_figure`).

    Parameters
    ----------
    runs : list of dict
        Each with ``model``, ``temperature_K``, ``record`` and ``failed``.
    path : path
        PNG to write.
    reference_energy : float
        Zero of energy (the reference data's lowest potential energy, eV).
    """
    import matplotlib.pyplot as plt

    fig = energy_figure(runs, reference_energy)
    fig.savefig(path, dpi=120)
    plt.close(fig)
