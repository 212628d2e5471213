"""The saved model directory: the unit users pass around.

::

    DIR/model.json         backend, hyperparameters, molecule, provenance (the
                           dataset as given and as an absolute path, the label
                           keys it was read with), the data's hydrogen
                           partners (atom-order check)
    DIR/train_indices.npy  the training frames (indices into the dataset)
    DIR/validation_indices.npy  the frames the backend validated on (may be empty)
    DIR/test_indices.npy   optional: the test split its errors were measured on
    DIR/frame_hashes.npz   content hashes of the training and validation frames
                           (``data.frame_hashes``): which frames of any file the
                           model has seen
    DIR/model/             the backend's files (sGDML npz, SchNet weights, GAP xml)
    DIR/clusters.npz       optional: the cluster model of the dataset
    DIR/cluster_errors.json  optional: the model's measured force RMSE per cluster
    DIR/domain.npz         optional: the data's applicability domain (domain.py;
                           the distance or, ``--domain quests``, the QUESTS one)

``FlattenedCalculator(DIR)``, ``ase-flatten errors --model DIR`` and md_validation
all read it through :meth:`SavedModel.load` (:func:`load_model`), and
:meth:`SavedModel.save` (:func:`save_model`) writes it. A directory is written next
to its final place and renamed into it, so a crash never leaves half a model behind.

The cluster model, its errors and the domain make the model's error map:
:meth:`SavedModel.locate` says, for any structures, which cluster each falls in,
the force error measured there, its distance to the data and whether it lies
outside the data or in a high-error cluster. The calculator (``domain=True``),
``ase-flatten predict``, md_validation's metrics, risky-frame export and
exploration all read the map through it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from . import __version__
from .backends import Backend, backend_class
from .data import check_searchable
from .exceptions import FILE_READ_ERRORS, InputError
from .files import RunFolder, atomic_path, write_json

logger = logging.getLogger(__name__)

FORMAT = "ase-flatten-model"
FORMAT_VERSION = 2  # 2: sGDML and SchNet files load without pickle


#: Frames per block of :meth:`SavedModel.locate`, which bounds its memory (the
#: domain look-up holds a block's descriptors under every hydrogen permutation).
LOCATE_CHUNK = 1000
#: The default ``high_error_factor`` of :meth:`SavedModel.locate`. A cluster is
#: high-error when its force RMSE exceeds this times the model's overall force RMSE.
HIGH_ERROR_FACTOR = 1.1


@dataclass
class Location:
    """Where structures fall in a saved model's error map.

    What :meth:`SavedModel.locate` returns: one entry per structure.

    Attributes
    ----------
    cluster : ndarray of int, shape (M,)
        The cluster each structure falls in (the model's cluster model).
    cluster_force_rmse : ndarray of float, shape (M,)
        The model's force RMSE measured on that cluster (eV/Å): the expected
        force error there; NaN where none was measured.
    domain_distance : ndarray of float, shape (M,)
        The domain's score: the descriptor distance (Å) to the nearest frame
        of the model's data (the minimum over permutations of equivalent
        hydrogens), or for a model saved with ``--domain quests`` the QUESTS
        dH (nats) of its most novel atomic environment (see
        :mod:`ase_flatten.domain`).
    outside_domain : ndarray of bool, shape (M,)
        ``domain_distance`` beyond the model's threshold: no error was measured
        near the structure.
    high_error : ndarray of bool, shape (M,)
        In a cluster whose force RMSE exceeds ``high_error_factor`` times the
        model's overall force RMSE.
    """

    #: What :meth:`row` reports for one structure (the calculator's extras and
    #: ``ase-flatten predict``'s ``info`` keys).
    REPORTED = ("cluster", "cluster_force_rmse", "domain_distance", "outside_domain")

    cluster: np.ndarray
    cluster_force_rmse: np.ndarray
    domain_distance: np.ndarray
    outside_domain: np.ndarray
    high_error: np.ndarray

    def __len__(self) -> int:
        return len(self.cluster)

    @property
    def risky(self) -> np.ndarray:
        """Outside the domain or in a high-error cluster (bool, shape (M,))."""
        return self.outside_domain | self.high_error

    def row(self, i: int) -> dict:
        """The :attr:`REPORTED` values of structure ``i`` as Python scalars."""
        return {key: getattr(self, key)[i].item() for key in self.REPORTED}

    @classmethod
    def concatenate(cls, parts: list[Location]) -> Location:
        """One location of the structures of ``parts``, in order."""
        names = [f.name for f in fields(cls)]
        return cls(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


@dataclass
class SavedModel:
    """A trained backend with its provenance, as loaded from a model directory.

    :meth:`load` reads a model directory, :meth:`save` writes one, and
    :meth:`locate` places structures in the model's error map.
    """

    backend: Backend
    meta: dict
    train_indices: np.ndarray
    path: Path | None = None
    validation_indices: np.ndarray | None = None  #: None when not recorded
    clusters: object | None = None  #: TwoStageClustering, when saved with one
    cluster_force_rmse: np.ndarray | None = None  #: eV/Å per cluster id
    overall_force_rmse: float | None = None  #: eV/Å, measured with the clusters
    #: the domain's threshold: descriptor distance (Å) or QUESTS dH (nats)
    domain_threshold: float | None = None
    #: ApplicabilityDomain or QuestsDomain (``domain.kind``), when saved with one
    domain: object | None = None
    #: content hashes (M, 2) of the training and validation frames; None for models
    #: saved before they were recorded
    seen_hashes: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    #: DistanceRange of the training data, when known (geometry.py)
    distance_range: object | None = None
    #: the test split (frame indices into the dataset) the cluster errors were
    #: measured on; None when the model records none
    test_indices: np.ndarray | None = None

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

    # -- the error map ---------------------------------------------------------
    def locate(
        self,
        positions,
        energies=None,
        high_error_factor: float = HIGH_ERROR_FACTOR,
    ) -> Location:
        """Where structures fall in the model's error map, and how wrong it is there.

        The cluster of each structure (geometry, then the energy level nearest
        its energy), the force error the model was measured to make on that
        cluster, its distance to the data and two flags. Structures go through
        in blocks of :data:`LOCATE_CHUNK`; a block of a few structures (the
        calculator's one) runs BLAS on one thread (:func:`~ase_flatten.domain.
        one_blas_thread`).

        Parameters
        ----------
        positions : array-like, shape (M, N, 3) or (N, 3)
            Structures (Å), atoms in the order of the model's data.
        energies : array-like, shape (M,), optional
            Their potential energies (eV), as the model predicts them: the
            energy levels of the clusters are levels of the model's energy. None:
            the model predicts them here.
        high_error_factor : float
            A cluster is high-error when its force RMSE exceeds this times the
            model's overall force RMSE (the one recorded with its cluster errors;
            for models saved without it, the root mean square of the clusters').

        Returns
        -------
        Location
            Per structure: ``cluster``, ``cluster_force_rmse`` (eV/Å),
            ``domain_distance`` (Å; nats for a QUESTS domain),
            ``outside_domain`` and ``high_error``.
            Models saved before ``domain.npz`` existed measure the distance to
            the nearest frame of the clustering's Ward subset against the
            threshold in ``model.json`` (none: nothing is outside); models
            without cluster errors flag no cluster as high-error.

        Raises
        ------
        InputError
            The model was saved without its cluster model, or the structures
            are not of its molecule's size.
        """
        where = self.path or f"the {self.backend.name} model"
        if self.clusters is None:
            raise InputError(
                f"{where}: saved without its data's cluster model; it has no error "
                "map to locate structures in"
            )
        positions = np.asarray(positions, dtype=float)
        if positions.ndim == 2:
            positions = positions[None]
        n_atoms = len(self.backend.numbers_)
        if positions.ndim != 3 or positions.shape[1:] != (n_atoms, 3):
            raise InputError(
                f"{where}: structures of shape (M, {n_atoms}, 3) expected, got "
                f"{positions.shape}"
            )
        if energies is not None:
            energies = np.asarray(energies, dtype=float).reshape(-1)
            if len(energies) != len(positions):
                raise InputError(
                    f"{len(positions)} structures but {len(energies)} energies"
                )
        level = high_error_factor * self._overall_error()
        parts = [
            self._locate_block(
                positions[start : start + LOCATE_CHUNK],
                None if energies is None else energies[start : start + LOCATE_CHUNK],
                level,
            )
            for start in range(0, len(positions), LOCATE_CHUNK)
        ]
        if not parts:  # no structures
            empty = np.zeros(0)
            return Location(empty.astype(int), empty, empty, *[empty.astype(bool)] * 2)
        return parts[0] if len(parts) == 1 else Location.concatenate(parts)

    def _locate_block(self, positions, energies, level: float) -> Location:
        """:meth:`locate` for one block; ``level``: the high-error RMSE (eV/Å)."""
        from .clustering import cluster_features
        from .domain import FEW_STRUCTURES, one_blas_thread

        if energies is None:
            energies = self._predict_energies(positions)
        X = cluster_features(self.clusters.describe(positions), energies)
        with one_blas_thread(len(X) <= FEW_STRUCTURES):
            labels, distance = self.clusters.predict(X, return_distance=True)
            threshold = self.domain_threshold
            if self.domain is not None:
                distance, threshold = (
                    self.domain.distance(positions),
                    self.domain.threshold_,
                )
        rmse = np.full(len(labels), np.nan)
        if self.cluster_force_rmse is not None:
            known = labels < len(self.cluster_force_rmse)
            rmse[known] = self.cluster_force_rmse[labels[known]]
        distance = np.asarray(distance, dtype=float)
        outside = (
            np.zeros(len(labels), bool) if threshold is None else distance > threshold
        )
        return Location(
            cluster=labels,
            cluster_force_rmse=rmse,
            domain_distance=distance,
            outside_domain=outside,
            high_error=rmse > level,  # NaN (unmeasured, no errors) is never high
        )

    def _overall_error(self) -> float:
        """The overall test force RMSE (eV/Å) that "high error" is relative to.

        Recorded with the cluster errors; for models saved without it, the root
        mean square of the clusters'; NaN without cluster errors.
        """
        if self.overall_force_rmse is not None:
            return float(self.overall_force_rmse)
        rmse = self.cluster_force_rmse
        if rmse is None or not np.isfinite(rmse).any():
            return math.nan
        return float(np.sqrt(np.nanmean(rmse**2)))

    def _predict_energies(self, positions: np.ndarray) -> np.ndarray:
        """The model's energies (eV) of ``positions``, a batch at a time."""
        size = self.backend.batch_size
        return np.concatenate(
            [
                self.backend.predict_positions(positions[start : start + size])[0]
                for start in range(0, len(positions), size)
            ]
            or [np.zeros(0)]
        )

    # -- the directory ---------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, factory: str | None = None) -> SavedModel:
        """Load a model directory written by :meth:`save`.

        No code from the directory runs: model files are read without pickle, and
        an ``ase``-backend model's calculator factory is imported only when the
        caller names it.

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
            Missing directory, no or foreign ``model.json``, unknown backend,
            backend files that cannot be loaded or would need pickle, an ``ase``
            model without its ``factory``, missing optional dependency, a damaged
            optional file.
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
                f"{path}: not an ase-flatten model directory (no model.json); train "
                "one with `ase-flatten train`"
            )
        meta = _read_meta(meta_file)
        saved = cls(
            backend=_load_backend(path, meta, factory),
            meta=meta,
            train_indices=load_indices(
                path / "train_indices.npy", "the training frames"
            ),
            path=path,
            domain_threshold=meta.get("domain_threshold"),
        )
        saved._read_optional_files()
        return saved

    def _read_optional_files(self) -> None:
        """The files a model directory may hold beside the model itself."""
        path, meta_file = self.path, self.path / "model.json"
        numbers = self.meta["numbers"]
        if (path / "validation_indices.npy").exists():
            self.validation_indices = load_indices(
                path / "validation_indices.npy", "the validation frames"
            )
        if (path / "test_indices.npy").exists():
            self.test_indices = load_indices(
                path / "test_indices.npy", "the test split"
            )
        if (path / "frame_hashes.npz").exists():
            self.seen_hashes = _read_hashes(path / "frame_hashes.npz")
        if (path / "clusters.npz").exists():
            from .clustering import load_clusters

            self.clusters = load_clusters(path / "clusters.npz")[0]
            if not (path / "domain.npz").exists():
                logger.warning(
                    "%s: saved without a calibrated domain (domain.npz); its "
                    "threshold comes from time-correlated neighbours and flags too "
                    "many MD frames: save the model again (ase-flatten train/select) "
                    "to calibrate one",
                    path,
                )
        if (path / "domain.npz").exists():
            from .domain import load_domain

            self.domain = load_domain(path / "domain.npz")
            self.domain_threshold = self.domain.threshold_
            _check_numbers(meta_file, numbers, self.domain.numbers_, "domain.npz")
        self.distance_range = _distance_range(meta_file, self.meta, self.domain)
        if (path / "cluster_errors.json").exists():
            rmse, overall = _read_cluster_errors(path / "cluster_errors.json")
            if self.clusters is not None and len(rmse) > self.clusters.n_clusters_:
                raise InputError(
                    f"{path / 'cluster_errors.json'}: {len(rmse)} clusters, but "
                    f"clusters.npz has only {self.clusters.n_clusters_}"
                )
            self.cluster_force_rmse = rmse
            self.overall_force_rmse = overall

    @classmethod
    def save(
        cls,
        directory: str | os.PathLike,
        backend: Backend,
        train_indices,
        dataset=None,
        *,
        clusters=None,
        cluster_errors=None,
        domain=None,
        test_indices=None,
        overwrite: bool = False,
        keep_data_files: bool = False,
        **meta,
    ) -> Path:
        """Write a trained backend and its provenance to ``directory``.

        The files are written beside ``directory`` first and moved in at the end
        (:func:`write_model_files` writes them into a folder of your own);
        :meth:`load` reads them back.

        Parameters
        ----------
        directory : path
            Model directory to create. An existing non-empty one is replaced only
            with ``overwrite``; files in it that are not model files stay.
        backend : Backend
            Trained backend.
        train_indices : sequence of int, shape (n_train,)
            Frames it was trained on (indices into ``dataset``).
        dataset : Dataset, optional
            The dataset, recorded by path and fingerprint, with the content hashes
            of the training and validation frames (``frame_hashes.npz``).
        clusters : TwoStageClustering, optional
            Cluster model of the dataset (for per-structure cluster and domain
            reports, :meth:`locate`).
        cluster_errors : ClusterErrors, optional
            The model's errors per cluster of ``clusters`` (eV/Å).
        domain : ApplicabilityDomain, QuestsDomain or str, optional
            The data's applicability domain; with ``clusters`` and ``dataset`` and
            none given, or a kind given by name (``"distance"``, ``"quests"``,
            :data:`~ase_flatten.domain.DOMAIN_KINDS`), one is calibrated on
            ``dataset`` with the default settings (none given: ``"distance"``).
        test_indices : sequence of int, shape (n_test,), optional
            The test split ``cluster_errors`` were measured on (indices into
            ``dataset``), saved as ``test_indices.npy``.
        overwrite : bool
            Replace the model in ``directory``.
        keep_data_files : bool
            ``directory`` holds the data files of ``clusters`` and
            ``test_indices`` already (:data:`DATA_FILES`, written by
            :func:`write_data_files` when a selection run started): they are
            neither written again nor removed.
        **meta
            Further JSON-serialisable provenance (strategy, seed, timings, ...).

        Returns
        -------
        Path
            ``directory``.
        """
        directory = Path(directory)
        if (directory / "model.json").exists() and not overwrite:
            raise InputError(
                f"{directory}: holds a model already; pass --overwrite to replace it"
            )
        if directory.exists() and not directory.is_dir():
            raise InputError(f"{directory}: is a file, not a folder")
        keep = DATA_FILES if keep_data_files else ()
        missing = [name for name in keep if not (directory / name).is_file()]
        if missing:
            raise InputError(f"{directory / missing[0]}: missing (a data file kept)")
        with RunFolder.replace_files(directory, MODEL_FILES, keep) as tmp:
            write_model_files(
                tmp,
                backend,
                train_indices,
                dataset,
                clusters=clusters,
                cluster_errors=cluster_errors,
                domain=domain,
                test_indices=test_indices,
                keep_data_files=keep_data_files,
                **meta,
            )
        return directory


#: :meth:`SavedModel.load` under its older name.
load_model = SavedModel.load
#: :meth:`SavedModel.save` under its older name.
save_model = SavedModel.save


def _load_backend(path: Path, meta: dict, factory: str | None) -> Backend:
    """The trained backend of the model directory ``path`` (its ``model/``)."""
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
    _check_numbers(
        path / "model.json", numbers, backend.saved_numbers(), f"the {name} model"
    )
    return backend


def write_model_files(
    directory: str | os.PathLike,
    backend: Backend,
    train_indices,
    dataset=None,
    *,
    clusters=None,
    cluster_errors=None,
    domain=None,
    test_indices=None,
    keep_data_files: bool = False,
    **meta,
) -> None:
    """Write the files of a model directory into the existing folder ``directory``.

    Not atomic by itself: use it inside
    :func:`~ase_flatten.files.atomic_directory`, or call :meth:`SavedModel.save`.
    Parameters as for :meth:`SavedModel.save`; with ``keep_data_files`` the data
    files (:data:`DATA_FILES`) are not written.
    """
    directory = Path(directory)
    info = _model_info(backend, train_indices, dataset, meta)
    backend.save(directory / "model")
    with atomic_path(directory / "train_indices.npy") as tmp:
        np.save(tmp, np.asarray(train_indices, dtype=int))
    validation = getattr(backend, "validation_indices_", None)
    if validation is not None:
        with atomic_path(directory / "validation_indices.npy") as tmp:
            np.save(tmp, np.asarray(validation, dtype=int))
    if dataset is not None:
        _write_frame_hashes(directory, dataset, train_indices, validation)
    if not keep_data_files:
        write_data_files(directory, dataset, clusters, test_indices)
    if isinstance(domain, str) and (clusters is None or dataset is None):
        domain = None  # a kind to fit, and nothing to fit it on
    if clusters is not None:
        if (domain is None or isinstance(domain, str)) and dataset is not None:
            from .domain import make_domain

            domain = make_domain(domain or "distance")
            domain.fit(dataset.numbers, dataset.positions)
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


def write_data_files(
    directory: str | os.PathLike, dataset=None, clusters=None, test_indices=None
) -> None:
    """Write a model's data files into ``directory``: what it knows of its data.

    ``clusters.npz`` (the cluster model, with the dataset's fingerprint, atomic
    numbers and source) and ``test_indices.npy`` (the test split); each only
    when given. :func:`write_model_files` calls it; a selection run calls it
    when it starts, and its final model keeps them.

    Parameters
    ----------
    directory : path
        An existing folder.
    dataset : Dataset, optional
        The dataset ``clusters`` was fitted on (its ``labels_`` are those of
        these frames).
    clusters : TwoStageClustering, optional
    test_indices : sequence of int, shape (n_test,), optional
        Frame indices into ``dataset``.
    """
    directory = Path(directory)
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
    if test_indices is not None:
        with atomic_path(directory / "test_indices.npy") as tmp:
            np.save(tmp, np.asarray(test_indices, dtype=int))


def _model_info(backend: Backend, train_indices, dataset, meta: dict) -> dict:
    """``model.json`` before the error map's entries."""
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
        from .geometry import DistanceRange

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
        info["distance_range"] = DistanceRange.fit(dataset.positions).to_meta()
    return info


def _write_frame_hashes(directory: Path, dataset, train_indices, validation) -> None:
    """``frame_hashes.npz``: content hashes of the training and validation frames."""
    from .data import HASH_GRID
    from .files import save_npz

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


#: The files that make a model directory (:func:`model_content_hash` covers all
#: but ``test_indices.npy``).
MODEL_FILES = (
    "model.json",
    "model",
    "train_indices.npy",
    "validation_indices.npy",
    "test_indices.npy",
    "frame_hashes.npz",
    "clusters.npz",
    "cluster_errors.json",
    "domain.npz",
)
#: The model files of its data alone (:func:`write_data_files`).
DATA_FILES = ("clusters.npz", "test_indices.npy")


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
    if getattr(domain, "kind", None) == "distance":  # saved before model.json had it
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

    Covers every file of :data:`MODEL_FILES` (the backend's folder file by file)
    but the test split, which says where the model was measured, not what it
    predicts (and was not a model file before: older hashes stay valid). Equal
    hashes mean the same model, wherever the folder lies.
    """
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    files = []
    for name in MODEL_FILES:
        if name == "test_indices.npy":
            continue
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
