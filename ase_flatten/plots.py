"""The paper's figures as matplotlib PNGs."""

from __future__ import annotations

import os

import numpy as np

from .error_analysis import KCAL_MOL, ClusterErrors
from .files import atomic_path


def plot_cluster_errors(
    errors: ClusterErrors,
    path: str | os.PathLike,
    title: str | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> None:
    """Fig. 2: per-cluster force RMSE, sorted, with the overall RMSE and populations.

    Top: bars of each cluster's force RMSE (eV/Å on the left, kcal/(mol Å) on the
    right), lowest to highest, and the RMSE over all frames as a dashed line.
    Bottom, on the same clusters: the frames each cluster holds. The title names
    ``model`` and ``dataset`` (when given) and the frame and cluster counts.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    order = errors.order()
    rmse = errors.force_rmse[order]
    counts = errors.n_frames[order]
    x = np.arange(len(order))
    overall = errors.overall["force_rmse"]

    fig, (ax, pop) = plt.subplots(
        2,
        1,
        figsize=(8, 5),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
        constrained_layout=True,
    )
    ax.bar(x, rmse, color="tab:orange", label="cluster force RMSE")
    ax.axhline(
        overall, color="black", ls="--", lw=1.2, label=f"overall {overall:.3f} eV/Å"
    )
    ax.set_ylabel("force RMSE [eV/Å]")
    kcal = ax.secondary_yaxis(
        "right", functions=(lambda v: v / KCAL_MOL, lambda v: v * KCAL_MOL)
    )
    kcal.set_ylabel("[kcal/(mol Å)]")
    ax.legend(loc="upper left", fontsize=8)
    bars = pop.bar(x, counts, color="tab:blue", width=0.6)
    if len(x) <= 30:
        pop.bar_label(bars, fontsize=7)
    pop.set_ylabel("frames")
    pop.set_ylim(0, counts.max() * 1.3)
    pop.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    pop.set_xlabel("cluster (sorted by force RMSE)")
    step = max(1, int(np.ceil(len(x) / 25)))
    pop.set_xticks(x[::step])
    pop.set_xticklabels(order[::step], rotation=90, fontsize=7)
    pop.set_xlim(-0.6, len(x) - 0.4)
    ratio = rmse[-1] / overall
    what = " on ".join(part for part in (model, dataset) if part)
    summary = (
        f"worst cluster {ratio:.2f}x the overall force RMSE; "
        f"{int(counts.sum())} frames in {len(order)} clusters"
    )
    heading = title or summary
    fig.suptitle(f"{what}\n{heading}" if what else heading, fontsize=10)
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
