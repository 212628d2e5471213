"""The saved model directory: the unit users pass around.

::

    DIR/model.json         backend, hyperparameters, molecule, provenance (the
                           dataset as given and as an absolute path, the label
                           keys it was read with), the data's hydrogen
                           partners (atom-order check)
    DIR/train_indices.npy  the training frames (indices into the dataset)
    DIR/validation_indices.npy  the frames the backend validated on (may be empty)
    DIR/frame_hashes.npz   content hashes of the training and validation frames
                           (``data.frame_hashes``): which frames of any file the
                           model has seen
    DIR/model/             the backend's files (sGDML npz, SchNet weights, GAP xml)
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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .backends import Backend, backend_class
from .data import check_searchable
from .exceptions import FILE_READ_ERRORS, InputError
from .outputs import atomic_path, sibling_directory, write_json

logger = logging.getLogger(__name__)

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
    overall_force_rmse: float | None = None  #: eV/Å, measured with the clusters
    domain_threshold: float | None = None  #: descriptor distance, Å
    domain: object | None = None  #: ApplicabilityDomain, when saved with one
    #: content hashes (M, 2) of the training and validation frames; None for models
    #: saved before they were recorded
    seen_hashes: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    #: DistanceRange of the training data, when known (geometry.py)
    distance_range: object | None = None

    def seen_frames(self, dataset) -> np.ndarray | None:
        """Which frames of ``dataset`` the model trained or validated on.

        Frames are matched by content (atomic numbers and positions, see
        :func:`~ase_flatten.data.frame_hashes`), whichever file they were read
        from. None when the model records no hashes (saved by an older
        ase-flatten).
        """
        from .data import same_frames

        if self.seen_hashes is None:
            return None
        if not np.array_equal(dataset.numbers, self.backend.numbers_):
            return np.zeros(len(dataset), dtype=bool)
        return same_frames(dataset.frame_hashes(), self.seen_hashes)

    _sha256: str | None = field(default=None, repr=False, compare=False)

    def content_hash(self) -> str | None:
        """SHA-256 of the model directory's files (:func:`model_content_hash`),
        computed once; None for a model that was never saved."""
        if self.path is None:
            return None
        if self._sha256 is None:
            self._sha256 = model_content_hash(self.path)
        return self._sha256


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

    The files are written beside ``directory`` first and moved in at the end
    (:func:`write_model_files` writes them into a folder of your own).

    Parameters
    ----------
    directory : path
        Model directory to create. An existing non-empty one is replaced only with
        ``overwrite``; files in it that are not model files stay.
    backend : Backend
        Trained backend.
    train_indices : sequence of int
        Frames it was trained on (indices into ``dataset``).
    dataset : Dataset, optional
        The dataset, recorded by path and fingerprint, with the content hashes of
        the training and validation frames (``frame_hashes.npz``).
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
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: is a file, not a folder")
    tmp = sibling_directory(directory)
    try:
        write_model_files(
            tmp,
            backend,
            train_indices,
            dataset,
            clusters=clusters,
            cluster_errors=cluster_errors,
            domain=domain,
            **meta,
        )
        _replace_dir(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def write_model_files(
    directory: str | os.PathLike,
    backend: Backend,
    train_indices,
    dataset=None,
    *,
    clusters=None,
    cluster_errors=None,
    domain=None,
    **meta,
) -> None:
    """Write the files of a model directory into the existing folder ``directory``.

    Not atomic by itself: use it inside
    :func:`~ase_flatten.outputs.atomic_directory`, or call :func:`save_model`.
    Parameters as for :func:`save_model`.
    """
    directory = Path(directory)
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
        from .data import absolute_source

        info.update(
            dataset=dataset.source,
            dataset_path=absolute_source(dataset.source),
            dataset_fingerprint=dataset.fingerprint(),
            energy_key=dataset.energy_key,
            forces_key=dataset.forces_key,
        )
        # what FlattenedCalculator checks a structure's atom order against
        info["hydrogen_partners"] = reference_partners(
            dataset.numbers, dataset.positions
        )
        from .geometry import DistanceRange

        info["distance_range"] = DistanceRange.fit(dataset.positions).to_meta()
    backend.save(directory / "model")
    with atomic_path(directory / "train_indices.npy") as tmp:
        np.save(tmp, np.asarray(train_indices, dtype=int))
    validation = getattr(backend, "validation_indices_", None)
    if validation is not None:
        with atomic_path(directory / "validation_indices.npy") as tmp:
            np.save(tmp, np.asarray(validation, dtype=int))
    if dataset is not None:
        from .data import HASH_GRID
        from .outputs import save_npz

        seen = np.concatenate(
            [np.asarray(train_indices, dtype=int)]
            + ([] if validation is None else [np.asarray(validation, dtype=int)])
        )
        save_npz(
            directory / "frame_hashes.npz",
            seen=dataset.frame_hashes(seen),
            n_train=np.asarray(len(train_indices)),
            grid=np.asarray(HASH_GRID),
        )
    if clusters is not None:
        from .clustering import save_clusters

        cluster_meta = {}
        if dataset is not None:  # its labels_ are those of these frames
            cluster_meta = {
                "fingerprint": dataset.fingerprint(),
                "numbers": dataset.numbers,
                "source": dataset.source,
            }
        save_clusters(directory / "clusters.npz", clusters, **cluster_meta)
        if domain is None and dataset is not None:
            from .domain import ApplicabilityDomain

            domain = ApplicabilityDomain().fit(dataset.numbers, dataset.positions)
        if domain is None:
            info["domain_threshold"] = clusters.domain_threshold()
    if domain is not None:
        domain.save(directory / "domain.npz")
        info["domain_threshold"] = domain.threshold_
        info["domain"] = domain.summary()
    if cluster_errors is not None:
        errors = {
            "force_rmse": np.nan_to_num(cluster_errors.force_rmse, nan=-1).tolist(),
            "n_frames": cluster_errors.n_frames.tolist(),
            "overall_force_rmse": cluster_errors.overall["force_rmse"],
            "units": "eV/Å; -1 marks a cluster without frames",
        }
        write_json(directory / "cluster_errors.json", errors)
    write_json(directory / "model.json", info)  # last: it declares the model


MODEL_FILES = (
    "model.json",
    "model",
    "train_indices.npy",
    "validation_indices.npy",
    "frame_hashes.npz",
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
    check_searchable(path)
    if not path.exists():
        raise InputError(f"{path}: no such model directory")
    meta_file = path / "model.json"
    if not path.is_dir() or not meta_file.exists():
        raise InputError(
            f"{path}: not an ase-flatten model directory (no model.json); train one "
            "with `ase-flatten train`"
        )
    meta = _read_meta(meta_file)
    name, params, numbers = meta["backend"], meta["params"], meta["numbers"]
    model_dir = path / "model"
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: missing (the {name} model's own files)")
    options = {}
    if name == "ase":
        options["factory"] = factory
    elif factory is not None:
        raise InputError(f"{path}: a {name} model; factory= is for ase-backend models")
    try:
        backend = backend_class(name).load(
            model_dir, numbers, params, meta.get("random_state", 0), **options
        )
    except InputError:
        raise
    except (*FILE_READ_ERRORS, RuntimeError) as exc:  # the library's own failure
        raise InputError(
            f"{model_dir}: cannot load the {name} model ({type(exc).__name__}: {exc})"
        ) from exc
    _check_numbers(meta_file, numbers, backend.saved_numbers(), f"the {name} model")
    saved = SavedModel(
        backend=backend,
        meta=meta,
        train_indices=load_indices(path / "train_indices.npy", "the training frames"),
        path=path,
        domain_threshold=meta.get("domain_threshold"),
    )
    if (path / "validation_indices.npy").exists():
        saved.validation_indices = load_indices(
            path / "validation_indices.npy", "the validation frames"
        )
    if (path / "frame_hashes.npz").exists():
        saved.seen_hashes = _read_hashes(path / "frame_hashes.npz")
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
        _check_numbers(meta_file, numbers, saved.domain.numbers_, "domain.npz")
    saved.distance_range = _distance_range(meta_file, meta, saved.domain)
    if (path / "cluster_errors.json").exists():
        rmse, overall = _read_cluster_errors(path / "cluster_errors.json")
        if saved.clusters is not None and len(rmse) > saved.clusters.n_clusters_:
            raise InputError(
                f"{path / 'cluster_errors.json'}: {len(rmse)} clusters, but "
                f"clusters.npz has only {saved.clusters.n_clusters_}"
            )
        saved.cluster_force_rmse = rmse
        saved.overall_force_rmse = overall
    return saved


def _check_numbers(meta_file: Path, numbers, own, what: str) -> None:
    """``model.json``'s atomic numbers must be those ``what`` saved itself."""
    if own is None or np.array_equal(np.asarray(own, dtype=int), numbers):
        return
    from ase import Atoms

    raise InputError(
        f"{meta_file}: numbers describe {Atoms(numbers=numbers).get_chemical_formula()}"
        f", but {what} was trained on "
        f"{Atoms(numbers=np.asarray(own, dtype=int)).get_chemical_formula()} "
        f"({np.asarray(own).tolist()}); the file was edited or mixed with another "
        "model's"
    )


def _distance_range(meta_file: Path, meta: dict, domain):
    """The training data's :class:`~ase_flatten.geometry.DistanceRange`, or None."""
    from .geometry import DistanceRange

    if "distance_range" in meta:
        try:
            return DistanceRange.from_meta(meta["distance_range"])
        except ValueError as exc:
            raise InputError(f"{meta_file}: damaged ({exc})") from exc
    if domain is not None:  # models saved before model.json recorded it
        return DistanceRange.from_descriptors(domain.reference_descriptors_)
    return None


def recorded_dataset(model: SavedModel, data: str | None = None) -> str:
    """The dataset a model was trained on, as a path to read from here.

    ``data`` (the user's ``--data``) wins; else the absolute path recorded in
    ``model.json``, else the path as it was given (models saved before the
    absolute path was recorded).

    Raises
    ------
    InputError
        When the model records no dataset, or none of its paths exists.
    """
    if data is not None:
        return str(data)
    from .data import split_selection

    meta_file = Path(model.path or ".") / "model.json"
    given, absolute = model.meta.get("dataset"), model.meta.get("dataset_path")
    candidates = [p for p in (absolute, given) if isinstance(p, str) and p]
    if not candidates:
        raise InputError(f"{meta_file}: records no dataset; pass --data FILE")
    for candidate in candidates:
        if split_selection(candidate)[0].exists():
            return candidate
    raise InputError(
        f"{meta_file}: its dataset {' or '.join(candidates)} is not there (moved?); "
        "pass --data FILE"
    )


def recorded_label_keys(meta: dict) -> tuple[str | None, str | None]:
    """The ``info`` / ``arrays`` keys a model's dataset was read with (model.json)."""
    keys = tuple(meta.get(name) for name in ("energy_key", "forces_key"))
    return tuple(key if isinstance(key, str) and key else None for key in keys)


def model_content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a model directory's files (names and bytes, sorted by name).

    Covers every file of :data:`MODEL_FILES` (the backend's folder file by file):
    equal hashes mean the same model, wherever the folder lies.
    """
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    files = []
    for name in MODEL_FILES:
        entry = path / name
        if entry.is_dir():
            files += sorted(p for p in entry.rglob("*") if p.is_file())
        elif entry.is_file():
            files.append(entry)
    for file in files:
        name = file.relative_to(path).as_posix()
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_meta(meta_file: Path) -> dict:
    """``model.json``, checked: a dict of the right format, version and types."""
    try:
        meta = json.loads(meta_file.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        version = meta.get("format_version", 0)
        if not isinstance(version, int):
            raise ValueError(f"format_version {version!r}")
        if version > FORMAT_VERSION:
            raise InputError(
                f"{meta_file}: written by a newer ase-flatten "
                f"({meta.get('ase_flatten_version')}); upgrade to read it"
            )
        for key, kind in (("backend", str), ("params", dict), ("numbers", list)):
            if not isinstance(meta[key], kind):
                raise ValueError(f"{key} is not a {kind.__name__}")
        if not all(isinstance(z, int) and 0 < z < 119 for z in meta["numbers"]):
            raise ValueError("numbers are not atomic numbers")
        if not isinstance(meta.get("random_state", 0), int):
            raise ValueError("random_state is not an integer")
        if "hydrogen_partners" in meta:
            from .atom_order import check_reference

            problem = check_reference(meta["numbers"], meta["hydrogen_partners"])
            if problem:
                raise ValueError(f"hydrogen_partners {problem}")
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(
            f"{meta_file}: not an ase-flatten model file ({what})"
        ) from exc
    return meta


def load_indices(path: str | os.PathLike, what: str = "frame indices") -> np.ndarray:
    """A saved list of frame indices (``train_indices.npy``, ``test_indices.npy``).

    Raises
    ------
    InputError
        Missing, truncated or not a 1-d array of non-negative integers, naming
        the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: missing ({what})")
    try:
        indices = np.load(path, allow_pickle=False)
    except FILE_READ_ERRORS as exc:  # truncated or not .npy
        raise InputError(
            f"{path}: damaged, cannot read the {what} ({type(exc).__name__}: {exc})"
        ) from exc
    if (
        not isinstance(indices, np.ndarray)
        or indices.ndim != 1
        or not np.issubdtype(indices.dtype, np.integer)
        or (indices.size and indices.min() < 0)
    ):
        raise InputError(f"{path}: not a list of frame indices (the {what})")
    return indices


def _read_hashes(path: Path) -> np.ndarray:
    """The content hashes (M, 2) of ``frame_hashes.npz``, checked."""
    from .data import HASH_GRID

    try:
        with np.load(path, allow_pickle=False) as npz:
            hashes, grid = npz["seen"], float(npz["grid"])
    except FILE_READ_ERRORS as exc:  # truncated, not an npz, a key missing
        raise InputError(
            f"{path}: damaged, cannot read the training frames' hashes "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if hashes.ndim != 2 or hashes.shape[1] != 2 or hashes.dtype != np.uint64:
        raise InputError(f"{path}: not a table of frame hashes (shape {hashes.shape})")
    if grid != HASH_GRID:
        raise InputError(
            f"{path}: hashes on a {grid} Å grid; this ase-flatten uses {HASH_GRID} Å"
        )
    return hashes


def _read_cluster_errors(path: Path) -> tuple[np.ndarray, float | None]:
    """Per-cluster force RMSE (eV/Å, NaN for clusters without frames), overall.

    The overall force RMSE (eV/Å) is None in files that do not record it.
    """
    try:
        errors = json.loads(path.read_text())
        rmse = np.asarray(errors["force_rmse"], dtype=float)
        if rmse.ndim != 1:
            raise ValueError("force_rmse is not a list of numbers")
        overall = errors.get("overall_force_rmse")
        overall = None if overall is None else float(overall)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(
            f"{path}: damaged, cannot read the per-cluster errors ({what})"
        ) from exc
    return np.where(rmse < 0, np.nan, rmse), overall
