"""Survival analysis of MD replicas: which model stays stable longer.

A replica is a subject: it fails at its failure time or is censored at its run
length. Per model x temperature: the Kaplan-Meier fraction of replicas still
stable vs time with its 95 % band (lifelines), the median time to failure, and
failures per ns with an exact Poisson 95 % interval. Between every pair of models
at a temperature: the log-rank test. A difference is called at :data:`ALPHA`.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ase_flatten.files import atomic_path

__all__ = [
    "ALPHA",
    "POWER",
    "RISKY_SHARE_WARNING",
    "SURVIVAL_COLUMNS",
    "detectable_difference",
    "failure_rate",
    "logrank_pairs",
    "plot_survival",
    "risky_share",
    "share_text",
    "summarize_groups",
    "survival_table",
    "verdict_line",
    "write_survival",
]

#: Significance level of the log-rank test behind "more stable than".
ALPHA = 0.05
#: Power at which :func:`detectable_difference` states the failure probability a
#: run could have found.
POWER = 0.8
#: From this mean share of risky MD frames (outside the domain or in high-error
#: clusters) on, a verdict says the models ran mostly where they were not validated.
RISKY_SHARE_WARNING = 0.5

SURVIVAL_COLUMNS = ("model", "temperature_K", "replica", "time_ps", "failed")


def survival_table(rows: list[dict]) -> list[dict]:
    """One subject per run: time to failure, or run length when it did not fail.

    Parameters
    ----------
    rows : list of dict
        ``summary.csv`` rows (``model``, ``temperature_K``, ``replica``,
        ``failed``, ``time_to_failure_ps``, ``simulated_ps``).
    """
    return [
        dict(
            model=row["model"],
            temperature_K=float(row["temperature_K"]),
            replica=int(row["replica"]),
            time_ps=float(
                row["time_to_failure_ps"] if row["failed"] else row["simulated_ps"]
            ),
            failed=bool(row["failed"]),
        )
        for row in rows
    ]


def write_survival(table: list[dict], path: str | Path) -> None:
    """``survival.csv``: :data:`SURVIVAL_COLUMNS`, ``failed`` as 0/1."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SURVIVAL_COLUMNS)
        for s in table:
            writer.writerow(
                [s["model"], f"{s['temperature_K']:g}", s["replica"],
                 f"{s['time_ps']:.6g}", int(s["failed"])]
            )  # fmt: skip


def failure_rate(
    failures: int, total_ps: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Failures per ns with the exact (Garwood) Poisson confidence interval.

    Parameters
    ----------
    failures : int
        Failed replicas.
    total_ps : float
        Simulated time summed over all replicas (ps), up to each failure.
    confidence : float

    Returns
    -------
    rate, low, high : float
        Per ns.
    """
    from scipy.stats import chi2

    total_ns = total_ps / 1000.0
    if total_ns <= 0:
        return math.nan, math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low = chi2.ppf(tail, 2 * failures) / 2.0 if failures else 0.0
    high = chi2.ppf(1.0 - tail, 2 * failures + 2) / 2.0
    return failures / total_ns, low / total_ns, high / total_ns


@dataclass
class GroupSurvival:
    """Survival of one model at one temperature (times in ps, rates per ns)."""

    model: str
    temperature_K: float
    replicas: int
    failures: int
    run_length_ps: float
    simulated_ps: float
    median_ps: float  #: inf when fewer than half the replicas failed
    rate_per_ns: float
    rate_ci: tuple
    curve: dict  #: time_ps, stable, low, high (Kaplan-Meier and its 95 % band)

    def median_text(self) -> str:
        """The median time to failure, or "> run length" when not reached."""
        if math.isfinite(self.median_ps):
            return f"{self.median_ps:.3g} ps"
        return f"> {self.run_length_ps:.3g} ps"

    def to_json(self) -> dict:
        return dict(
            replicas=self.replicas,
            failures=self.failures,
            median_time_to_failure_ps=self.median_ps
            if math.isfinite(self.median_ps)
            else None,
            median_time_to_failure=self.median_text(),
            simulated_ns=self.simulated_ps / 1000.0,
            failures_per_ns=self.rate_per_ns,
            failures_per_ns_ci95=list(self.rate_ci),
        )


def _subjects(table, model, temperature):
    group = [
        s for s in table if s["model"] == model and s["temperature_K"] == temperature
    ]
    times = np.array([s["time_ps"] for s in group], dtype=float)
    events = np.array([s["failed"] for s in group], dtype=bool)
    return times, events


def summarize_groups(table: list[dict], run_lengths: dict) -> list[GroupSurvival]:
    """Kaplan-Meier, median and failure rate per model x temperature.

    Parameters
    ----------
    table : list of dict
        From :func:`survival_table`.
    run_lengths : dict
        Model name -> the run length asked for (ps).
    """
    from lifelines import KaplanMeierFitter

    groups = []
    for model in dict.fromkeys(s["model"] for s in table):
        for temperature in sorted({s["temperature_K"] for s in table}):
            times, events = _subjects(table, model, temperature)
            if not len(times):
                continue
            kmf = KaplanMeierFitter(alpha=ALPHA).fit(times, events)
            band = kmf.confidence_interval_survival_function_.to_numpy()
            curve = dict(
                time_ps=kmf.timeline.tolist(),
                stable=kmf.survival_function_.iloc[:, 0].tolist(),
                low=band[:, 0].tolist(),
                high=band[:, 1].tolist(),
            )
            rate, low, high = failure_rate(int(events.sum()), float(times.sum()))
            groups.append(
                GroupSurvival(
                    model=model,
                    temperature_K=temperature,
                    replicas=len(times),
                    failures=int(events.sum()),
                    run_length_ps=float(run_lengths.get(model, times.max())),
                    simulated_ps=float(times.sum()),
                    median_ps=float(kmf.median_survival_time_),
                    rate_per_ns=rate,
                    rate_ci=(low, high),
                    curve=curve,
                )
            )
    return groups


def logrank_pairs(table: list[dict], models: list[str]) -> list[dict]:
    """The log-rank test between every pair of ``models`` at every temperature.

    Returns
    -------
    list of dict
        ``temperature_K``, ``models`` (the pair, in ``models`` order),
        ``failures``, ``replicas``, ``failures_per_ns`` (each model's) and
        ``logrank_p`` (None when neither failed).
    """
    from lifelines.statistics import logrank_test

    pairs = []
    for temperature in sorted({s["temperature_K"] for s in table}):
        for a, b in itertools.combinations(models, 2):
            (ta, ea), (tb, eb) = (_subjects(table, m, temperature) for m in (a, b))
            if not len(ta) or not len(tb):
                continue
            p = None
            if ea.any() or eb.any():
                p = float(logrank_test(ta, tb, ea, eb).p_value)
            pairs.append(
                dict(
                    temperature_K=temperature,
                    models=[a, b],
                    failures=[int(ea.sum()), int(eb.sum())],
                    replicas=[len(ta), len(tb)],
                    failures_per_ns=[
                        failure_rate(int(ea.sum()), float(ta.sum()))[0],
                        failure_rate(int(eb.sum()), float(tb.sum()))[0],
                    ],
                    logrank_p=p,
                )
            )
    return pairs


def _best_case_logrank_p(n_never: int, n_failing: int, failures: int) -> float:
    """Log-rank p of 0/``n_never`` vs ``failures``/``n_failing`` failed, best case.

    The best case for the test: the failures at distinct times, every other
    replica censored at the end of the run. Then the statistic depends on the
    counts only (the times do not matter), and equals lifelines' ``logrank_test``.
    """
    from scipy.stats import chi2

    observed = expected = variance = 0.0
    for j in range(failures):
        at_risk_b = n_failing - j
        at_risk = n_never + at_risk_b
        observed += 1.0
        expected += at_risk_b / at_risk
        variance += n_never * at_risk_b / at_risk**2
    if variance == 0:
        return 1.0
    return float(chi2.sf((observed - expected) ** 2 / variance, 1))


def detectable_difference(
    replicas: tuple[int, int] | int, alpha: float = ALPHA, power: float = POWER
) -> dict:
    """What a comparison at these replica counts could have detected at all.

    When one model never fails, the other must fail in at least ``failures`` of
    its replicas for the log-rank test to reach ``p < alpha``, even in the best
    case (distinct failure times). A model whose every run fails with probability
    ``failure_probability`` shows that many failures with probability ``power``.

    Parameters
    ----------
    replicas : int or (int, int)
        Replicas per model (the first never fails, the second is the one tested).
    alpha, power : float

    Returns
    -------
    dict
        ``failures`` (int, or None when no outcome reaches ``alpha``),
        ``replicas``, ``failure_probability`` (float or None), ``alpha``, ``power``.

    Examples
    --------
    With 4 replicas per model only 3/4 vs 0/4 failed (or more) can reach
    p < 0.05; with 8, 4/8; with 2, nothing.
    """
    from scipy.stats import beta

    n_never, n_failing = (replicas, replicas) if isinstance(replicas, int) else replicas
    failures = next(
        (
            k
            for k in range(1, n_failing + 1)
            if _best_case_logrank_p(n_never, n_failing, k) < alpha
        ),
        None,
    )
    probability = None
    if failures is not None:
        # P(Binomial(n, q) >= k) = I_q(k, n - k + 1): solve for q at ``power``
        probability = float(beta.ppf(power, failures, n_failing - failures + 1))
    return dict(
        failures=failures,
        replicas=n_failing,
        failure_probability=probability,
        alpha=alpha,
        power=power,
    )


def power_text(pair: dict, alpha: float = ALPHA) -> str:
    """What the pair's replica counts could detect, for a "no difference" verdict."""
    n_a, n_b = pair["replicas"]
    per_model = f"{n_a} replicas per model" if n_a == n_b else f"{n_a}+{n_b} replicas"
    found = detectable_difference((n_a, n_b), alpha)
    if found["failures"] is None:
        return f"with {per_model} no outcome could reach p < {alpha:g}"
    return (
        f"with {per_model} only {found['failures']}/{n_b} or more vs 0/{n_a} failed "
        f"could reach p < {alpha:g}: a model failing "
        f"{100 * found['failure_probability']:.0f} % of its runs would be found "
        f"{100 * found['power']:.0f} % of the time"
    )


def risky_share(rows: list[dict], model: str, temperature: float) -> dict | None:
    """Share of a model's MD frames that were risky at a temperature, per replica.

    Parameters
    ----------
    rows : list of dict
        ``summary.csv`` rows with ``risky_fraction``, ``outside_domain_fraction``
        and ``high_error_fraction`` (NaN for a model without clusters).

    Returns
    -------
    dict or None
        ``mean``, ``min``, ``max`` of ``risky_fraction`` over the replicas, the
        mean ``outside_domain`` and ``high_error`` shares and ``replicas``; None
        when no replica has a share (no cluster model, no frames).
    """

    def finite(name, group):
        values = [row.get(name) for row in group]
        return np.array([v for v in values if v is not None and math.isfinite(v)])

    group = [
        row
        for row in rows
        if row["model"] == model and float(row["temperature_K"]) == temperature
    ]
    risky = finite("risky_fraction", group)
    if not len(risky):
        return None
    outside, high = (
        finite(name, group)
        for name in ("outside_domain_fraction", "high_error_fraction")
    )
    return dict(
        mean=float(risky.mean()),
        min=float(risky.min()),
        max=float(risky.max()),
        outside_domain=float(outside.mean()) if len(outside) else math.nan,
        high_error=float(high.mean()) if len(high) else math.nan,
        replicas=len(risky),
    )


def share_text(share: dict) -> str:
    """``77-87 %`` over replicas, or ``82 %`` when they agree to the percent."""
    low, high = round(100 * share["min"]), round(100 * share["max"])
    return f"{low} %" if low == high else f"{low}-{high} %"


def risky_text(names: list[str], shares: list) -> str:
    """The risky-frame part of a verdict ("" when no model has a share)."""
    known = [(n, s) for n, s in zip(names, shares, strict=True) if s is not None]
    if not known:
        return ""
    text = "risky MD frames (outside the domain or in high-error clusters): " + (
        ", ".join(f"{name} {share_text(share)}" for name, share in known)
    )
    if any(share["mean"] >= RISKY_SHARE_WARNING for _, share in known):
        text += ", mostly where the models were not validated"
    return text


def _p_text(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def verdict_line(pair: dict, alpha: float = ALPHA) -> str:
    """The printed verdict of one pair at one temperature.

    ``400 K: flattened more stable than default (0/16 vs 9/16 failed, log-rank
    p = 0.001)`` when the log-rank p-value is below ``alpha`` (the more stable
    model is the one with fewer failures per ns), else ``400 K: no difference
    detectable between default and flattened (1/8 vs 2/8 failed, log-rank
    p = 0.55); with 8 replicas per model only 4/8 or more vs 0/8 failed could
    reach p < 0.05: ...``, saying what the run could have detected at all
    (:func:`power_text`); counts follow the order of the names. With
    ``pair["risky_share"]`` (:func:`risky_share` of each model), the share of
    risky MD frames comes before that (:func:`risky_text`).
    """
    head = f"{pair['temperature_K']:g} K:"
    names, failures, replicas = pair["models"], pair["failures"], pair["replicas"]
    p = pair["logrank_p"]
    order = [0, 1]
    if p is not None and p < alpha:
        rates = pair["failures_per_ns"]
        order = [0, 1] if rates[0] < rates[1] else [1, 0]
        claim = f"{names[order[0]]} more stable than {names[order[1]]}"
    else:
        claim = f"no difference detectable between {names[0]} and {names[1]}"
    counts = " vs ".join(f"{failures[k]}/{replicas[k]}" for k in order)
    test = "no failures" if p is None else f"log-rank {_p_text(p)}"
    line = f"{head} {claim} ({counts} failed, {test})"
    risky = risky_text(names, pair.get("risky_share") or [None, None])
    if risky:
        line += f"; {risky}"
    if p is None or p >= alpha:
        line += f"; {power_text(pair, alpha)}"
    return line


#: Vertical offset between successive models' curves in ``survival.png``, so
#: that equal curves (every replica stable) stay visible; the figure says so.
CURVE_OFFSET = 0.012
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def survival_figure(groups: list[GroupSurvival]):
    """The Matplotlib figure of :func:`plot_survival` (caller closes it).

    Model ``k``'s curve is drawn ``k`` x :data:`CURVE_OFFSET` lower, with its own
    line style, a marker at every failure and at the end of the run, and thinner
    than the one before, so that curves on top of each other stay visible.
    """
    import matplotlib.pyplot as plt

    temperatures = sorted({g.temperature_K for g in groups})
    models = list(dict.fromkeys(g.model for g in groups))
    fig, axes = plt.subplots(
        1, len(temperatures), figsize=(4.5 * len(temperatures), 3.8), squeeze=False
    )
    for ax, temperature in zip(axes[0], temperatures, strict=True):
        for g in (g for g in groups if g.temperature_K == temperature):
            k = models.index(g.model)
            shift = -k * CURVE_OFFSET
            t = g.curve["time_ps"] + [g.run_length_ps]
            stable = np.array(g.curve["stable"] + g.curve["stable"][-1:]) + shift
            line = ax.step(
                t,
                stable,
                where="post",
                lw=max(0.8, 2.4 - 0.5 * k),
                ls=_STYLES[k % len(_STYLES)],
                color=f"C{k}",
            )[0]
            drops = [i for i in range(1, len(t) - 1) if stable[i] < stable[i - 1]]
            ax.plot(
                [t[i] for i in drops] + [t[-1]],
                [stable[i] for i in drops] + [stable[-1]],
                ls="none",
                marker=_MARKERS[k % len(_MARKERS)],
                ms=5,
                mfc="none",
                color=line.get_color(),
            )
            low = np.array(g.curve["low"] + g.curve["low"][-1:]) + shift
            high = np.array(g.curve["high"] + g.curve["high"][-1:]) + shift
            ax.fill_between(
                t, low, high, step="post", alpha=0.15, color=line.get_color()
            )
            line.set_label(f"{g.model} ({g.failures}/{g.replicas} failed)")
        ax.set_ylim(-0.02 - CURVE_OFFSET * (len(models) - 1), 1.04)
        ax.set_title(f"{temperature:g} K")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("fraction of replicas stable")
        ax.legend(fontsize=8, loc="lower left")
    note = "Kaplan-Meier, 95 % bands; markers: failures and run end"
    if len(models) > 1:
        note += f"; curves offset by {CURVE_OFFSET:g} per model to stay visible"
    fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_survival(groups: list[GroupSurvival], path: str | Path) -> None:
    """``survival.png``: Kaplan-Meier step curves with 95 % bands, a panel per T.

    See :func:`survival_figure`.
    """
    import matplotlib.pyplot as plt

    fig = survival_figure(groups)
    fig.savefig(path, dpi=120)
    plt.close(fig)
