"""The saved model directory: the unit users pass around.

::

    DIR/model.json         backend, hyperparameters, molecule, provenance, the
                           data's hydrogen partners (atom-order check)
    DIR/train_indices.npy  the training frames (indices into the dataset)
    DIR/model/             the backend's files (sGDML npz, SchNet best_model, GAP xml)
    DIR/clusters.npz       optional: the cluster model of the dataset
    DIR/cluster_errors.json  optional: the model's measured force RMSE per cluster
    DIR/domain.npz         optional: the data's applicability domain (domain.py)

``FlattenedCalculator(DIR)``, ``ase-flatten errors --model DIR`` and md_validation
all read it through :func:`load_model`. A directory is written next to its final
place and renamed into it, so a crash never leaves half a model behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .backends import Backend, backend_class
from .exceptions import InputError

logger = logging.getLogger(__name__)

FORMAT = "ase-flatten-model"
FORMAT_VERSION = 1


@dataclass
class SavedModel:
    """A trained backend with its provenance, as loaded from a model directory."""

    backend: Backend
    meta: dict
    train_indices: np.ndarray
    path: Path | None = None
    clusters: object | None = None  #: TwoStageClustering, when saved with one
    cluster_force_rmse: np.ndarray | None = None  #: eV/Å per cluster id
    domain_threshold: float | None = None  #: descriptor distance, Å
    domain: object | None = None  #: ApplicabilityDomain, when saved with one
    extra: dict = field(default_factory=dict)


def save_model(
    directory: str | os.PathLike,
    backend: Backend,
    train_indices,
    dataset=None,
    *,
    clusters=None,
    cluster_errors=None,
    domain=None,
    overwrite: bool = False,
    **meta,
) -> Path:
    """Write a trained backend and its provenance to ``directory``.

    Parameters
    ----------
    directory : path
        Model directory to create. An existing non-empty one is replaced only with
        ``overwrite``.
    backend : Backend
        Trained backend.
    train_indices : sequence of int
        Frames it was trained on (indices into ``dataset``).
    dataset : Dataset, optional
        The dataset, recorded by path and fingerprint.
    clusters : TwoStageClustering, optional
        Cluster model of the dataset (for per-structure cluster and domain reports).
    cluster_errors : ClusterErrors, optional
        The model's errors per cluster of ``clusters``.
    domain : ApplicabilityDomain, optional
        The data's applicability domain; with ``clusters`` and ``dataset`` and
        none given, one is calibrated on ``dataset`` with the default settings.
    **meta
        Further JSON-serialisable provenance (strategy, seed, timings, ...).
    """
    directory = Path(directory)
    if (directory / "model.json").exists() and not overwrite:
        raise InputError(
            f"{directory}: holds a model already; pass --overwrite to replace it"
        )
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ase_flatten_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "backend": backend.name,
        "params": backend.params,
        "random_state": backend.random_state,
        "numbers": backend.numbers_.tolist(),
        "n_train": int(len(train_indices)),
        **meta,
    }
    if dataset is not None:
        from .atom_order import reference_partners

        info.update(dataset=dataset.source, dataset_fingerprint=dataset.fingerprint())
        # what FlattenedCalculator checks a structure's atom order against
        info["hydrogen_partners"] = reference_partners(
            dataset.numbers, dataset.positions
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        backend.save(tmp / "model")
        np.save(tmp / "train_indices.npy", np.asarray(train_indices, dtype=int))
        if clusters is not None:
            from .clustering import save_clusters

            save_clusters(tmp / "clusters.npz", clusters)
            if domain is None and dataset is not None:
                from .domain import ApplicabilityDomain

                domain = ApplicabilityDomain().fit(dataset.numbers, dataset.positions)
            if domain is None:
                info["domain_threshold"] = clusters.domain_threshold()
        if domain is not None:
            domain.save(tmp / "domain.npz")
            info["domain_threshold"] = domain.threshold_
            info["domain"] = domain.summary()
        if cluster_errors is not None:
            errors = {
                "force_rmse": np.nan_to_num(cluster_errors.force_rmse, nan=-1).tolist(),
                "n_frames": cluster_errors.n_frames.tolist(),
                "overall_force_rmse": cluster_errors.overall["force_rmse"],
                "units": "eV/Å; -1 marks a cluster without frames",
            }
            (tmp / "cluster_errors.json").write_text(json.dumps(errors, indent=1))
        (tmp / "model.json").write_text(
            json.dumps(info, indent=2, ensure_ascii=False) + "\n"
        )
        _replace_dir(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


MODEL_FILES = (
    "model.json",
    "model",
    "train_indices.npy",
    "clusters.npz",
    "cluster_errors.json",
    "domain.npz",
)


def _replace_dir(new: Path, target: Path) -> None:
    """Move the model files of ``new`` into ``target``, ``model.json`` last.

    Other files in ``target`` (a selection run's history, say) stay. The old
    ``model.json`` goes first, so an interrupted replacement never leaves a
    model.json describing files that are not there.
    """
    if not target.exists():
        os.replace(new, target)
        return
    for name in MODEL_FILES:
        old = target / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    for name in MODEL_FILES[::-1]:
        if (new / name).exists():
            os.replace(new / name, target / name)


def load_model(path: str | os.PathLike) -> SavedModel:
    """Load a model directory written by :func:`save_model`.

    Raises
    ------
    InputError
        Missing directory, no or foreign ``model.json``, unknown backend, backend
        files that cannot be loaded, missing optional dependency.
    """
    path = Path(path)
    if path.name == "model.json":
        path = path.parent
    if not path.exists():
        raise InputError(f"{path}: no such model directory")
    meta_file = path / "model.json"
    if not path.is_dir() or not meta_file.exists():
        raise InputError(
            f"{path}: not an ase-flatten model directory (no model.json); train one "
            "with `ase-flatten train`"
        )
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        name, params, numbers = meta["backend"], meta["params"], meta["numbers"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{meta_file}: not an ase-flatten model file ({exc})"
        ) from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{meta_file}: written by a newer ase-flatten "
            f"({meta.get('ase_flatten_version')}); upgrade to read it"
        )
    backend = backend_class(name).load(
        path / "model", numbers, params, meta.get("random_state", 0)
    )
    saved = SavedModel(
        backend=backend,
        meta=meta,
        train_indices=np.load(path / "train_indices.npy"),
        path=path,
        domain_threshold=meta.get("domain_threshold"),
    )
    if (path / "clusters.npz").exists():
        from .clustering import load_clusters

        saved.clusters = load_clusters(path / "clusters.npz")[0]
        if not (path / "domain.npz").exists():
            logger.warning(
                "%s: saved without a calibrated domain (domain.npz); its threshold "
                "comes from time-correlated neighbours and flags too many MD frames: "
                "save the model again (ase-flatten train/select) to calibrate one",
                path,
            )
    if (path / "domain.npz").exists():
        from .domain import ApplicabilityDomain

        saved.domain = ApplicabilityDomain.load(path / "domain.npz")
        saved.domain_threshold = saved.domain.threshold_
    if (path / "cluster_errors.json").exists():
        errors = json.loads((path / "cluster_errors.json").read_text())
        rmse = np.asarray(errors["force_rmse"], dtype=float)
        saved.cluster_force_rmse = np.where(rmse < 0, np.nan, rmse)
    return saved
