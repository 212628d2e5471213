"""Models against the reference method's own MD: averages and distance distributions.

Only the stable part of a run counts: from :data:`EQUILIBRATION_FRACTION` of the
run length (the start-up from one data frame) up to one runaway window
(``FailureCriteria.temperature_window_fs``) before a failure. Averages (total and
potential energy above the data's lowest energy, temperature) carry a 95 %
t-interval over replica means, given only from
:data:`MIN_REPLICAS_FOR_INTERVAL` replicas on: from two, Student's t with one
degree of freedom is 12.7 standard errors wide (a 300 K run gave [-120, 733] K),
and blocks of one run are correlated; fewer replicas get no interval and say so
(``ci_note``). Distributions are compared by the Jensen-Shannon divergence
(base 2, so in bits, 0 to 1: ``scipy.spatial.distance.jensenshannon`` squared) of
the histograms of all interatomic distances of the saved frames
(:data:`DISTANCE_BINS`); the reference's replicas split in two (even vs odd, or
the halves of one run) give the divergence that sampling noise alone produces.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = [
    "DISTANCE_BINS",
    "MIN_REPLICAS_FOR_INTERVAL",
    "compare_to_reference",
    "distance_histogram",
    "js_divergence",
    "mean_ci",
    "plot_reference",
]

#: Histogram edges of interatomic distances (Å); longer distances join the last bin.
DISTANCE_BINS = np.arange(0.0, 10.0 + 1e-9, 0.05)
#: Share of each run's length left out of averages and histograms (start-up).
EQUILIBRATION_FRACTION = 0.1
#: Replicas (independent runs) a 95 % interval needs: fewer get none.
MIN_REPLICAS_FOR_INTERVAL = 3
QUANTITIES = {
    "total_energy_eV": "total_eV",
    "potential_energy_eV": "potential_eV",
    "temperature_K": "temperature_K",
}


def stable_window(result, window_fs: float = 50.0) -> tuple[float, float]:
    """Time range (ps) of a run that enters the comparison."""
    timestep_fs = result.meta.get("timestep_fs", 0.5)
    start = EQUILIBRATION_FRACTION * result.n_steps * timestep_fs / 1000.0
    end = math.inf
    if result.failed and result.failure_time_ps is not None:
        end = result.failure_time_ps - window_fs / 1000.0
    return start, end


def _in_window(time_ps, window):
    time_ps = np.asarray(time_ps)
    return (time_ps >= window[0]) & (time_ps < window[1])


def mean_ci(
    samples, confidence: float = 0.95, min_samples: int = 2
) -> tuple[float, float, float]:
    """Mean and its t-interval; NaN bounds with fewer than ``min_samples``."""
    from scipy.stats import t

    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return math.nan, math.nan, math.nan
    mean = float(samples.mean())
    if len(samples) < max(2, min_samples):
        return mean, math.nan, math.nan
    half = t.ppf(0.5 + confidence / 2, len(samples) - 1) * samples.std(ddof=1)
    half /= math.sqrt(len(samples))
    return mean, mean - half, mean + half


def difference_ci(
    a, b, confidence: float = 0.95, min_samples: int = 2
) -> tuple[float, float, float]:
    """Mean of ``a`` minus mean of ``b`` with Welch's t-interval.

    NaN bounds when either side has fewer than ``min_samples`` samples.
    """
    from scipy.stats import t

    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if min(len(a), len(b)) < max(2, min_samples):
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t.ppf(0.5 + confidence / 2, dof) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def _samples(results, column, window_fs, offset=0.0) -> np.ndarray:
    """Replica means of a record column (NaN for a run without a stable window)."""
    parts = []
    for result in results:
        rec = result.record
        keep = _in_window(rec["time_ps"], stable_window(result, window_fs))
        parts.append(np.asarray(rec[column])[keep] - offset)
    return np.array([p.mean() if len(p) else np.nan for p in parts])


def _frames(result, window_fs) -> list[np.ndarray]:
    """Positions (Å) of the saved frames in a run's stable window."""
    import ase.io

    path = result.trajectory
    if path is None or not path.exists() or path.stat().st_size == 0:
        return []
    window = stable_window(result, window_fs)
    frames = ase.io.read(path, ":", format="extxyz")
    times = [frame.info.get("time_ps", math.nan) for frame in frames]
    keep = _in_window(times, window)
    return [f.positions for f, k in zip(frames, keep, strict=True) if k]


def distance_histogram(positions) -> np.ndarray:
    """Counts of all interatomic distances of the frames in :data:`DISTANCE_BINS`.

    Parameters
    ----------
    positions : sequence of ndarray, shape (N, 3)
        Frames (Å).
    """
    counts = np.zeros(len(DISTANCE_BINS) - 1)
    for frame in positions:
        i, j = np.triu_indices(len(frame), k=1)
        d = np.linalg.norm(frame[i] - frame[j], axis=1)
        d = np.minimum(d, DISTANCE_BINS[-1] - 1e-9)
        counts += np.histogram(d, bins=DISTANCE_BINS)[0]
    return counts


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence (bits, 0-1) of two histograms (normalised here)."""
    from scipy.spatial.distance import jensenshannon

    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return math.nan
    return float(jensenshannon(p, q, base=2) ** 2)


def _self_divergence(frames_per_run: list[list]) -> float:
    """The reference against itself: even vs odd replicas, or one run's halves."""
    if len(frames_per_run) >= 2:
        first = [f for frames in frames_per_run[0::2] for f in frames]
        second = [f for frames in frames_per_run[1::2] for f in frames]
    elif frames_per_run:
        frames = frames_per_run[0]
        first, second = frames[: len(frames) // 2], frames[len(frames) // 2 :]
    else:
        return math.nan
    return js_divergence(distance_histogram(first), distance_histogram(second))


def _ci_json(values, replicas: int) -> dict:
    """``mean``, ``ci95`` ([None, None] without one) and ``ci_note`` when none."""
    mean, low, high = values
    entry = {"mean": mean, "ci95": [low, high]}
    if math.isnan(low) and replicas < MIN_REPLICAS_FOR_INTERVAL:
        entry["ci_note"] = too_few_text(replicas)
    return entry


def too_few_text(replicas: int) -> str:
    """Why an average has no interval."""
    return (
        f"too few replicas for an interval ({replicas} < {MIN_REPLICAS_FOR_INTERVAL})"
    )


def compare_to_reference(
    runs: list[dict],
    reference: str = "reference",
    reference_energy: float = 0.0,
    window_fs: float = 50.0,
) -> tuple[dict, dict]:
    """Each model's MD against the reference's, per temperature.

    Parameters
    ----------
    runs : list of dict
        Each with ``model``, ``temperature_K`` and ``result`` (a finished
        :class:`~md_validation.result.RunResult` with its folder).
    reference : str
        The reference's model name in ``runs``.
    reference_energy : float
        Zero of energy (eV): the data's lowest potential energy.
    window_fs : float
        Frames this close before a failure are left out.

    Returns
    -------
    table : dict
        Per temperature (``"300"``): ``reference`` (its means with CIs, frames,
        ``self_js_divergence``) and ``models`` (per model: means with CIs, the
        differences to the reference with Welch CIs, ``js_divergence``, frames).
    histograms : dict
        (model, temperature) -> distance counts, for :func:`plot_reference`.
    """
    table, histograms = {}, {}
    temperatures = sorted({r["temperature_K"] for r in runs})
    models = list(dict.fromkeys(r["model"] for r in runs))
    for temperature in temperatures:
        groups = {
            m: [
                r["result"]
                for r in runs
                if r["model"] == m and r["temperature_K"] == temperature
            ]
            for m in models
        }
        if not groups.get(reference):
            continue
        samples, entries = {}, {}
        for model, results in groups.items():
            frames = [_frames(result, window_fs) for result in results]
            histograms[model, temperature] = distance_histogram(
                [f for run in frames for f in run]
            )
            samples[model] = {
                name: _samples(
                    results,
                    column,
                    window_fs,
                    reference_energy if column != "temperature_K" else 0.0,
                )
                for name, column in QUANTITIES.items()
            }
            entries[model] = dict(
                replicas=len(results),
                frames=sum(len(run) for run in frames),
                **{
                    name: _ci_json(
                        mean_ci(s, min_samples=MIN_REPLICAS_FOR_INTERVAL), len(results)
                    )
                    for name, s in samples[model].items()
                },
            )
            if model == reference:
                entries[model]["self_js_divergence"] = _self_divergence(frames)
        at_t = {"reference": entries[reference], "models": {}}
        for model in models:
            if model == reference or not groups[model]:
                continue
            entry = entries[model]
            entry["js_divergence"] = js_divergence(
                histograms[model, temperature], histograms[reference, temperature]
            )
            fewer = min(len(groups[model]), len(groups[reference]))
            for name in QUANTITIES:
                entry[f"{name}_minus_reference"] = _ci_json(
                    difference_ci(
                        samples[model][name],
                        samples[reference][name],
                        min_samples=MIN_REPLICAS_FOR_INTERVAL,
                    ),
                    fewer,
                )
            at_t["models"][model] = entry
        table[f"{temperature:g}"] = at_t
    return table, histograms


def _interval_text(entry: dict, fmt: str, unit: str) -> str:
    """`` (95 % CI a to b UNIT)``, `` (too few replicas for an interval ...)`` or ""."""
    low, high = entry["ci95"]
    if low is not None and not math.isnan(low):
        return f" (95 % CI {low:{fmt}} to {high:{fmt}}{unit})"
    if "ci_note" in entry:
        return f" ({entry['ci_note']})"
    return ""


def reference_lines(table: dict) -> list[str]:
    """One printed line per model and temperature.

    Each average comes with its 95 % interval over replica means, or with "too
    few replicas for an interval" below :data:`MIN_REPLICAS_FOR_INTERVAL`.
    """
    lines = []
    for temperature, at_t in table.items():
        self_js = at_t["reference"]["self_js_divergence"]
        ref_t = at_t["reference"]["temperature_K"]
        for model, entry in at_t["models"].items():
            head = f"{temperature} K: {model} vs reference MD:"
            if not entry["frames"]:
                lines.append(f"{head} no stable frames to compare")
                continue
            de = entry["potential_energy_eV_minus_reference"]
            mine_t = entry["temperature_K"]
            lines.append(
                f"{head} JS divergence of distances {entry['js_divergence']:.4f} "
                f"bits (reference vs itself {self_js:.4f}), mean potential energy "
                f"{de['mean']:+.3f} eV{_interval_text(de, '+.3f', ' eV')}, mean "
                f"temperature {mine_t['mean']:.0f} K"
                f"{_interval_text(mine_t, '.0f', ' K')} vs "
                f"{ref_t['mean']:.0f} K{_interval_text(ref_t, '.0f', ' K')}"
            )
    return lines


def plot_reference(histograms: dict, path: str | Path, reference="reference") -> None:
    """``reference.png``: distance distributions, models vs reference, a panel per T."""
    import matplotlib.pyplot as plt

    temperatures = sorted({t for _, t in histograms})
    fig, axes = plt.subplots(
        1, len(temperatures), figsize=(5 * len(temperatures), 3.6), squeeze=False
    )
    centres = 0.5 * (DISTANCE_BINS[1:] + DISTANCE_BINS[:-1])
    width = np.diff(DISTANCE_BINS)
    for ax, temperature in zip(axes[0], temperatures, strict=True):
        for (model, t), counts in histograms.items():
            if t != temperature or counts.sum() == 0:
                continue
            density = counts / (counts.sum() * width)
            style = dict(color="k", lw=2.0) if model == reference else dict(lw=1.0)
            ax.plot(centres, density, label=model, **style)
        upper = max(
            (
                centres[c > 0].max()
                for (_, t), c in histograms.items()
                if t == temperature and c.any()
            ),
            default=DISTANCE_BINS[-1],
        )
        ax.set_xlim(0.0, min(DISTANCE_BINS[-1], upper + 0.5))
        ax.set_title(f"{temperature:g} K")
        ax.set_xlabel("interatomic distance (Å)")
        ax.set_ylabel("density (1/Å)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
