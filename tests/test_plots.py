"""Plot functions write PNGs and leave the choice of matplotlib backend alone."""

import matplotlib
import matplotlib.pyplot as plt
import pytest

from ase_flatten.plots import plot_error_curves


def test_plotting_keeps_the_callers_backend(tmp_path):
    history = [
        {
            "n_train": n,
            "iteration": it,
            "test": {"cluster_force_rmse": [0.3, None, 0.1]},
        }
        for n, it in ((10, 0), (20, "final"))
    ]
    previous = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        plot_error_curves(history, tmp_path / "curves.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        plt.switch_backend(previous)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def saved_figures(monkeypatch):
    """Record every figure the plot functions save (they close them after)."""
    from matplotlib.figure import Figure

    figures = []
    original = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def gfn1_errors(xtb_dataset, gfn1_dataset, n_geometry=4, n_energy=3):
    from ase_flatten.clustering import cluster_dataset
    from ase_flatten.error_analysis import cluster_errors

    clusters = cluster_dataset(xtb_dataset, n_geometry=n_geometry, n_energy=n_energy)
    return cluster_errors(
        xtb_dataset,
        gfn1_dataset.energies,
        gfn1_dataset.forces,
        clusters.labels_,
        align_energies=True,
    )


@pytest.mark.slow
def test_cluster_errors_figure(tmp_path, monkeypatch, xtb_dataset, gfn1_dataset):
    """Fig. 2 names what it shows, keeps one axis per side and draws the
    population as bars under the same clusters, not as a line across them."""
    import numpy as np

    from ase_flatten.plots import plot_cluster_errors

    errors = gfn1_errors(xtb_dataset, gfn1_dataset)
    figures = saved_figures(monkeypatch)
    path = tmp_path / "cluster_errors.png"
    plot_cluster_errors(errors, path, model="GFN1-xTB", dataset="ethanol.extxyz")
    assert path.stat().st_size > 10_000
    (fig,) = figures
    title = fig._suptitle.get_text()
    assert "GFN1-xTB on ethanol.extxyz" in title
    assert "150 frames in 12 clusters" in title
    rmse_ax, pop_ax = (ax for ax in fig.axes if ax.patches)
    order = errors.order()
    heights = [bar.get_height() for bar in rmse_ax.patches]
    np.testing.assert_allclose(heights, errors.force_rmse[order])
    # the population: bars, one per cluster in the same order, frame counts
    counts = [bar.get_height() for bar in pop_ax.patches]
    assert counts == errors.n_frames[order].tolist()
    assert pop_ax.get_shared_x_axes().joined(pop_ax, rmse_ax)
    # no line through categorical bars: only the overall RMSE line is drawn
    assert [line.get_linestyle() for line in rmse_ax.lines] == ["--"]
    # eV/Å on the left, kcal/(mol Å) on the right, nothing crowding the left
    labels = {
        side: [
            ax.get_ylabel()
            for ax in (rmse_ax, *rmse_ax.child_axes, *fig.axes[2:])
            if ax.get_ylabel() and ax.yaxis.get_label_position() == side
        ]
        for side in ("left", "right")
    }
    assert labels == {"left": ["force RMSE [eV/Å]"], "right": ["[kcal/(mol Å)]"]}


@pytest.mark.slow
def test_cluster_comparison_figure(tmp_path, monkeypatch, xtb_dataset, gfn1_dataset):
    """Fig. 5-7: a title, one legend for both panels, clusters by id, and the
    test frames of every cluster."""
    import numpy as np

    from ase_flatten.comparison import plot_comparison

    errors = gfn1_errors(xtb_dataset, gfn1_dataset)
    other = gfn1_errors(xtb_dataset, gfn1_dataset)
    figures = saved_figures(monkeypatch)
    path = tmp_path / "cluster_comparison.png"
    plot_comparison(["random", "flat"], [errors, other], path, title="on ethanol")
    assert path.stat().st_size > 10_000
    (fig,) = figures
    assert fig._suptitle.get_text() == "on ethanol"
    assert len(fig.legends) == 1
    assert not any(ax.get_legend() for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["random", "flat"]
    order = errors.order()
    count_axes = [ax for ax in fig.axes if ax.get_ylabel() == "test frames"]
    assert len(count_axes) == 2
    for ax in count_axes:
        assert [p.get_height() for p in ax.patches] == errors.n_frames[order].tolist()
        ticks = [int(t.get_text()) for t in ax.get_xticklabels()]
        assert ticks == order.tolist()  # cluster ids, not positions
    force = next(ax for ax in fig.axes if ax.get_ylabel().startswith("test force"))
    heights = [p.get_height() for p in force.patches][: len(order)]
    np.testing.assert_allclose(heights, errors.force_rmse[order])
