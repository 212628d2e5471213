"""Per-cluster error analysis (the paper's "Outlier detection", Fig. 2).

Given reference labels, a model's predictions for the same frames and a cluster label
per frame, :func:`cluster_errors` measures force and energy errors per cluster. Force
RMSE and MAE run over all force components of the cluster's frames; energy errors
are per frame. Clusters whose force RMSE stands well above the overall value are the
regions of configurational space the model has not learned.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units

from .data import Dataset, read_dataset
from .exceptions import InputError
from .outputs import write_json, write_text

logger = logging.getLogger(__name__)

#: eV per kcal/mol; divide an energy in eV by it to get kcal/mol.
KCAL_MOL = units.kcal / units.mol
#: Resamples of :meth:`ClusterErrors.bootstrap` (seeded).
BOOTSTRAP_RESAMPLES = 1000

__all__ = [
    "ClusterErrors",
    "cluster_errors",
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
            "max_ratio": float(self.force_rmse[worst] / overall_f),
            "min_cluster_force_rmse": float(self.force_rmse[best]),
            "min_cluster": int(best),
            "min_ratio": float(self.force_rmse[best] / overall_f),
            "energy_offset": float(self.energy_offset),
            "energies_aligned": self.aligned,
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

    def bootstrap(
        self, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, k: int = 5
    ) -> dict:
        """Bootstrap 95 % intervals over the evaluated frames.

        Frames are drawn with replacement (seeded), and each statistic is
        recomputed on every resample as it is on the frames themselves: the
        overall force and energy RMSE, the largest cluster force RMSE (whichever
        cluster it falls in) and the mean force RMSE of the ``k`` worst clusters.

        Returns
        -------
        dict
            ``{name: (low, high)}`` for ``force_rmse``, ``energy_rmse``,
            ``max_cluster_force_rmse`` and ``worst5_force_rmse`` (eV, eV/Å).
        """
        rng = np.random.default_rng(seed)
        n = len(self.labels)
        force_sq = self.frame_force_rmse**2
        energy_sq = self.frame_energy_error**2
        stats = np.empty((n_resamples, 4))
        for b in range(n_resamples):
            weight = np.bincount(rng.integers(0, n, n), minlength=n)
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
            )
        low, high = np.percentile(stats, [2.5, 97.5], axis=0)
        names = (
            "force_rmse",
            "energy_rmse",
            "max_cluster_force_rmse",
            "worst5_force_rmse",
        )
        return {
            name: (float(lo), float(hi))
            for name, lo, hi in zip(names, low, high, strict=True)
        }

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
)


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


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
