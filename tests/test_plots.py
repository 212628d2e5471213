"""Plot functions write PNGs and leave the choice of matplotlib backend alone."""

import matplotlib
import matplotlib.pyplot as plt

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
