"""The paper's figures as matplotlib PNGs."""

from __future__ import annotations

import os

import numpy as np

from .error_analysis import KCAL_MOL, ClusterErrors
from .outputs import atomic_path


def plot_cluster_errors(
    errors: ClusterErrors, path: str | os.PathLike, title: str | None = None
) -> None:
    """Fig. 2: per-cluster force RMSE, sorted, with population and overall RMSE.

    Bars are the force RMSE of each cluster (eV/Å, kcal/(mol Å) on the right-hand
    label), ordered from lowest to highest; the line is the cluster's share of the
    frames on a second axis; the dashed line is the RMSE over all frames.
    """
    import matplotlib.pyplot as plt

    order = errors.order()
    rmse = errors.force_rmse[order]
    share = errors.n_frames[order] / errors.n_frames.sum()
    x = np.arange(len(order))
    overall = errors.overall["force_rmse"]

    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    ax.bar(x, rmse, color="tab:orange", label="cluster force RMSE")
    ax.axhline(overall, color="black", ls="--", lw=1.2, label="overall force RMSE")
    ax.set_xlabel("cluster (sorted by force RMSE)")
    ax.set_ylabel("force RMSE [eV/Å]")
    ax.set_xticks(x[:: max(1, len(x) // 25)])
    ax.set_xticklabels(order[:: max(1, len(x) // 25)], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(x) - 0.4)
    kcal = ax.secondary_yaxis(
        "left", functions=(lambda v: v / KCAL_MOL, lambda v: v * KCAL_MOL)
    )
    kcal.set_ylabel("[kcal/(mol Å)]")
    kcal.spines["left"].set_position(("outward", 45))
    pop = ax.twinx()
    pop.plot(x, share, color="tab:blue", lw=1.5, label="population")
    pop.set_ylabel("fraction of frames", color="tab:blue")
    pop.set_ylim(0, share.max() * 1.15)
    handles = ax.get_legend_handles_labels()[0] + pop.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ratio = rmse[-1] / overall
    ax.set_title(title or f"worst cluster {ratio:.2f}x the overall force RMSE")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_error_curves(history: list[dict], path: str | os.PathLike) -> None:
    """Fig. 3: sorted per-cluster test force RMSE after each iteration.

    One line per trained model (iteration 0 = the initial random set, the last =
    the final model), clusters ordered by ascending error within each line;
    the curve flattens as the loop adds frames from the worst regions.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(history)))
    for entry, colour in zip(history, colours, strict=True):
        rmse = np.array(
            [v for v in entry["test"]["cluster_force_rmse"] if v is not None]
        )
        label = f"{entry['n_train']} frames" + (
            " (final)" if entry["iteration"] == "final" else ""
        )
        ax.plot(np.sort(rmse), color=colour, lw=1.6, label=label)
    ax.set_xlabel("cluster (sorted by force RMSE)")
    ax.set_ylabel("test force RMSE [eV/Å]")
    kcal = ax.secondary_yaxis(
        "right", functions=(lambda v: v / KCAL_MOL, lambda v: v * KCAL_MOL)
    )
    kcal.set_ylabel("[kcal/(mol Å)]")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("per-cluster error during flattening")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
