"""The saved model directory: the unit users pass around.

::

    DIR/model.json         backend, hyperparameters, molecule, provenance
    DIR/train_indices.npy  the training frames (indices into the dataset)
    DIR/validation_indices.npy  the frames the backend validated on (may be empty)
    DIR/model/             the backend's files (sGDML npz, SchNet weights, GAP xml)
    DIR/clusters.npz       optional: the cluster model of the dataset
    DIR/cluster_errors.json  optional: the model's measured force RMSE per cluster

``FlattenedCalculator(DIR)``, ``ase-flatten errors --model DIR`` and md_validation
all read it through :func:`load_model`. A directory is written next to its final
place and renamed into it, so a crash never leaves half a model behind.
"""

from __future__ import annotations

import json
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

FORMAT = "ase-flatten-model"
FORMAT_VERSION = 2  # 2: sGDML and SchNet files load without pickle


@dataclass
class SavedModel:
    """A trained backend with its provenance, as loaded from a model directory."""

    backend: Backend
    meta: dict
    train_indices: np.ndarray
    path: Path | None = None
    validation_indices: np.ndarray | None = None  #: None when not recorded
    clusters: object | None = None  #: TwoStageClustering, when saved with one
    cluster_force_rmse: np.ndarray | None = None  #: eV/Å per cluster id
    domain_threshold: float | None = None  #: descriptor distance, Å
    extra: dict = field(default_factory=dict)


def save_model(
    directory: str | os.PathLike,
    backend: Backend,
    train_indices,
    dataset=None,
    *,
    clusters=None,
    cluster_errors=None,
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
        info.update(dataset=dataset.source, dataset_fingerprint=dataset.fingerprint())
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        backend.save(tmp / "model")
        np.save(tmp / "train_indices.npy", np.asarray(train_indices, dtype=int))
        validation = getattr(backend, "validation_indices_", None)
        if validation is not None:
            np.save(tmp / "validation_indices.npy", np.asarray(validation, dtype=int))
        if clusters is not None:
            from .clustering import save_clusters

            info["domain_threshold"] = clusters.domain_threshold()
            save_clusters(tmp / "clusters.npz", clusters)
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
    "validation_indices.npy",
    "clusters.npz",
    "cluster_errors.json",
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


def load_model(path: str | os.PathLike, factory: str | None = None) -> SavedModel:
    """Load a model directory written by :func:`save_model`.

    No code from the directory runs: model files are read without pickle, and an
    ``ase``-backend model's calculator factory is imported only when the caller
    names it.

    Parameters
    ----------
    path : path
        The model directory (or its ``model.json``).
    factory : str, optional
        For an ``ase``-backend model: its calculator factory,
        ``"module:callable"``, exactly as saved. Required for such models.

    Raises
    ------
    InputError
        Missing directory, no or foreign ``model.json``, unknown backend, backend
        files that cannot be loaded or would need pickle, an ``ase`` model without
        its ``factory``, missing optional dependency.
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
    options = {}
    if name == "ase":
        options["factory"] = factory
    elif factory is not None:
        raise InputError(f"{path}: a {name} model; factory= is for ase-backend models")
    backend = backend_class(name).load(
        path / "model", numbers, params, meta.get("random_state", 0), **options
    )
    saved = SavedModel(
        backend=backend,
        meta=meta,
        train_indices=np.load(path / "train_indices.npy"),
        path=path,
        domain_threshold=meta.get("domain_threshold"),
    )
    if (path / "validation_indices.npy").exists():
        saved.validation_indices = np.load(path / "validation_indices.npy")
    if (path / "clusters.npz").exists():
        from .clustering import load_clusters

        saved.clusters = load_clusters(path / "clusters.npz")[0]
    if (path / "cluster_errors.json").exists():
        errors = json.loads((path / "cluster_errors.json").read_text())
        rmse = np.asarray(errors["force_rmse"], dtype=float)
        saved.cluster_force_rmse = np.where(rmse < 0, np.nan, rmse)
    return saved
