"""Survival statistics against lifelines and hand computations; verdict wording."""

import csv
import math

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from md_validation.survival import (
    SURVIVAL_COLUMNS,
    detectable_difference,
    failure_rate,
    logrank_pairs,
    summarize_groups,
    survival_table,
    verdict_line,
    write_survival,
)


def table(model, temperature, times, failed):
    return [
        dict(model=model, temperature_K=temperature, replica=k, time_ps=t, failed=f)
        for k, (t, f) in enumerate(zip(times, failed, strict=True))
    ]


def test_failure_rate_exact_poisson():
    # no failure in 1 ns: the upper limit is -ln(0.025) = 3.689 per ns
    rate, low, high = failure_rate(0, 1000.0)
    assert rate == 0 and low == 0 and high == pytest.approx(-math.log(0.025))
    # 2 failures in 0.5 ns: Garwood's table gives 0.2422-7.2247 events
    rate, low, high = failure_rate(2, 500.0)
    assert rate == 4.0
    assert low == pytest.approx(0.2422 / 0.5, rel=1e-3)
    assert high == pytest.approx(7.2247 / 0.5, rel=1e-3)


def test_kaplan_meier_by_hand_and_lifelines():
    subjects = table("m", 300.0, [1.0, 2.0, 3.0, 4.0], [True, False, True, False])
    (group,) = summarize_groups(subjects, {"m": 4.0})
    # by hand: 3/4 stable after t = 1; t = 2 censored; 3/4 * 1/2 after t = 3
    curve = dict(zip(group.curve["time_ps"], group.curve["stable"], strict=True))
    assert curve[1.0] == pytest.approx(0.75) and curve[3.0] == pytest.approx(0.375)
    assert group.median_ps == 3.0 and group.median_text() == "3 ps"
    assert group.failures == 2 and group.simulated_ps == 10.0
    assert group.rate_per_ns == pytest.approx(200.0)
    kmf = KaplanMeierFitter().fit([1, 2, 3, 4], [1, 0, 1, 0])
    band = kmf.confidence_interval_survival_function_.to_numpy()
    np.testing.assert_allclose(group.curve["low"], band[:, 0])
    np.testing.assert_allclose(group.curve["high"], band[:, 1])
    assert np.all(np.array(group.curve["low"]) <= group.curve["stable"])
    # nobody failed: the median is not reached
    (stable,) = summarize_groups(table("s", 300.0, [5.0] * 3, [False] * 3), {"s": 5.0})
    assert stable.median_text() == "> 5 ps" and stable.to_json()["failures"] == 0


def logrank_by_hand(ta, ea, tb, eb):
    """Mantel's log-rank chi-square (one degree of freedom) and its p-value."""
    from scipy.stats import chi2

    times = np.concatenate([ta, tb])
    events = np.concatenate([ea, eb])
    in_a = np.r_[np.ones(len(ta), bool), np.zeros(len(tb), bool)]
    observed = expected = variance = 0.0
    for t in np.unique(times[events]):
        at_risk = times >= t
        n, n_a = at_risk.sum(), (at_risk & in_a).sum()
        d = (events & (times == t)).sum()
        observed += (events & (times == t) & in_a).sum()
        expected += d * n_a / n
        if n > 1:
            variance += d * (n_a / n) * (1 - n_a / n) * (n - d) / (n - 1)
    statistic = (observed - expected) ** 2 / variance
    return chi2.sf(statistic, 1)


def test_logrank_against_lifelines_and_hand():
    rng = np.random.default_rng(3)
    ta = np.minimum(rng.exponential(4.0, 12), 5.0)
    tb = np.minimum(rng.exponential(20.0, 12), 5.0)
    ea, eb = ta < 5.0, tb < 5.0
    subjects = table("a", 400.0, ta, ea) + table("b", 400.0, tb, eb)
    (pair,) = logrank_pairs(subjects, ["a", "b"])
    assert pair["failures"] == [ea.sum(), eb.sum()] and pair["replicas"] == [12, 12]
    expected = logrank_test(ta, tb, ea, eb).p_value
    assert pair["logrank_p"] == pytest.approx(expected, rel=1e-9)
    assert pair["logrank_p"] == pytest.approx(logrank_by_hand(ta, ea, tb, eb))


def pair_of(fail_a, fail_b, n, temperature=400.0):
    """Hand-made tables: model a fails ``fail_a`` of ``n`` early, b ``fail_b``."""
    times_a = [0.5 + 0.1 * k if k < fail_a else 10.0 for k in range(n)]
    times_b = [0.5 + 0.1 * k if k < fail_b else 10.0 for k in range(n)]
    subjects = table("default", temperature, times_a, [k < fail_a for k in range(n)])
    subjects += table("flattened", temperature, times_b, [k < fail_b for k in range(n)])
    (pair,) = logrank_pairs(subjects, ["default", "flattened"])
    return pair


def test_verdict_wording():
    better = pair_of(9, 0, 16)
    p = better["logrank_p"]
    assert p < 0.01
    assert verdict_line(better) == (
        f"400 K: flattened more stable than default (0/16 vs 9/16 failed, "
        f"log-rank p = {p:.2g})"
    )
    worse = pair_of(0, 9, 16)
    assert verdict_line(worse).startswith(
        "400 K: default more stable than flattened (0/16 vs 9/16 failed, log-rank p ="
    )
    same = pair_of(1, 2, 8)
    assert same["logrank_p"] > 0.05
    assert verdict_line(same) == (
        "400 K: no difference detectable between default and flattened "
        f"(1/8 vs 2/8 failed, log-rank p = {same['logrank_p']:.2g}); with 8 "
        "replicas per model only 4/8 or more vs 0/8 failed could reach p < 0.05: "
        "a model failing 58 % of its runs would be found 80 % of the time"
    )
    none = pair_of(0, 0, 4, temperature=300.0)
    assert none["logrank_p"] is None
    assert verdict_line(none) == (
        "300 K: no difference detectable between default and flattened "
        "(0/4 vs 0/4 failed, no failures); with 4 replicas per model only 3/4 or "
        "more vs 0/4 failed could reach p < 0.05: a model failing 79 % of its runs "
        "would be found 80 % of the time"
    )
    assert verdict_line(pair_of(0, 0, 2)).endswith(
        "; with 2 replicas per model no outcome could reach p < 0.05"
    )


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
def test_detectable_difference_is_the_best_case_logrank(n):
    """The smallest k/n vs 0/n that lifelines' log-rank test calls at 0.05, with
    the failures at distinct times (the best case); k-1 failures never reach it,
    whatever their times."""
    from scipy.stats import binom

    found = detectable_difference(n)
    rng = np.random.default_rng(n)

    def p_value(k, times):
        tb = np.full(n, 10.0)
        tb[:k] = times
        return logrank_test(np.full(n, 10.0), tb, np.zeros(n), np.arange(n) < k).p_value

    k = found["failures"]
    if n == 2:
        assert k is None and found["failure_probability"] is None
        assert p_value(2, [1.0, 2.0]) > 0.05
        return
    assert p_value(k, np.arange(1, k + 1)) < 0.05
    for _ in range(20):  # fewer failures at any times (ties included): never
        assert p_value(k - 1, rng.choice([1.0, 2.0, 3.0, 9.0], k - 1)) >= 0.05
    assert {3: 3, 4: 3, 8: 4, 16: 4}[n] == k
    q = found["failure_probability"]
    assert binom.sf(k - 1, n, q) == pytest.approx(0.8)  # P(>= k failures) = power


def test_survival_table_and_csv(tmp_path):
    rows = [
        dict(model="m", temperature_K=300.0, replica=0, failed=True,
             time_to_failure_ps=0.25, simulated_ps=0.25),
        dict(model="m", temperature_K=300.0, replica=1, failed=False,
             time_to_failure_ps=None, simulated_ps=2.0),
    ]  # fmt: skip
    write_survival(survival_table(rows), tmp_path / "survival.csv")
    lines = list(csv.reader(open(tmp_path / "survival.csv")))
    assert tuple(lines[0]) == SURVIVAL_COLUMNS
    assert lines[1:] == [["m", "300", "0", "0.25", "1"], ["m", "300", "1", "2", "0"]]


@pytest.mark.slow
def test_a_failing_model_is_called_less_stable(
    tmp_path, sgdml_model, start_atoms, xtb_dataset
):
    """Real runs: sGDML on 5 frames breaks apart within 0.1 ps at 400 K, the
    30-frame fixture does not; the log-rank test tells them apart."""
    from ase_flatten.backends import make_backend
    from ase_flatten.models import save_model
    from md_validation.settings import RunSettings
    from md_validation.workflow import Protocol, validate_models

    train = np.linspace(0, 149, 5).astype(int)
    tiny = save_model(
        tmp_path / "tiny",
        make_backend("sgdml", sigma=20).fit(xtb_dataset, train),
        train,
        xtb_dataset,
    )
    protocol = Protocol(
        temperatures=[400.0], n_steps=200, replicas=4, run=RunSettings(stride=10)
    )
    models = {"fixture": sgdml_model, "tiny": tiny}
    rows, lines = validate_models(
        models, start_atoms, tmp_path / "md", protocol, jobs=2
    )
    failed = {(r["model"], r["replica"]): r["failed"] for r in rows}
    assert not any(failed["fixture", k] for k in range(4))
    assert all(failed["tiny", k] for k in range(4))
    p = logrank_test([0.1] * 4, [r["time_to_failure_ps"] for r in rows[4:]],
                     [0] * 4, [1] * 4).p_value  # fmt: skip
    assert p < 0.05
    # tiny was saved without clusters: only the fixture has a risky share
    assert lines[0].startswith(
        f"400 K: fixture more stable than tiny (0/4 vs 4/4 failed, log-rank "
        f"p = {p:.2g}); risky MD frames (outside the domain or in high-error "
        "clusters): fixture "
    )
    assert "tiny" not in lines[0].split("clusters):")[1]
    survival = list(csv.DictReader(open(tmp_path / "md" / "survival.csv")))
    tiny_times = [float(s["time_ps"]) for s in survival if s["model"] == "tiny"]
    assert all(0 < t < 0.1 for t in tiny_times)


def test_a_large_share_of_risky_frames_is_in_the_verdict():
    """At 1,500 K 77-87 % of the frames were risky and the verdict was silent:
    the share (range over replicas) belongs in the verdict line."""
    from md_validation.survival import risky_share

    def rows(model, risky, temperature=1500.0):
        return [
            dict(model=model, temperature_K=temperature, replica=k,
                 risky_fraction=r, outside_domain_fraction=r - 0.1,
                 high_error_fraction=0.1)
            for k, r in enumerate(risky)
        ]  # fmt: skip

    summary = rows("default", [0.77, 0.87, 0.80]) + rows("flattened", [0.1, 0.2, 0.15])
    summary += rows("plain", [math.nan] * 3)  # saved without clusters
    hot = risky_share(summary, "default", 1500.0)
    assert hot["mean"] == pytest.approx(0.8133, abs=1e-4)
    assert (hot["min"], hot["max"], hot["replicas"]) == (0.77, 0.87, 3)
    assert hot["outside_domain"] == pytest.approx(0.7133, abs=1e-4)
    assert risky_share(summary, "plain", 1500.0) is None
    assert risky_share(summary, "default", 300.0) is None
    pair = pair_of(0, 0, 3, temperature=1500.0)
    pair["risky_share"] = [hot, risky_share(summary, "flattened", 1500.0)]
    line = verdict_line(pair)
    assert line.startswith(
        "1500 K: no difference detectable between default and flattened (0/3 vs 0/3 "
        "failed, no failures); risky MD frames (outside the domain or in high-error "
        "clusters): default 77-87 %, flattened 10-20 %, mostly where the models "
        "were not validated; with 3 replicas per model only 3/3"
    )
    pair["risky_share"] = [risky_share(summary, "flattened", 1500.0), None]
    line = verdict_line(pair)
    assert "clusters): default 10-20 %; with 3" in line and "mostly" not in line
    pair["risky_share"] = [None, None]
    assert "risky" not in verdict_line(pair)


@pytest.mark.slow
def test_equal_survival_curves_stay_visible(tmp_path):
    """Two models with every replica stable gave one line: the second is drawn
    offset, in another style, with markers, and the figure says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from md_validation.survival import CURVE_OFFSET, plot_survival, survival_figure

    subjects = table("default", 300.0, [1.0] * 4, [False] * 4)
    subjects += table("flattened", 300.0, [1.0] * 4, [False] * 4)
    subjects += table("tiny", 300.0, [0.2, 0.4, 1.0, 1.0], [True, True, False, False])
    groups = summarize_groups(subjects, {"default": 1.0, "flattened": 1.0, "tiny": 1.0})
    fig = survival_figure(groups)
    ax = fig.axes[0]
    curves = [line for line in ax.lines if line.get_linestyle() != "None"]
    assert [c.get_label() for c in curves] == [
        "default (0/4 failed)", "flattened (0/4 failed)", "tiny (2/4 failed)"
    ]  # fmt: skip
    first, second = (np.asarray(c.get_ydata()) for c in curves[:2])
    np.testing.assert_allclose(first - second, CURVE_OFFSET)
    assert len({c.get_linestyle() for c in curves}) == 3
    markers = [line for line in ax.lines if line.get_linestyle() == "None"]
    # a marker at each of tiny's two failures and at every run's end
    assert [len(m.get_xdata()) for m in markers] == [1, 1, 3]
    texts = " ".join(t.get_text() for t in fig.texts)
    assert f"offset by {CURVE_OFFSET:g} per model" in texts
    plt.close(fig)
    plot_survival(groups, tmp_path / "survival.png")
    assert (tmp_path / "survival.png").stat().st_size > 1000
