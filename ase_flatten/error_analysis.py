"""Per-cluster error analysis (the paper's "Outlier detection", Fig. 2).

Given reference labels, a model's predictions for the same frames and a cluster label
per frame, :func:`cluster_errors` measures force and energy errors per cluster. Force
RMSE and MAE run over all force components of the cluster's frames; energy errors
are per frame. Clusters whose force RMSE stands well above the overall value are the
regions of configurational space the model has not learned.

Two measures see no clustering: the 99th percentile and the maximum of the per-atom
force-error norms ``|F_pred - F_ref|`` over all atoms of all frames
(:meth:`ClusterErrors.tail`). Every statistic has a bootstrap 95 % interval over the
frames (:meth:`ClusterErrors.bootstrap`), and the ratio of two models' statistics
on the same frames one from paired resamples (:func:`bootstrap_ratios`).
:func:`read_extra_test` reads a labelled trajectory that must share no frame with
the data a model was trained or tested on (an extra test set, e.g. hotter MD).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units

from .data import Dataset, read_dataset
from .exceptions import InputError
from .files import write_json, write_text

logger = logging.getLogger(__name__)

#: eV per kcal/mol; divide an energy in eV by it to get kcal/mol.
KCAL_MOL = units.kcal / units.mol
#: Resamples of :meth:`ClusterErrors.bootstrap` (seeded).
BOOTSTRAP_RESAMPLES = 1000

#: Percentile of the per-atom force-error norms reported beside the maximum.
TAIL_PERCENTILE = 99
#: Statistics of :meth:`ClusterErrors.bootstrap` and :func:`bootstrap_ratios`.
STATISTICS = (
    "force_rmse",
    "energy_rmse",
    "max_cluster_force_rmse",
    "worst5_force_rmse",
    "atom_error_p99",
    "atom_error_max",
)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "STATISTICS",
    "ClusterErrors",
    "atom_force_errors",
    "bootstrap_ratios",
    "cluster_errors",
    "extra_test_errors",
    "mean_ratios",
    "read_extra_test",
    "model_errors",
    "predict_with_calculator",
    "read_predictions",
    "KCAL_MOL",
]


@dataclass(eq=False)
class ClusterErrors:
    """Errors of one model per cluster, in eV and eV/Å.

    Arrays indexed by cluster id have length ``n_clusters``; clusters with no frames
    hold NaN errors and are left out of tables.
    """

    labels: np.ndarray  #: (M,) cluster of each frame
    frame_force_rmse: np.ndarray  #: (M,) force RMSE of each frame, eV/Å
    frame_energy_error: np.ndarray  #: (M,) predicted - reference energy, eV
    n_frames: np.ndarray  #: (K,) frames per cluster
    force_rmse: np.ndarray  #: (K,)
    force_mae: np.ndarray  #: (K,)
    energy_rmse: np.ndarray  #: (K,)
    energy_mae: np.ndarray  #: (K,)
    overall: dict  #: force_rmse, force_mae, energy_rmse, energy_mae over all frames
    energy_offset: float  #: mean predicted - reference energy (eV)
    aligned: bool  #: whether energy_offset was removed before energy errors
    frames: np.ndarray  #: (M,) dataset index of each evaluated frame
    #: (M, N) norm of each atom's force error ``|F_pred - F_ref|``, eV/Å
    atom_force_error: np.ndarray | None = None
    _resamples: dict = field(default_factory=dict, repr=False)

    @property
    def n_clusters(self) -> int:
        """Number of non-empty clusters."""
        return int((self.n_frames > 0).sum())

    def order(self) -> np.ndarray:
        """Non-empty cluster ids sorted by force RMSE, lowest first (Fig. 2 order)."""
        ids = np.flatnonzero(self.n_frames > 0)
        return ids[np.argsort(self.force_rmse[ids], kind="stable")]

    def worst(self, k: int = 1) -> np.ndarray:
        """The ``k`` cluster ids with the highest force RMSE, worst first."""
        return self.order()[::-1][:k]

    def frames_in(self, clusters) -> np.ndarray:
        """Dataset indices of the evaluated frames in any of ``clusters``."""
        return self.frames[np.isin(self.labels, np.asarray(clusters))]

    def table(self) -> list[dict]:
        """One row per cluster, sorted by force RMSE ascending, eV and kcal/mol."""
        overall = self.overall["force_rmse"]
        rows = []
        for c in self.order():
            row = {
                "cluster": int(c),
                "n_frames": int(self.n_frames[c]),
                "force_rmse": float(self.force_rmse[c]),
                "force_mae": float(self.force_mae[c]),
                "energy_rmse": float(self.energy_rmse[c]),
                "energy_mae": float(self.energy_mae[c]),
                "force_rmse_ratio": float(self.force_rmse[c] / overall),
            }
            for key in ("force_rmse", "force_mae", "energy_rmse", "energy_mae"):
                row[f"{key}_kcal"] = row[key] / KCAL_MOL
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        """The :meth:`table` as CSV text."""
        rows = self.table()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        return out.getvalue()

    def frames_csv(self) -> str:
        """Per-frame errors as CSV text: frame, cluster, force_rmse, energy_error."""
        out = io.StringIO()
        out.write("frame,cluster,force_rmse,energy_error\n")
        for i, c, f, e in zip(
            self.frames,
            self.labels,
            self.frame_force_rmse,
            self.frame_energy_error,
            strict=True,
        ):
            out.write(f"{i},{c},{f:.6g},{e:.6g}\n")
        return out.getvalue()

    def summary(self) -> dict:
        """Overall and extreme values, in eV/Å and kcal/(mol Å)."""
        order = self.order()
        worst, best = order[-1], order[0]
        overall_f = self.overall["force_rmse"]
        summary = {
            "n_frames": int(len(self.labels)),
            "n_clusters": self.n_clusters,
            **{k: float(v) for k, v in self.overall.items()},
            "max_cluster_force_rmse": float(self.force_rmse[worst]),
            "max_cluster": int(worst),
            "max_cluster_frames": int(self.n_frames[worst]),
            "max_ratio": float(self.force_rmse[worst] / overall_f),
            "min_cluster_force_rmse": float(self.force_rmse[best]),
            "min_cluster": int(best),
            "min_ratio": float(self.force_rmse[best] / overall_f),
            "energy_offset": float(self.energy_offset),
            "energies_aligned": self.aligned,
            **self.tail(),
        }
        for key in _KCAL_KEYS:
            summary[f"{key}_kcal"] = summary[key] / KCAL_MOL
        summary["units"] = {
            "force": "eV/Å",
            "energy": "eV",
            "force_kcal": "kcal/(mol Å)",
            "energy_kcal": "kcal/mol",
        }
        return summary

    def worst_frames(self, k: int = 1) -> int:
        """Evaluated frames in the ``k`` worst clusters."""
        return int(self.n_frames[self.worst(k)].sum())

    def tail(self) -> dict:
        """The 99th percentile and the maximum of the per-atom force-error norms.

        Over every atom of every evaluated frame, in eV/Å: ``atom_error_p99``
        (``numpy.percentile``, linear interpolation) and ``atom_error_max``.
        """
        values = self._atom_errors()
        return {
            "atom_error_p99": float(np.percentile(values, TAIL_PERCENTILE)),
            "atom_error_max": float(values.max()),
        }

    def _atom_errors(self) -> np.ndarray:
        if self.atom_force_error is None:
            raise ValueError("these errors hold no per-atom force errors")
        return self.atom_force_error

    def statistics(self, k: int = 5) -> dict:
        """Every statistic of :data:`STATISTICS` on the evaluated frames (eV, eV/Å).

        ``max_cluster_force_rmse`` is the largest cluster force RMSE and
        ``worst5_force_rmse`` the mean of the ``k`` largest.
        """
        per_cluster = np.sort(self.force_rmse[self.n_frames > 0])[::-1][:k]
        return {
            "force_rmse": self.overall["force_rmse"],
            "energy_rmse": self.overall["energy_rmse"],
            "max_cluster_force_rmse": float(per_cluster[0]),
            "worst5_force_rmse": float(per_cluster.mean()),
            **self.tail(),
        }

    def resampled(
        self, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, k: int = 5
    ) -> np.ndarray:
        """Every statistic on frames drawn with replacement, (n_resamples, S).

        Columns follow :data:`STATISTICS`. Resample ``b`` draws the same frame
        positions for every :class:`ClusterErrors` of as many frames with the same
        ``seed``: two models evaluated on the same frames are resampled in pairs.
        Computed once per arguments.
        """
        key = (n_resamples, seed, k)
        if key not in self._resamples:
            self._resamples[key] = self._resample(n_resamples, seed, k)
        return self._resamples[key]

    def _resample(self, n_resamples: int, seed: int, k: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n = len(self.labels)
        force_sq = self.frame_force_rmse**2
        energy_sq = self.frame_energy_error**2
        atoms = self._atom_errors()
        atom_max = atoms.max(axis=1)
        stats = np.empty((n_resamples, len(STATISTICS)))
        for b in range(n_resamples):
            draw = rng.integers(0, n, n)
            weight = np.bincount(draw, minlength=n)
            count = np.bincount(self.labels, weight, minlength=len(self.n_frames))
            present = count > 0
            per_cluster = np.sqrt(
                np.bincount(self.labels, weight * force_sq, minlength=len(count))[
                    present
                ]
                / count[present]
            )
            worst = np.sort(per_cluster)[::-1][:k]
            stats[b] = (
                np.sqrt(weight @ force_sq / n),
                np.sqrt(weight @ energy_sq / n),
                worst[0],
                worst.mean(),
                np.percentile(atoms[draw], TAIL_PERCENTILE),
                atom_max[draw].max(),
            )
        return stats

    def bootstrap(
        self, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, k: int = 5
    ) -> dict:
        """Bootstrap 95 % intervals over the evaluated frames.

        Frames are drawn with replacement (seeded), and each statistic is
        recomputed on every resample as it is on the frames themselves: the
        overall force and energy RMSE, the largest cluster force RMSE (whichever
        cluster it falls in), the mean force RMSE of the ``k`` worst clusters,
        and the 99th percentile and maximum of the per-atom force-error norms.

        Returns
        -------
        dict
            ``{name: (low, high)}`` for every name of :data:`STATISTICS`
            (eV, eV/Å).
        """
        return _percentile_interval(self.resampled(n_resamples, seed, k))

    def write(self, directory: str | os.PathLike, **meta) -> None:
        """Write ``cluster_errors.csv``, ``frame_errors.csv`` and ``summary.json``.

        ``meta`` items (e.g. the dataset path) are added to the summary.
        """
        write_text(os.path.join(directory, "cluster_errors.csv"), self.to_csv())
        write_text(os.path.join(directory, "frame_errors.csv"), self.frames_csv())
        write_json(os.path.join(directory, "summary.json"), {**self.summary(), **meta})


_KCAL_KEYS = (
    "force_rmse",
    "force_mae",
    "energy_rmse",
    "energy_mae",
    "max_cluster_force_rmse",
    "min_cluster_force_rmse",
    "energy_offset",
    "atom_error_p99",
    "atom_error_max",
)


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def _percentile_interval(stats: np.ndarray) -> dict:
    """``{name: (low, high)}``: the 2.5th and 97.5th percentiles of each column."""
    low, high = np.percentile(stats, [2.5, 97.5], axis=0)
    return {
        name: (float(lo), float(hi))
        for name, lo, hi in zip(STATISTICS, low, high, strict=True)
    }


def bootstrap_ratios(
    errors: ClusterErrors,
    reference: ClusterErrors,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    k: int = 5,
) -> dict:
    """Ratios of one model's statistics to a reference model's, with 95 % intervals.

    Both must be evaluated on the same frames, in the same order (one test
    split); each resample draws the same frames for both (a paired bootstrap),
    so what the two models share cancels out of the interval.

    Returns
    -------
    dict
        ``{name: (ratio, low, high)}`` for every name of :data:`STATISTICS`.
    """
    return mean_ratios([(errors, reference)], n_resamples, seed, k)


def mean_ratios(
    pairs, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, k: int = 5
) -> dict:
    """The mean over ``pairs`` of model / reference ratios, with 95 % intervals.

    Each pair is ``(errors, reference)`` of two models on the same frames; the
    pairs (e.g. one per training seed) may share their frames, as runs with one
    test split do. Every resample draws the same frame positions for every pair
    and averages the ratios over the pairs, so the interval is that of the mean
    over pairs when the test frames are drawn again; the spread of the pairs
    themselves (over seeds) is not in it.

    Returns
    -------
    dict
        ``{name: (mean ratio, low, high)}`` for every name of :data:`STATISTICS`.

    Raises
    ------
    ValueError
        When a pair's two errors are not of the same frames, or pairs differ in
        their number of frames.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no pairs of errors to compare")
    sizes = set()
    for errors, reference in pairs:
        if not np.array_equal(errors.frames, reference.frames):
            raise ValueError("a model and its reference were evaluated on other frames")
        sizes.add(len(errors.frames))
    if len(sizes) > 1:
        raise ValueError(f"pairs evaluated on different numbers of frames: {sizes}")
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.mean(
            [
                _as_row(errors.statistics(k)) / _as_row(reference.statistics(k))
                for errors, reference in pairs
            ],
            axis=0,
        )
        resampled = np.mean(
            [
                errors.resampled(n_resamples, seed, k)
                / reference.resampled(n_resamples, seed, k)
                for errors, reference in pairs
            ],
            axis=0,
        )
    interval = _percentile_interval(resampled)
    return {
        name: (float(value), *interval[name])
        for name, value in zip(STATISTICS, point, strict=True)
    }


def _as_row(statistics: dict) -> np.ndarray:
    return np.array([statistics[name] for name in STATISTICS])


def atom_force_errors(predicted, reference) -> np.ndarray:
    """Norm of each atom's force error ``|F_pred - F_ref|``, shape (M, N), eV/Å."""
    return np.linalg.norm(np.asarray(predicted) - np.asarray(reference), axis=-1)


def cluster_errors(
    reference: Dataset,
    energies: np.ndarray,
    forces: np.ndarray,
    labels: np.ndarray,
    align_energies: bool = False,
    frames=None,
) -> ClusterErrors:
    """Force and energy errors of predictions, per cluster and overall.

    Parameters
    ----------
    reference : Dataset
        Reference frames with their labels.
    energies : ndarray, shape (M,)
        Predicted energies in eV for the same frames, same order.
    forces : ndarray, shape (M, N, 3)
        Predicted forces in eV/Å.
    labels : ndarray of int, shape (M,)
        Cluster of each frame.
    align_energies : bool
        Remove the mean energy difference before computing energy errors (for a
        model whose energy zero differs from the reference's, e.g. another method).
    frames : ndarray of int, optional
        Dataset index of each frame of ``reference`` when it is a subset (kept in
        reports); default ``0 .. M-1``.

    Returns
    -------
    ClusterErrors
    """
    energies = np.asarray(energies, dtype=float).reshape(-1)
    forces = np.asarray(forces, dtype=float)
    labels = np.asarray(labels)
    n_frames = len(reference)
    if energies.shape != (n_frames,) or forces.shape != reference.forces.shape:
        raise InputError(
            f"predictions for {len(energies)} frames (forces {forces.shape}) do not "
            f"match {reference.source} ({n_frames} frames, forces "
            f"{reference.forces.shape})"
        )
    if labels.shape != (n_frames,) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"need one integer cluster label per frame ({n_frames})")
    if labels.min() < 0:
        raise InputError("cluster labels must be >= 0")
    if not (np.isfinite(energies).all() and np.isfinite(forces).all()):
        raise InputError("predictions contain NaN or inf")

    diff = (forces - reference.forces).reshape(n_frames, -1)
    frame_mse = np.mean(diff**2, axis=1)
    frame_mae = np.mean(np.abs(diff), axis=1)
    energy_error = energies - reference.energies
    offset = float(energy_error.mean())
    if align_energies:
        energy_error = energy_error - offset

    count = np.bincount(labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_cluster = {
            "force_rmse": np.sqrt(np.bincount(labels, frame_mse) / count),
            "force_mae": np.bincount(labels, frame_mae) / count,
            "energy_rmse": np.sqrt(np.bincount(labels, energy_error**2) / count),
            "energy_mae": np.bincount(labels, np.abs(energy_error)) / count,
        }
    overall = {
        "force_rmse": float(np.sqrt(frame_mse.mean())),
        "force_mae": float(frame_mae.mean()),
        "energy_rmse": float(np.sqrt(np.mean(energy_error**2))),
        "energy_mae": float(np.mean(np.abs(energy_error))),
    }
    return ClusterErrors(
        labels=labels,
        atom_force_error=atom_force_errors(forces, reference.forces),
        frame_force_rmse=np.sqrt(frame_mse),
        frame_energy_error=energy_error,
        n_frames=count,
        overall=overall,
        energy_offset=offset,
        aligned=align_energies,
        frames=np.arange(n_frames) if frames is None else np.asarray(frames, int),
        **per_cluster,
    )


def model_errors(
    backend, dataset: Dataset, frames, labels: np.ndarray, progress: bool | None = None
) -> ClusterErrors:
    """Errors of a trained backend on ``frames``, grouped by the dataset's ``labels``.

    Parameters
    ----------
    backend : ase_flatten.backends.Backend
        Trained model.
    dataset : Dataset
        The reference frames.
    frames : sequence of int
        Frames to evaluate (e.g. the test split).
    labels : ndarray of int, shape (len(dataset),)
        Cluster of every frame of the dataset.
    """
    frames = np.asarray(frames, dtype=int)
    energies, forces = backend.predict(dataset, frames, progress=progress)
    return cluster_errors(
        dataset.subset(frames), energies, forces, labels[frames], frames=frames
    )


def read_extra_test(
    path: str | os.PathLike,
    dataset: Dataset,
    models=(),
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> Dataset:
    """Read an extra test trajectory: the molecule of ``dataset``, none of its frames.

    An extra test set (e.g. MD at a higher temperature) measures what no
    selection from ``dataset`` sees, so it may share no frame with it, nor with
    the frames any of ``models`` trained or validated on. Frames are matched by
    content (:func:`~ase_flatten.data.frame_hashes`), whichever file they were
    read from.

    Parameters
    ----------
    path : path
        Labelled trajectory (any file :func:`~ase_flatten.data.read_dataset`
        reads, ``FILE@SELECTION`` too).
    dataset : Dataset
        The data the models were selected from and tested on.
    models : iterable of (str, SavedModel)
        Named models whose training and validation frames must not be in it.
    energy_key, forces_key : str, optional
        Label keys, as for ``dataset``.

    Raises
    ------
    InputError
        When the file holds other atoms (or another atom order) than
        ``dataset``, or a frame of ``dataset`` or of a model's training data.
    """
    from .data import same_frames

    extra = read_dataset(path, energy_key=energy_key, forces_key=forces_key)
    if not np.array_equal(extra.numbers, dataset.numbers):
        raise InputError(
            f"{path}: holds {extra.formula}, {dataset.source} holds "
            f"{dataset.formula} (or another atom order); an extra test set must be "
            "of the same molecule"
        )
    hashes = extra.frame_hashes()
    shared = same_frames(hashes, dataset.frame_hashes())
    where = f"frames of {dataset.source}"
    for name, model in models:
        if shared.any():
            break
        if model.seen_hashes is not None:
            shared = same_frames(hashes, model.seen_hashes)
            where = f"frames {name} trained or validated on"
    if shared.any():
        raise InputError(
            f"{path}: {int(shared.sum())} of its {len(extra)} frames (the first: "
            f"frame {int(np.flatnonzero(shared)[0])}) are {where}; an extra test "
            "set must hold frames that are never in the training data"
        )
    return extra


def extra_test_errors(
    backend, extra: Dataset, progress: bool | None = None
) -> ClusterErrors:
    """Errors of a trained backend on every frame of an extra test set.

    The frames form one cluster: the statistics that matter are the overall
    RMSE and the per-atom tail (:meth:`ClusterErrors.tail`).
    """
    every = np.arange(len(extra))
    return model_errors(
        backend, extra, every, np.zeros(len(extra), dtype=int), progress=progress
    )


def predict_with_calculator(
    dataset: Dataset, calc, progress: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Energies (M,) and forces (M, N, 3) of every frame from an ASE calculator.

    Each frame is a fresh :class:`ase.Atoms`, so calculators that write onto the
    atoms they evaluate cannot touch the reference labels.
    """
    from tqdm.auto import tqdm

    energies = np.empty(len(dataset))
    forces = np.empty_like(dataset.forces)
    frames = tqdm(
        range(len(dataset)),
        desc="predicting",
        unit="frame",
        disable=_no_progress(progress),
    )
    for i in frames:
        atoms = Atoms(numbers=dataset.numbers, positions=dataset.positions[i])
        atoms.calc = calc
        energies[i] = atoms.get_potential_energy()
        forces[i] = atoms.get_forces()
    return energies, forces


def _no_progress(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None hides the bar when stderr is not a terminal."""
    return None if progress is None else not progress


def read_predictions(
    path: str | os.PathLike,
    reference: Dataset,
    energy_key: str | None = None,
    forces_key: str | None = None,
    atol: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a trajectory of predictions for the frames of ``reference``.

    The file must hold the same frames in the same order (positions equal within
    ``atol`` Å), with predicted energy and forces: in the calculator results, as
    ``energy``/``forces``, or under ``energy_key``/``forces_key`` (e.g. MACE's
    ``MACE_energy``/``MACE_forces``).
    """
    flags = (
        "--pred-energy-key",
        "--pred-forces-key",
        "MACE's output: --pred-energy-key MACE_energy --pred-forces-key MACE_forces, "
        "ase-flatten predict's: flattened_energy, flattened_forces",
    )
    predicted = read_dataset(
        path, energy_key=energy_key, forces_key=forces_key, label_flags=flags
    )
    if len(predicted) != len(reference):
        raise InputError(
            f"{path}: {len(predicted)} frames, but {reference.source} has "
            f"{len(reference)}; predictions must cover the same frames"
        )
    if not np.array_equal(predicted.numbers, reference.numbers):
        raise InputError(
            f"{path}: holds {predicted.formula}, {reference.source} holds "
            f"{reference.formula} (or a different atom order)"
        )
    deviation = np.abs(predicted.positions - reference.positions).max(axis=(1, 2))
    if (deviation > atol).any():
        frame = int(np.flatnonzero(deviation > atol)[0])
        raise InputError(
            f"{path}: frame {frame} positions differ from {reference.source} by "
            f"{deviation[frame]:.3g} Å; predictions must be for the same frames in "
            "the same order"
        )
    return predicted.energies, predicted.forces
