"""Runs side by side on one test split: the paper's Table I and Fig. 5."""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .error_analysis import (
    BOOTSTRAP_RESAMPLES,
    KCAL_MOL,
    STATISTICS,
    bootstrap_ratios,
    extra_test_errors,
    model_errors,
    read_extra_test,
)
from .exceptions import InputError, option
from .files import write_json, write_text

logger = logging.getLogger(__name__)

#: Recorded in the comparison folder's output marker (replaced only by its like).
COMMAND = "ase-flatten compare"
#: The files :func:`compare_models` writes.
OUTPUT_FILES = (
    "comparison.csv",
    "comparison.json",
    "cluster_comparison.png",
    "frame_errors.npz",
)


@dataclass(frozen=True)
class CompareSettings:
    """What :func:`compare_models` reads besides the runs.

    Parameters
    ----------
    data : path, optional
        The dataset (default: the one the first run recorded: its absolute path,
        then the path as given).
    energy_key, forces_key : str, optional
        Label keys of the dataset (default: the ones the first run recorded).
    extra_test : path, optional
        A labelled trajectory of the same molecule that no run trained on and
        the dataset does not hold (e.g. hotter MD): every model's errors on it
        too, read with the dataset's label keys.
    """

    data: str | os.PathLike | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    extra_test: str | os.PathLike | None = None


@dataclass
class Comparison:
    """What :func:`compare_models` measured and where it wrote it.

    Attributes
    ----------
    rows : list of dict
        One per run, first run first: every statistic with its 95 % interval and
        its ratio to the first run's (the columns of ``comparison.csv``).
    directory : Path
        The folder of ``comparison.csv``, ``comparison.json``,
        ``cluster_comparison.png`` and ``frame_errors.npz``.
    """

    rows: list
    directory: Path


def compare_models(
    runs,
    output,
    settings: CompareSettings | None = None,
    *,
    overwrite: bool = False,
    **fields,
) -> Comparison:
    """Compare trained models on their shared test split (Table I, Fig. 5).

    Every run is a model directory (``ase-flatten train`` or ``select``, or
    :func:`~ase_flatten.training.train_model`) made on the same dataset with the
    same test split. Each model predicts the test frames; errors are grouped by
    the first run's clusters. Put the default model first: ratios are to it.

    Parameters
    ----------
    runs : sequence of path
        Model directories.
    output : path
        The folder to write (:data:`OUTPUT_FILES`). An existing non-empty folder
        is replaced only with ``overwrite``, and only when it is an earlier
        comparison.
    settings : CompareSettings, optional
    overwrite : bool
    **fields
        Fields of :class:`CompareSettings` (replacing those of ``settings``).

    Returns
    -------
    Comparison
    """
    from .files import atomic_directory, check_output_directory
    from .training import settings_of

    settings = settings_of(CompareSettings, settings, fields)
    runs = list(runs)
    inputs = [*runs, settings.data, settings.extra_test]
    check_output_directory(output, COMMAND, overwrite, inputs)
    with atomic_directory(output, COMMAND, overwrite, inputs) as tmp:
        rows = compare_runs(
            runs,
            tmp,
            data=settings.data,
            energy_key=settings.energy_key,
            forces_key=settings.forces_key,
            extra_test=settings.extra_test,
        )
    return Comparison(rows, Path(output))


def compare_runs(
    runs, directory, data=None, energy_key=None, forces_key=None, extra_test=None
) -> list[dict]:
    """Evaluate every run's model on the shared test split; write the reports.

    The dataset is ``data``, else the one the first run recorded (its absolute
    path, then the path as given), read with the label keys given here, else the
    ones the first run recorded. ``extra_test`` is a labelled trajectory of the
    same molecule that shares no frame with the dataset or any run's training
    data (:func:`~ase_flatten.error_analysis.read_extra_test`), read with the
    same label keys; every model is measured on all its frames too. Besides
    ``comparison.csv``, ``comparison.json`` and ``cluster_comparison.png``,
    ``frame_errors.npz`` keeps every run's per-frame errors (for intervals
    over several comparisons, :func:`load_frame_errors`). Returns the table
    rows (one per run, first run first).
    """
    from .models import load_model, recorded_label_keys

    models = [load_model(run) for run in runs]
    keys = recorded_label_keys(models[0].meta)
    energy_key, forces_key = energy_key or keys[0], forces_key or keys[1]
    dataset, test = _shared_split(runs, models, data, energy_key, forces_key)
    test, left_out = _unseen(runs, models, dataset, test)
    first = models[0]
    if first.clusters is None or first.clusters.labels_ is None:
        raise InputError(f"{runs[0]}: holds no clusters (train it with ase-flatten)")
    labels = first.clusters.labels_
    extra = extras = None
    if extra_test is not None:  # a bad file fails before any prediction
        extra = read_extra_test(
            extra_test,
            dataset,
            [(str(run), model) for run, model in zip(runs, models, strict=True)],
            energy_key=energy_key,
            forces_key=forces_key,
        )
    results = [
        (run, model, model_errors(model.backend, dataset, test, labels))
        for run, model in zip(runs, models, strict=True)
    ]
    table = _table(results)
    if extra is not None:
        extras = [extra_test_errors(model.backend, extra) for model in models]
        _add_extra(table, extras)
    for row in table:
        row["left_out_test_frames"] = left_out
    errors = [errors for _, _, errors in results]
    names = [row["run"] for row in table]
    write_frame_errors(
        os.path.join(directory, "frame_errors.npz"), names, errors, extras
    )
    write_text(os.path.join(directory, "comparison.csv"), _csv(table))
    extra_record = None
    if extra is not None:
        extra_record = {
            "path": str(extra_test),
            "frames": len(extra),
            "fingerprint": extra.fingerprint(),
        }
    write_json(
        os.path.join(directory, "comparison.json"),
        _comparison_record(dataset, test, left_out, table, errors, extra_record),
    )
    plot_comparison(
        names,
        errors,
        os.path.join(directory, "cluster_comparison.png"),
        title=f"per-cluster test error on {os.path.basename(dataset.source)}: "
        f"{len(test)} test frames in {errors[0].n_clusters} clusters",
    )
    return table


def _shared_split(runs, models, data, energy_key, forces_key):
    """The dataset and the test split every run shares; one line when a run was
    trained on another dataset, another split or frames of the split."""
    from .data import read_dataset
    from .models import recorded_dataset

    dataset = read_dataset(
        recorded_dataset(models[0], data), energy_key=energy_key, forces_key=forces_key
    )
    fingerprint = dataset.fingerprint()
    test = _test_indices(runs[0], models[0])
    if len(test) and test.max() >= len(dataset):
        raise InputError(
            f"{Path(runs[0]) / 'test_indices.npy'}: frame {test.max()} is out of "
            f"range for {dataset.source} ({len(dataset)} frames)"
        )
    for run, model in zip(runs, models, strict=True):
        if model.meta.get("dataset_fingerprint") != fingerprint:
            raise InputError(f"{run}: trained on another dataset than {dataset.source}")
        other = _test_indices(run, model)
        if not np.array_equal(other, test):
            raise InputError(
                f"{run}: has another test split than {runs[0]}; use the same "
                f"{option('test_fraction')} and {option('split_seed')}"
            )
        if np.isin(model.train_indices, test).any():
            raise InputError(f"{run}: trained on frames of the test split")
    return dataset, test


def _comparison_record(dataset, test, left_out, table, errors, extra) -> dict:
    """``comparison.json``: the table, the per-cluster errors of every run, how
    the intervals were drawn and the units."""
    return {
        "dataset": dataset.source,
        "test_frames": len(test),
        "left_out_test_frames": left_out,
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": 0,
            "interval": "95 %, percentile, test frames drawn with replacement",
            "ratios": "paired: the same test frames drawn for a run and the first run",
        },
        "extra_test": extra,
        "runs": table,
        "cluster_frames": errors[0].n_frames.tolist(),
        "cluster_force_rmse": {
            row["run"]: run_errors.force_rmse.tolist()
            for row, run_errors in zip(table, errors, strict=True)
        },
        "cluster_energy_rmse": {
            row["run"]: run_errors.energy_rmse.tolist()
            for row, run_errors in zip(table, errors, strict=True)
        },
        "units": {
            "force": "eV/Å",
            "energy": "eV",
            "atom_error": "eV/Å, norm of one atom's force error",
            "*_kcal": "kcal/mol",
        },
    }


def _unseen(runs, models, dataset, test) -> tuple[np.ndarray, int]:
    """The test frames no run trained or validated on, matched by content.

    A dataset may hold the same frame twice (concatenated files, a restarted
    MD): a test frame equal to a training frame of any run is left out. Runs
    saved before frame hashes were recorded are checked by index only.
    """
    seen = np.zeros(len(test), dtype=bool)
    subset = dataset.subset(test)
    for run, model in zip(runs, models, strict=True):
        found = model.seen_frames(subset)
        if found is None:
            logger.warning(
                "%s: records no hashes of its training frames (saved by an older "
                "ase-flatten): test frames are checked against its training frames "
                "by index only",
                run,
            )
            continue
        seen |= found
    if seen.all():
        raise InputError(
            f"{runs[0]}: every test frame equals a frame some run trained on"
        )
    if seen.any():
        logger.info(
            "leaving out %d of %d test frames: equal to frames a run trained or "
            "validated on",
            int(seen.sum()),
            len(test),
        )
    return test[~seen], int(seen.sum())


def _test_indices(run, model) -> np.ndarray:
    """The test split ``model`` (loaded from ``run``) records; one line without."""
    if model.test_indices is None:
        raise InputError(f"{run}: no test split (test_indices.npy); train it again")
    return model.test_indices


def worst_mean(errors, k: int = 5) -> float:
    """Mean force RMSE of the ``k`` worst clusters."""
    return float(np.mean(errors.force_rmse[errors.worst(k)]))


def _table(results) -> list[dict]:
    """One row per run: every statistic with its 95 % interval, and its ratio to
    the first run's with a paired 95 % interval."""
    base = results[0][2]
    rows = []
    for run, model, errors in results:
        worst = int(errors.worst(1)[0])
        row = {
            "run": Path(run).name or str(run),
            "strategy": model.meta.get("strategy", ""),
            "backend": model.meta.get("backend", ""),
            "n_train": int(len(model.train_indices)),
            "test_frames": int(len(errors.labels)),
            "max_cluster": worst,
            "max_cluster_frames": int(errors.n_frames[worst]),
            "worst5_frames": errors.worst_frames(5),
        }
        row.update(_statistics(errors, base))
        rows.append(row)
    return rows


#: Ratio column of each statistic in the table (the names older reports used).
_RATIO = {
    "force_rmse": "force_rmse_ratio",
    "energy_rmse": "energy_rmse_ratio",
    "max_cluster_force_rmse": "max_cluster_ratio",
    "worst5_force_rmse": "worst5_ratio",
    "atom_error_p99": "atom_error_p99_ratio",
    "atom_error_max": "atom_error_max_ratio",
}


def _statistics(errors, base, prefix="", names=STATISTICS) -> dict:
    """Each statistic, its interval, its ratio to ``base``'s with a paired
    interval, in eV and eV/Å, then in kcal/mol; keys start with ``prefix``."""
    values = errors.statistics()
    interval = errors.bootstrap(seed=0)
    ratios = bootstrap_ratios(errors, base, seed=0)
    row = {}
    for name in names:
        key = prefix + name
        row[key] = values[name]
        row[f"{key}_low"], row[f"{key}_high"] = interval[name]
    for name in names:
        key = prefix + _RATIO[name]
        row[key], row[f"{key}_low"], row[f"{key}_high"] = ratios[name]
    for name in names:
        row[f"{prefix}{name}_kcal"] = values[name] / KCAL_MOL
    return row


#: The statistics of an extra test set (one cluster: no cluster statistics).
EXTRA_STATISTICS = ("force_rmse", "energy_rmse", "atom_error_p99", "atom_error_max")


def _add_extra(table, extras) -> None:
    """The extra test set's statistics and ratios, as ``extra_*`` columns."""
    for row, errors in zip(table, extras, strict=True):
        row["extra_test_frames"] = int(len(errors.labels))
        row.update(_statistics(errors, extras[0], "extra_", EXTRA_STATISTICS))


def write_frame_errors(path, names, errors_list, extras=None) -> None:
    """Every run's per-frame test errors (and extra test errors) in one npz.

    Arrays: ``frames`` and ``labels`` (the test frames and their clusters),
    ``names``, and per run ``i`` ``force_i`` (frame force RMSE), ``energy_i``
    (frame energy error), ``atoms_i`` (per-atom force-error norms); with an
    extra test set ``extra_force_i``, ``extra_energy_i``, ``extra_atoms_i``.
    """
    from .files import atomic_path

    first = errors_list[0]
    arrays = {
        "names": np.array(names, dtype=str),
        "frames": first.frames,
        "labels": first.labels,
        "n_clusters": np.array(len(first.n_frames)),
    }
    for prefix, group in (("", errors_list), ("extra_", extras or [])):
        for i, errors in enumerate(group):
            arrays[f"{prefix}force_{i}"] = errors.frame_force_rmse
            arrays[f"{prefix}energy_{i}"] = errors.frame_energy_error
            arrays[f"{prefix}atoms_{i}"] = errors.atom_force_error
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def load_frame_errors(path) -> dict:
    """Read :func:`write_frame_errors`' file back: ``{run: ClusterErrors}``, and
    ``{run: ClusterErrors}`` of the extra test set (empty without one)."""

    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    frames, labels = arrays["frames"], arrays["labels"]
    n_clusters = int(arrays["n_clusters"])
    tables = ({}, {})
    for i, name in enumerate(arrays["names"].tolist()):
        for table, prefix, these in (
            (tables[0], "", labels),
            (tables[1], "extra_", None),
        ):
            if f"{prefix}force_{i}" not in arrays:
                continue
            force = arrays[f"{prefix}force_{i}"]
            if these is None:
                these = np.zeros(len(force), dtype=int)
            table[name] = _from_frames(
                these,
                force,
                arrays[f"{prefix}energy_{i}"],
                arrays[f"{prefix}atoms_{i}"],
                frames if prefix == "" else np.arange(len(force)),
                n_clusters if prefix == "" else 1,
            )
    return tables


def _from_frames(labels, force, energy, atoms, frames, n_clusters):
    """A :class:`ClusterErrors` from per-frame errors (force MAE left NaN)."""
    from .error_analysis import ClusterErrors

    count = np.bincount(labels, minlength=n_clusters)
    with np.errstate(invalid="ignore", divide="ignore"):
        force_rmse = np.sqrt(np.bincount(labels, force**2, n_clusters) / count)
        energy_rmse = np.sqrt(np.bincount(labels, energy**2, n_clusters) / count)
        energy_mae = np.bincount(labels, np.abs(energy), n_clusters) / count
    return ClusterErrors(
        labels=labels,
        frame_force_rmse=force,
        frame_energy_error=energy,
        n_frames=count,
        force_rmse=force_rmse,
        force_mae=np.full(n_clusters, np.nan),
        energy_rmse=energy_rmse,
        energy_mae=energy_mae,
        overall={
            "force_rmse": float(np.sqrt(np.mean(force**2))),
            "force_mae": float("nan"),
            "energy_rmse": float(np.sqrt(np.mean(energy**2))),
            "energy_mae": float(np.mean(np.abs(energy))),
        },
        energy_offset=float("nan"),
        aligned=False,
        frames=np.asarray(frames),
        atom_force_error=atoms,
    )


def _csv(rows) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
        )
    return out.getvalue()


def plot_comparison(names, errors_list, path, title=None) -> None:
    """Fig. 6 and 7: per-cluster test energy (left) and force (right) RMSE.

    Clusters are sorted by the first run's force RMSE and labelled by id, one bar
    colour per run, one legend for both panels; under each panel the test frames
    of every cluster (the same for all runs). ``title`` goes on top.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .files import atomic_path

    order = errors_list[0].order()
    counts = errors_list[0].n_frames[order]
    width = 0.8 / len(names)
    x = np.arange(len(order))
    step = max(1, int(np.ceil(len(x) / 25)))
    fig, axes = plt.subplots(
        2,
        2,
        figsize=(13, 5.5),
        sharex="col",
        gridspec_kw={"height_ratios": [3, 1]},
        layout="constrained",
    )
    panels = (("energy_rmse", "energy", "eV", "kcal/mol"),
              ("force_rmse", "force", "eV/Å", "kcal/(mol Å)"))  # fmt: skip
    for column, (key, label, unit, kcal_unit) in enumerate(panels):
        ax, pop = axes[:, column]
        for k, (name, errors) in enumerate(zip(names, errors_list, strict=True)):
            ax.bar(x + (k - (len(names) - 1) / 2) * width,
                   getattr(errors, key)[order], width=width, label=name)  # fmt: skip
        ax.set_ylabel(f"test {label} RMSE [{unit}]")
        kcal = ax.secondary_yaxis(
            "right", functions=(lambda v: v / KCAL_MOL, lambda v: v * KCAL_MOL)
        )
        kcal.set_ylabel(f"[{kcal_unit}]")
        bars = pop.bar(x, counts, color="0.55", width=0.6)
        if len(x) <= 30:
            pop.bar_label(bars, fontsize=7)
        pop.set_ylabel("test frames")
        pop.set_ylim(0, counts.max() * 1.3)
        pop.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
        pop.set_xticks(x[::step])
        pop.set_xticklabels(order[::step], rotation=90 if len(x) > 12 else 0)
        pop.set_xlabel(f"cluster (sorted by {names[0]}'s force RMSE)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(names))
    fig.suptitle(title or "per-cluster test error")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
