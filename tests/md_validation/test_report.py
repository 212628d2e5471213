"""energy_vs_time.png: which replicas each line averages, with their band."""

import matplotlib
import numpy as np
import pytest

from md_validation.report import energy_figure, plot_energy_vs_time, replica_band

pytestmark = pytest.mark.slow  # figures of MD runs

matplotlib.use("Agg")


def record(total):
    return {"time_ps": np.arange(len(total)) * 0.01, "total_eV": np.asarray(total)}


def test_energy_lines_name_their_replicas_and_carry_a_band(tmp_path):
    import matplotlib.pyplot as plt

    runs = [
        dict(model="default", temperature_K=300.0, failed=False,
             record=record([1.0, 1.2, 1.4, 1.6])),
        dict(model="default", temperature_K=300.0, failed=True,
             record=record([3.0, 3.6])),  # failed after two steps
        dict(model="flattened", temperature_K=300.0, failed=False,
             record=record([1.0, 1.1, 1.2, 1.3])),
    ]  # fmt: skip
    band = replica_band([r["record"] for r in runs[:2]])
    np.testing.assert_allclose(band["mean"], [2.0, 2.4, 1.4, 1.6])
    np.testing.assert_allclose(band["low"], [1.0, 1.2, 1.4, 1.6])
    np.testing.assert_allclose(band["high"], [3.0, 3.6, 1.4, 1.6])
    assert band["running"].tolist() == [2, 2, 1, 1]
    fig = energy_figure(runs, reference_energy=1.0)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == [
        "default: mean of 2 replicas, 1 failed",
        "flattened: mean of 1 replica",
    ]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 1.4, 0.4, 0.6])
    assert ax.lines[0].get_linestyle() != ax.lines[1].get_linestyle()
    (default_band, _) = ax.collections  # one band per model
    corners = default_band.get_paths()[0].vertices[:, 1]
    assert corners.min() == 0.0 and corners.max() == 2.6  # lowest .. highest replica
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "mean over the replicas still running" in texts
    assert "lowest to highest replica" in texts
    plt.close(fig)
    plot_energy_vs_time(runs, tmp_path / "e.png", 1.0)
    assert (tmp_path / "e.png").stat().st_size > 1000
