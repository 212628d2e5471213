"""The protocol every model backend implements.

A backend trains on a :class:`~ase_flatten.data.Dataset` and an explicit list of
training frames (the caller chooses them; a backend never resamples), predicts
energies (eV) and forces (eV/Å) for many frames in batches, and saves itself to /
loads itself from a directory. The selection loop, the CLI and
:class:`~ase_flatten.calculator.FlattenedCalculator` only know this protocol; each
library's quirks stay inside its backend module.

A subclass sets ``name``, ``extra``, ``defaults`` and ``parameter_constraints``
(the allowed values of each hyperparameter, see :mod:`.parameters`, checked here
once) and implements ``_fit``, ``_predict``, ``_save`` and ``_load``. A backend
that can continue training from a previous model's weights (a warm start, see
:meth:`Backend.fit`) sets ``supports_warm_start``, names the hyperparameters
that fix the network's shape in ``architecture_params`` and implements
``_fit_warm``.
"""

from __future__ import annotations

import importlib
import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..data import Dataset
from ..exceptions import InputError
from .parameters import check_parameters

logger = logging.getLogger(__name__)


class Backend(ABC):
    """A trainable machine-learning force field.

    Parameters
    ----------
    random_state : int
        Seed for every random choice the backend makes (validation frames, weight
        initialisation, shuffling).
    **params
        Backend hyperparameters; see the subclass's ``defaults``. Unknown names
        and values outside ``parameter_constraints`` raise InputError.

    Attributes
    ----------
    params : dict
        Hyperparameters, ``defaults`` updated with the given ones.
    numbers_ : ndarray or None
        Atomic numbers of the molecule the model was trained on.
    validation_indices_ : ndarray of int
        After :meth:`fit`: the validation frames it used (dataset indices).
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""  #: pip extra that installs the backend's library
    defaults: ClassVar[dict] = {}
    #: name -> allowed kinds of value (see .parameters); one entry per default
    parameter_constraints: ClassVar[dict] = {}
    batch_size: ClassVar[int] = 256  #: frames per predict call
    #: whether :meth:`fit` can continue from a previous model (``init_from``)
    supports_warm_start: ClassVar[bool] = False
    #: hyperparameters a model to continue from must share (the network's shape)
    architecture_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, random_state: int = 0, **params):
        self.params = {**self.defaults, **params}
        check_parameters(self.name, self.params, self.parameter_constraints)
        self.random_state = random_state
        self.numbers_: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    # -- training ---------------------------------------------------------------
    def fit(
        self,
        dataset: Dataset,
        train_idx,
        val_idx=None,
        held_out=None,
        init_from: Backend | None = None,
    ) -> Backend:
        """Train on ``dataset`` frames ``train_idx``.

        Parameters
        ----------
        dataset : Dataset
        train_idx : sequence of int
            The training frames, used as given.
        val_idx : sequence of int, optional
            Validation frames (hyperparameters, early stopping); must not overlap
            ``train_idx`` or ``held_out``. By default the backend draws them,
            seeded, from the frames outside ``train_idx`` and ``held_out``.
        held_out : sequence of int, optional
            Frames the fit must never see, not even for validation: the test
            split on which the model is judged.
        init_from : Backend, optional
            A trained backend of the same kind and architecture to continue
            from (a warm start): training starts from its weights and follows
            the backend's short warm schedule (``warm_lr``, ``warm_epochs``,
            ``warm_patience``) instead of starting from random weights. Only
            for backends with ``supports_warm_start``. With the hyperparameter
            ``warm_start`` true (scikit-learn's convention), a backend that is
            already trained continues from its own weights when no
            ``init_from`` is given.

        Notes
        -----
        The validation frames used end up in ``validation_indices_`` (empty when
        the backend used none).
        """
        train_idx = check_indices(train_idx, len(dataset), "training")
        self._held_out = np.empty(0, dtype=int)
        if held_out is not None and len(held_out):
            self._held_out = check_indices(held_out, len(dataset), "held-out")
            if np.intersect1d(train_idx, self._held_out).size:
                raise InputError("training frames overlap the held-out test frames")
        if val_idx is not None:
            val_idx = check_indices(val_idx, len(dataset), "validation")
            if np.intersect1d(train_idx, val_idx).size:
                raise InputError("validation frames overlap the training frames")
            if np.intersect1d(self._held_out, val_idx).size:
                raise InputError("validation frames overlap the held-out test frames")
        if init_from is None and self.params.get("warm_start"):
            init_from = self if self.numbers_ is not None else None
        if init_from is not None:
            self.check_warm_start(init_from, dataset)
        self.numbers_ = dataset.numbers.copy()
        self.validation_indices_ = np.empty(0, dtype=int)
        if init_from is None:
            self._fit(dataset, train_idx, val_idx)
        else:
            self._fit_warm(dataset, train_idx, val_idx, init_from)
        return self

    def check_warm_start(self, init_from: Backend, dataset: Dataset) -> None:
        """Raise InputError unless this backend can continue from ``init_from``.

        It must support warm starts; ``init_from`` must be a trained backend of
        the same kind, on the molecule of ``dataset``, with the same
        ``architecture_params``.
        """
        if not self.supports_warm_start:
            raise InputError(
                f"the {self.name} backend cannot continue from a previous model "
                "(no warm start); it trains from scratch"
            )
        if not isinstance(init_from, type(self)) or init_from.name != self.name:
            raise InputError(
                f"{self.name}: a warm start needs a trained {self.name} model to "
                f"continue from, got {type(init_from).__name__}"
            )
        init_from._check_fitted()
        if not np.array_equal(init_from.numbers_, dataset.numbers):
            raise InputError(
                f"{dataset.source}: holds {dataset.formula}, the {self.name} model "
                "to continue from was trained on another molecule or atom order"
            )
        differ = [
            key
            for key in self.architecture_params
            if _plain(self.params[key]) != _plain(init_from.params[key])
        ]
        if differ:
            raise InputError(
                f"{self.name}: cannot continue from a model with other "
                + ", ".join(
                    f"{key} ({init_from.params[key]!r}, not {self.params[key]!r})"
                    for key in differ
                )
            )

    def _fit_warm(self, dataset: Dataset, train_idx, val_idx, init_from) -> None:
        """Train starting from ``init_from``'s weights (``supports_warm_start``)."""
        raise NotImplementedError(f"the {self.name} backend has no warm start")

    @abstractmethod
    def _fit(self, dataset: Dataset, train_idx: np.ndarray, val_idx) -> None:
        """Train; ``val_idx`` may be None."""

    # -- prediction -------------------------------------------------------------
    def predict(
        self,
        dataset: Dataset,
        idx=None,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Energies (M,) in eV and forces (M, N, 3) in eV/Å of frames ``idx``.

        Frames go to the model ``batch_size`` at a time; a tqdm bar shows progress
        on a terminal (``progress=None``), always (True) or never (False).
        """
        from tqdm.auto import tqdm

        self._check_fitted()
        if not np.array_equal(dataset.numbers, self.numbers_):
            raise InputError(
                f"{dataset.source}: holds {dataset.formula}, the {self.name} model "
                "was trained on another molecule or atom order"
            )
        idx = np.arange(len(dataset)) if idx is None else np.asarray(idx, dtype=int)
        batch_size = batch_size or self.batch_size
        energies = np.empty(len(idx))
        forces = np.empty((len(idx), len(self.numbers_), 3))
        starts = range(0, len(idx), batch_size)
        disable = None if progress is None else not progress
        bar = tqdm(total=len(idx), desc=f"{self.name} predict", disable=disable)
        with bar:
            for start in starts:
                block = idx[start : start + batch_size]
                e, f = self._predict(dataset.positions[block])
                energies[start : start + len(block)] = e
                forces[start : start + len(block)] = f
                bar.update(len(block))
        return energies, forces

    def predict_positions(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies (M,) and forces (M, N, 3) for positions (M, N, 3) in Å."""
        self._check_fitted()
        return self._predict(np.asarray(positions, dtype=float))

    @abstractmethod
    def _predict(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies (M,) and forces (M, N, 3) of frames of ``numbers_``."""

    def _check_fitted(self) -> None:
        if self.numbers_ is None:
            raise InputError(f"the {self.name} model is not trained")

    # -- persistence ------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the model files into ``directory`` (created if needed)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save(directory)

    @classmethod
    def load(
        cls, directory: str | Path, numbers, params: dict, random_state: int = 0
    ) -> Backend:
        """Rebuild a trained backend from :meth:`save`'s files."""
        backend = cls(random_state=random_state, **params)
        backend.numbers_ = np.asarray(numbers, dtype=int)
        backend._load(Path(directory))
        return backend

    def saved_numbers(self) -> np.ndarray | None:
        """Atomic numbers (N,) that the loaded model files record themselves.

        ``load_model`` checks them against ``model.json``'s. None (the default)
        when the library's files do not record the molecule's atom order.
        """
        return None

    @abstractmethod
    def _save(self, directory: Path) -> None: ...

    @abstractmethod
    def _load(self, directory: Path) -> None: ...

    # -- helpers for subclasses -------------------------------------------------
    def validation_frames(
        self, n_frames: int, train_idx: np.ndarray, size: int
    ) -> np.ndarray:
        """Seeded random frames outside ``train_idx`` and the held-out frames.

        At most ``size``; never a frame of the ``held_out`` given to :meth:`fit`.
        """
        outside = np.union1d(train_idx, getattr(self, "_held_out", []))
        pool = np.setdiff1d(np.arange(n_frames), outside)
        rng = np.random.default_rng(self.random_state)
        return np.sort(rng.choice(pool, min(size, len(pool)), replace=False))

    def early_stopping_frames(self, n_frames: int, train_idx, val_idx) -> np.ndarray:
        """The validation frames of an early-stopping fit (SchNet, MACE).

        ``val_idx`` as given; else ``params["n_valid"]`` frames, or 10 % of the
        training set's size (at least 10), from :meth:`validation_frames`.
        Recorded in ``validation_indices_``; a warning when there are none.
        """
        if val_idx is None:
            size = self.params["n_valid"] or max(10, math.ceil(0.1 * len(train_idx)))
            val_idx = self.validation_frames(n_frames, train_idx, size)
        val_idx = np.asarray(val_idx, dtype=int)
        self.validation_indices_ = val_idx
        if len(val_idx) == 0:
            logger.warning(
                "%s: no frames left for validation; training for max_epochs "
                "without early stopping",
                self.name,
            )
        return val_idx

    def torch_device(self):
        """The ``torch.device`` of ``params["device"]`` (torch backends).

        "auto" is CUDA when available, else the CPU; asking for CUDA on a machine
        without it is an InputError.
        """
        torch = self.require("torch")
        device = self.params["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(
                f"{self.name} device {device!r} requested, but no CUDA GPU"
            )
        return torch.device(device)

    def validation_errors(self, dataset: Dataset, val_idx: np.ndarray) -> dict:
        """Energy and force RMSE (eV, eV/Å) of the trained model on ``val_idx``.

        Returns
        -------
        dict
            ``val_energy_rmse`` and ``val_force_rmse``; NaN without validation
            frames.
        """
        if not len(val_idx):
            return {"val_energy_rmse": np.nan, "val_force_rmse": np.nan}
        energies, forces = self._predict(dataset.positions[val_idx])
        return {
            "val_energy_rmse": float(
                np.sqrt(np.mean((energies - dataset.energies[val_idx]) ** 2))
            ),
            "val_force_rmse": float(
                np.sqrt(np.mean((forces - dataset.forces[val_idx]) ** 2))
            ),
        }

    @classmethod
    def require(cls, module: str):
        """Import ``module`` or fail with the extra to install."""
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise InputError(
                f"the {cls.name} backend needs {module.split('.')[0]} ({exc}): "
                f"pip install 'ase-flatten[{cls.extra}]'"
            ) from exc


def _plain(value):
    """``value`` with tuples as lists, for comparing hyperparameters."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def check_indices(idx, n_frames: int, what: str) -> np.ndarray:
    """Validate frame indices: integers, in range, unique, at least one."""
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0:
        raise InputError(f"need a non-empty list of {what} frames")
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"{what} frame indices must be integers")
    if idx.min() < 0 or idx.max() >= n_frames:
        raise InputError(
            f"{what} frame index {int(idx.max())} is out of range for {n_frames} frames"
        )
    if len(np.unique(idx)) != len(idx):
        raise InputError(f"{what} frame indices contain duplicates")
    return idx.astype(int)
