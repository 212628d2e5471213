"""SchNet through schnetpack 2.2, in plain Python (no hydra).

Training uses schnetpack's own pipeline: the chosen training and validation frames
go into an :class:`schnetpack.data.ASEAtomsData` database in a temporary directory,
an :class:`schnetpack.data.AtomsDataModule` reads them through a ``split.npz`` that
lists exactly those frames, and a :class:`pytorch_lightning.Trainer` fits a
:class:`schnetpack.task.AtomisticTask` around a
:class:`schnetpack.model.NeuralNetworkPotential` (SchNet representation, atomwise
energy, forces as minus its gradient). Early stopping watches the validation loss
and the weights of the best validation epoch are kept.

A warm fit (``fit(..., init_from=previous)``) starts from a previous model's
weights with a short schedule of its own (``warm_lr``, ``warm_epochs``,
``warm_patience``). The energy offset is the new training set's mean energy per
atom, as in a cold fit; the output layer's bias takes the difference from the
previous model's mean, so the warm model starts out predicting exactly what the
previous one did.

The saved model is its weights (``schnet_weights.pt``, a torch state dict read back
with ``torch.load(weights_only=True)``) and the architecture that rebuilds it
(``schnet.json``): loading runs no code from the files. :func:`spk_calculator` hands
the rebuilt model to schnetpack's ``SpkCalculator``.

schnetpack, torch and pytorch_lightning are imported only when a model is trained,
loaded or used (``import schnetpack`` alone takes several seconds).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..data import Dataset
from ..exceptions import FILE_READ_ERRORS, InputError
from ..files import write_json
from .base import Backend
from .parameters import Boolean, Integer, Options, Pattern, Real, check_parameters

logger = logging.getLogger(__name__)

__all__ = ["MODEL_FILE", "SETTINGS_FILE", "SchNetBackend", "spk_calculator"]

MODEL_FILE = "schnet_weights.pt"  #: the weights: a torch state dict, no pickle
SETTINGS_FILE = "schnet.json"  #: the architecture that rebuilds the model
LEGACY_FILE = "best_model"  #: older versions pickled the whole module (not loaded)
ARCHITECTURE = ("n_atom_basis", "n_interactions", "n_rbf")  #: plus cutoff and mean
LOSSES = ("energy", "forces", "mixed")
_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch")


class SchNetBackend(Backend):
    """SchNet neural-network potential (schnetpack 2.2).

    Parameters
    ----------
    random_state : int
        Seed of the validation frames, the weight initialisation and the shuffling.
        The same call gives the same model on a CPU.
    **params
        Hyperparameters (see ``defaults``):

        n_atom_basis : int
            Features per atom (64).
        n_interactions : int
            SchNet interaction blocks (3).
        n_rbf : int
            Gaussian radial basis functions (20).
        cutoff : float
            Cosine cutoff radius in Å (5.0).
        loss : {"energy", "forces", "mixed"}
            What the mean-squared-error loss fits: energies only (the paper's
            setting), forces only, or both weighted by ``energy_weight`` and
            ``1 - energy_weight`` ("mixed", the default).
        energy_weight : float
            Weight of the energy term of the mixed loss, between 0 and 1 (0.05).
        lr : float
            AdamW learning rate (2e-3); halved after ``patience // 2`` epochs
            without a lower validation loss, down to ``lr / 100``.
        batch_size : int
            Training frames per step (10).
        max_epochs : int
            Upper limit on training epochs (200).
        patience : int
            Stop after this many epochs without a lower validation loss (20).
        n_valid : int or None
            Validation frames drawn when the caller gives none; None means
            ``max(10, 10% of the training frames)``.
        device : str
            "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        warm_start : bool
            Fitting a trained backend again continues from its own weights
            (scikit-learn's ``warm_start``; False).
        warm_lr, warm_epochs, warm_patience : float, int, int
            Learning rate, upper limit on epochs and early-stopping patience of
            a warm fit, one that continues from a previous model
            (``fit(..., init_from=...)``): 5e-4, 10 and 5, measured in
            ``select --warm-start`` on ethanol against cold fits of 40 epochs
            at ``lr`` 2e-3 (benchmarks/bench_warm_start.py). The learning rate
            halves after ``warm_patience // 2`` epochs without a lower
            validation loss.

    Attributes
    ----------
    model_ : schnetpack.model.NeuralNetworkPotential
        The trained model (eval mode, float32, postprocessing on: eV and eV/Å).
    history_ : dict
        Facts about the last fit: ``epochs``, ``best_epoch``, ``best_val_loss``,
        ``val_losses`` (per epoch), ``val_force_rmse`` (eV/Å),
        ``val_energy_rmse`` (eV), ``n_train``, ``n_valid``, ``seconds``, and
        ``warm_start`` (None after a cold fit; else the previous model's
        training-set size and the change of the energy offset, eV per frame).

    Notes
    -----
    Training runs with the working directory switched to a temporary directory
    (schnetpack's ``AtomsDataModule`` writes ``splitting.lock`` into the current
    directory), so it is not safe alongside other threads that use relative paths.
    The torch random state is forked, so training leaves the global one unchanged.
    """

    name: ClassVar[str] = "schnet"
    extra: ClassVar[str] = "schnet"
    defaults: ClassVar[dict] = {
        "n_atom_basis": 64,
        "n_interactions": 3,
        "n_rbf": 20,
        "cutoff": 5.0,
        "loss": "mixed",
        "energy_weight": 0.05,
        "lr": 2e-3,
        "batch_size": 10,
        "max_epochs": 200,
        "patience": 20,
        "n_valid": None,
        "device": "auto",
        "warm_start": False,
        "warm_lr": 5e-4,
        "warm_epochs": 10,
        "warm_patience": 5,
    }
    parameter_constraints: ClassVar[dict] = {
        "n_atom_basis": [Integer(1)],
        "n_interactions": [Integer(1)],
        "n_rbf": [Integer(1)],
        "cutoff": [Real(0, closed="neither")],
        "loss": [Options(LOSSES)],
        "energy_weight": [Real(0, 1, closed="neither")],
        "lr": [Real(0, closed="neither")],
        "batch_size": [Integer(1)],
        "max_epochs": [Integer(1)],
        "patience": [Integer(0)],
        "n_valid": [Integer(1), None],
        "device": [Pattern(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")],
        "warm_start": [Boolean()],
        "warm_lr": [Real(0, closed="neither")],
        "warm_epochs": [Integer(1)],
        "warm_patience": [Integer(0)],
    }
    supports_warm_start: ClassVar[bool] = True
    architecture_params: ClassVar[tuple[str, ...]] = (*ARCHITECTURE, "cutoff")

    def __init__(self, random_state: int = 0, **params):
        super().__init__(random_state=random_state, **params)
        self.model_ = None
        self.history_: dict[str, Any] = {}
        self._device = None
        self._cutoff = float(self.params["cutoff"])
        self._static: dict[int, dict] = {}
        self._energy_mean = 0.0  # eV per atom, set by fit or load

    def _loss_weights(self) -> tuple[float, float]:
        loss = self.params["loss"]
        if loss == "energy":
            return 1.0, 0.0
        if loss == "forces":
            return 0.0, 1.0
        weight = float(self.params["energy_weight"])
        return weight, 1.0 - weight

    def _schedule(self, warm: bool) -> dict:
        """Learning rate, epoch limit and patience of a cold or a warm fit."""
        p = self.params
        if warm:
            return {
                "lr": p["warm_lr"],
                "max_epochs": p["warm_epochs"],
                "patience": p["warm_patience"],
            }
        return {key: p[key] for key in ("lr", "max_epochs", "patience")}

    # -- training ---------------------------------------------------------------
    def _fit_warm(self, dataset, train_idx, val_idx, init_from) -> None:
        # taken now: init_from may be this backend, whose model the fit replaces
        warm = {
            "state": {
                key: value.detach().cpu().clone()
                for key, value in init_from.model_.state_dict().items()
            },
            "energy_mean": init_from._energy_mean,
            "n_train": init_from.history_.get("n_train"),
        }
        self._fit(dataset, train_idx, val_idx, warm=warm)

    def _fit(self, dataset: Dataset, train_idx: np.ndarray, val_idx, warm=None) -> None:
        spk = self.require("schnetpack")
        torch = self.require("torch")
        pl = self.require("pytorch_lightning")

        schedule = self._schedule(warm is not None)
        val_idx = self.early_stopping_frames(len(dataset), train_idx, val_idx)
        device = self.torch_device()
        self._device = device
        self._cutoff = float(self.params["cutoff"])
        self._static = {}
        start = time.perf_counter()

        quiet = not logger.isEnabledFor(logging.DEBUG)
        with contextlib.ExitStack() as stack:
            tmp = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="ase_flatten_schnet_")
                )
            )
            # AtomsDataModule writes "splitting.lock" into the working directory
            stack.enter_context(contextlib.chdir(tmp))
            forked = [device.index or 0] if device.type == "cuda" else []
            stack.enter_context(torch.random.fork_rng(devices=forked))
            stack.enter_context(warnings.catch_warnings())
            # ASENeighborList builds ase.Atoms from torch tensors: numpy 2 warns
            # once per frame under pytest's "always" filters
            warnings.filterwarnings(
                "ignore", message=r"__array__ implementation doesn't accept a copy"
            )
            if quiet:
                _silence(stack)
            torch.manual_seed(self.random_state)

            datamodule = self._datamodule(spk, torch, tmp, dataset, train_idx, val_idx)
            task = self._task(spk, torch, len(val_idx) > 0, schedule, warm)
            tracker = _best_weights_callback(pl)()
            callbacks = [tracker]
            if len(val_idx):
                callbacks.append(
                    pl.callbacks.EarlyStopping(
                        monitor="val_loss",
                        patience=schedule["patience"],
                        mode="min",
                        verbose=False,
                    )
                )
            trainer = pl.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=[device.index or 0] if device.type == "cuda" else 1,
                max_epochs=schedule["max_epochs"],
                callbacks=callbacks,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=not quiet,
                enable_model_summary=not quiet,
                num_sanity_val_steps=0,
                limit_val_batches=1.0 if len(val_idx) else 0,
                inference_mode=False,  # forces need autograd in validation
                default_root_dir=str(tmp),
                log_every_n_steps=1,
            )
            trainer.fit(task, datamodule=datamodule)

        model = task.model
        if tracker.best_state is not None:
            model.load_state_dict(tracker.best_state)
        self.model_ = model.to(device).eval()

        history = {
            "n_train": len(train_idx),
            "n_valid": len(val_idx),
            "epochs": tracker.epochs or trainer.current_epoch,
            "best_epoch": tracker.best_epoch,
            "best_val_loss": tracker.best_loss,
            "val_losses": tracker.losses,
            **self.validation_errors(dataset, val_idx),
            "warm_start": None,
        }
        if warm is not None:
            history["warm_start"] = {
                "from_n_train": warm["n_train"],
                "energy_offset_change": (self._energy_mean - warm["energy_mean"])
                * len(dataset.numbers),
            }
        history["seconds"] = time.perf_counter() - start
        self.history_ = history
        logger.info(
            "schnet: trained on %d frames (%d validation) on %s%s: %d epochs, best "
            "validation loss %.4g at epoch %s, validation force RMSE %.4g eV/Å, "
            "%.1f s",
            history["n_train"],
            history["n_valid"],
            device,
            "" if warm is None else ", warm start",
            history["epochs"],
            history["best_val_loss"],
            history["best_epoch"],
            history["val_force_rmse"],
            history["seconds"],
        )

    def _datamodule(self, spk, torch, tmp: Path, dataset, train_idx, val_idx):
        """Database of the training + validation frames and a split naming them."""
        from ase import Atoms

        frames = np.concatenate([train_idx, val_idx]).astype(int)
        db = spk.data.ASEAtomsData.create(
            str(tmp / "frames.db"),
            distance_unit="Ang",
            property_unit_dict={"energy": "eV", "forces": "eV/Ang"},
        )
        db.add_systems(
            [
                {
                    "energy": np.array([dataset.energies[i]]),
                    "forces": dataset.forces[i],
                }
                for i in frames
            ],
            [
                Atoms(numbers=dataset.numbers, positions=dataset.positions[i])
                for i in frames
            ],
        )
        self._energy_mean = float(
            np.mean(dataset.energies[train_idx]) / len(dataset.numbers)
        )
        split = tmp / "split.npz"
        n_train = len(train_idx)
        np.savez(
            split,
            train_idx=np.arange(n_train),
            val_idx=np.arange(n_train, len(frames)),
            test_idx=np.arange(0),
        )
        return spk.data.AtomsDataModule(
            str(tmp / "frames.db"),
            batch_size=self.params["batch_size"],
            val_batch_size=max(self.params["batch_size"], 100),
            split_file=str(split),
            transforms=[
                spk.transform.ASENeighborList(cutoff=self._cutoff),
                # the mean energy per atom of the training frames, given rather
                # than left to the datamodule, whose statistics pass draws a tqdm
                # bar and costs an extra pass over the training data
                spk.transform.RemoveOffsets(
                    "energy", remove_mean=True, property_mean=self._mean_tensor(torch)
                ),
                spk.transform.CastTo32(),
            ],
            property_units={"energy": "eV", "forces": "eV/Ang"},
            distance_unit="Ang",
            load_properties=["energy", "forces"],
            num_workers=0,
            pin_memory=False,
        )

    def _mean_tensor(self, torch):
        return torch.tensor([self._energy_mean], dtype=torch.float64)

    def _architecture(self) -> dict:
        """What :func:`build_network` needs to rebuild this model (JSON)."""
        arch = {key: self.params[key] for key in ARCHITECTURE}
        arch["cutoff"] = self._cutoff
        arch["energy_mean"] = self._energy_mean
        return arch

    def _task(self, spk, torch, validate: bool, schedule: dict, warm=None):
        """SchNet model with energy and force outputs, wrapped in a training task.

        With validation frames the learning rate halves after ``patience // 2``
        epochs without a lower validation loss. A warm start (``warm``: the
        previous model's state and mean) begins from its weights, see
        :meth:`_warm_network`.
        """
        model = build_network(spk, torch, self._architecture())
        if warm is not None:
            self._warm_network(torch, model, warm)
        energy_weight, force_weight = self._loss_weights()
        outputs = [
            spk.task.ModelOutput(
                name=key,
                loss_fn=torch.nn.MSELoss(),
                loss_weight=weight,
                metrics={},
            )
            for key, weight in (("energy", energy_weight), ("forces", force_weight))
        ]
        plateau = {}
        if validate:
            plateau = {
                "scheduler_cls": torch.optim.lr_scheduler.ReduceLROnPlateau,
                "scheduler_args": {
                    "mode": "min",
                    "factor": 0.5,
                    "patience": max(1, schedule["patience"] // 2),
                    "min_lr": schedule["lr"] / 100,
                },
                "scheduler_monitor": "val_loss",
            }
        return spk.task.AtomisticTask(
            model=model,
            outputs=outputs,
            optimizer_cls=torch.optim.AdamW,
            optimizer_args={"lr": schedule["lr"]},
            **plateau,
        )

    def _warm_network(self, torch, model, warm: dict) -> None:
        """Give ``model`` the previous model's weights, offset by the new mean.

        The energy offset (``energy_mean``, eV per atom, in the model's
        postprocessing and removed from the training targets) is this training
        set's; the per-atom output bias moves by the difference from the
        previous model's, so the network's energies are unchanged.
        """
        own = model.state_dict()
        state = {
            key: own[key] if key.startswith("postprocessors.") else value
            for key, value in warm["state"].items()  # the new mean stays
        }
        model.load_state_dict(state)
        change = self._energy_mean - warm["energy_mean"]
        with torch.no_grad():
            model.output_modules[0].outnet[-1].bias -= change

    # -- prediction -------------------------------------------------------------
    def _predict(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.require("torch")
        positions = np.asarray(positions, dtype=float)
        n_frames, n_atoms = positions.shape[:2]
        inputs = self._inputs(torch, positions)
        with torch.enable_grad():
            results = self.model_(inputs)
        energies = results["energy"].detach().cpu().numpy().astype(float)
        forces = results["forces"].detach().cpu().numpy().astype(float)
        return energies.reshape(n_frames), forces.reshape(n_frames, n_atoms, 3)

    def last_layer_features(self, positions: np.ndarray) -> np.ndarray:
        """Per-structure input of the energy's last linear layer.

        The energy is a sum over atoms of the readout network's output, whose
        last layer is linear: the sum over a structure's atoms of that layer's
        input is the gradient of the energy with respect to the layer's weights
        (the ``lcmd`` strategy's features, bmdal-reg's "last layer" kernel).

        Parameters
        ----------
        positions : ndarray, shape (M, N, 3)
            Structures in Å, atoms in the model's order.

        Returns
        -------
        ndarray, shape (M, H)
            ``H``: the width of the readout's hidden layer.
        """
        self._check_fitted()
        torch = self.require("torch")
        positions = np.asarray(positions, dtype=float)
        last = self.model_.output_modules[0].outnet[-1]
        captured = []
        hook = last.register_forward_hook(
            lambda module, args, output: captured.append(args[0].detach())
        )
        out = []
        try:
            for start in range(0, len(positions), self.batch_size):
                block = positions[start : start + self.batch_size]
                captured.clear()
                with torch.enable_grad():
                    self.model_(self._inputs(torch, block))
                per_atom = captured[0].cpu().numpy().astype(float)
                out.append(per_atom.reshape(len(block), -1, per_atom.shape[-1]))
        finally:
            hook.remove()
        return np.concatenate(out).sum(axis=1)

    def _inputs(self, torch, positions: np.ndarray) -> dict:
        """schnetpack's input batch for frames of ``numbers_``, built in one go.

        Equivalent to ``AtomsConverter`` with an ``ASENeighborList`` for molecules
        without periodic boundaries: every pair closer than the cutoff, both ways.
        """
        from schnetpack import properties

        n_frames, n_atoms = positions.shape[:2]
        static = self._static.get(n_frames)
        if static is None:
            device = self._device
            static = {
                properties.Z: torch.as_tensor(
                    np.tile(self.numbers_, n_frames), dtype=torch.long, device=device
                ),
                properties.n_atoms: torch.full(
                    (n_frames,), n_atoms, dtype=torch.long, device=device
                ),
                properties.idx_m: torch.arange(
                    n_frames, device=device
                ).repeat_interleave(n_atoms),
            }
            if len(self._static) > 8:
                self._static.clear()
            self._static[n_frames] = static
        diff = positions[:, None, :, :] - positions[:, :, None, :]
        dist2 = np.einsum("mijk,mijk->mij", diff, diff)
        close = dist2 < self._cutoff**2
        close[:, np.arange(n_atoms), np.arange(n_atoms)] = False
        frame, i, j = np.nonzero(close)
        device = self._device
        inputs = dict(static)
        inputs[properties.R] = torch.as_tensor(
            positions.reshape(-1, 3), dtype=torch.float32, device=device
        )
        inputs[properties.idx_i] = torch.as_tensor(
            frame * n_atoms + i, dtype=torch.long, device=device
        )
        inputs[properties.idx_j] = torch.as_tensor(
            frame * n_atoms + j, dtype=torch.long, device=device
        )
        inputs[properties.offsets] = torch.zeros(
            (len(i), 3), dtype=torch.float32, device=device
        )
        return inputs

    # -- persistence ------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        torch = self.require("torch")
        write_json(directory / SETTINGS_FILE, self._architecture())
        torch.save(self.model_.state_dict(), directory / MODEL_FILE)

    def _load(self, directory: Path) -> None:
        device = self.torch_device()
        model, arch = read_network(directory, device)
        self._cutoff = arch["cutoff"]
        self._energy_mean = arch["energy_mean"]
        self._device = device
        self._static = {}
        self.model_ = model

    def bare_calculator(self, directory: str | Path):
        """schnetpack's own ``SpkCalculator`` on the model saved in ``directory``.

        For comparisons (call overhead, agreement); results in eV and eV/Å.
        """
        device = self._device if self._device is not None else self.torch_device()
        return spk_calculator(directory, device=str(device))


def build_network(spk, torch, arch: dict):
    """SchNet with energy and force outputs, in eV and eV/Å.

    Parameters
    ----------
    arch : dict
        ``n_atom_basis``, ``n_interactions``, ``n_rbf``, ``cutoff`` (Å) and
        ``energy_mean`` (eV per atom, added back to the predicted energy).

    Returns
    -------
    schnetpack.model.NeuralNetworkPotential
    """
    cutoff = float(arch["cutoff"])
    representation = spk.representation.SchNet(
        n_atom_basis=arch["n_atom_basis"],
        n_interactions=arch["n_interactions"],
        radial_basis=spk.nn.GaussianRBF(n_rbf=arch["n_rbf"], cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff),
    )
    mean = torch.tensor([float(arch["energy_mean"])], dtype=torch.float64)
    return spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=arch["n_atom_basis"], output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
        postprocessors=[
            spk.transform.CastTo64(),
            spk.transform.AddOffsets("energy", add_mean=True, property_mean=mean),
        ],
    )


def read_network(directory: str | Path, device):
    """Rebuild the model saved in ``directory`` without unpickling any object.

    The architecture comes from ``schnet.json``, the weights from a state dict
    read with ``torch.load(weights_only=True)``, which refuses anything but
    tensors and plain containers.

    Returns
    -------
    model : schnetpack.model.NeuralNetworkPotential
        In eval mode on ``device``.
    arch : dict
        The architecture read from ``schnet.json``.

    Raises
    ------
    InputError
        A missing, foreign or tampered file, or a model saved by an older
        ase-flatten as a pickled module (``best_model``).
    """
    spk = SchNetBackend.require("schnetpack")
    torch = SchNetBackend.require("torch")
    directory = Path(directory)
    path = directory / MODEL_FILE
    if not path.is_file() and (directory / LEGACY_FILE).is_file():
        raise InputError(
            f"{directory / LEGACY_FILE}: a SchNet model saved as a pickled torch "
            "module by an older ase-flatten, which is never loaded (it could run "
            "code); retrain it with `ase-flatten train`"
        )
    arch = _read_architecture(directory / SETTINGS_FILE)
    if not path.is_file():
        raise InputError(f"{path}: cannot load SchNet model (no such file)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (*FILE_READ_ERRORS, RuntimeError) as exc:  # a refused global, damage
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(
            f"{path}: cannot load SchNet model weights, which must be a plain "
            f"tensor state dict ({type(exc).__name__}: {message})"
        ) from exc
    model = build_network(spk, torch, arch)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        message = str(exc).strip().splitlines()[0]
        raise InputError(
            f"{path}: weights do not fit the SchNet model of {SETTINGS_FILE} "
            f"({message})"
        ) from exc
    return model.to(device).eval(), arch


def _read_architecture(path: Path) -> dict:
    """``schnet.json``, checked: positive integers, a positive cutoff, a mean."""
    try:
        arch = json.loads(path.read_text())
        check_parameters(
            "schnet.json",
            {key: arch[key] for key in ("n_atom_basis", "n_interactions", "n_rbf")},
            {key: [Integer(1)] for key in ("n_atom_basis", "n_interactions", "n_rbf")},
        )
        arch["cutoff"] = float(arch["cutoff"])
        arch["energy_mean"] = float(arch["energy_mean"])
        if not (math.isfinite(arch["cutoff"]) and arch["cutoff"] > 0):
            raise ValueError(f"cutoff {arch['cutoff']}")
        if not math.isfinite(arch["energy_mean"]):
            raise ValueError(f"energy_mean {arch['energy_mean']}")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: cannot load SchNet model (no such file)") from exc
    except (ValueError, KeyError, TypeError, InputError) as exc:
        raise InputError(f"{path}: cannot load SchNet model ({exc})") from exc
    return arch


def spk_calculator(directory: str | Path, device: str = "cpu"):
    """``schnetpack.interfaces.SpkCalculator`` for the model saved in ``directory``.

    Parameters
    ----------
    directory : path
        Where :meth:`SchNetBackend.save` wrote the model.
    device : str
        Torch device.

    Returns
    -------
    schnetpack.interfaces.SpkCalculator
        Energies in eV and forces in eV/Å (schnetpack's default is kcal/mol). The
        model is read by :func:`read_network` (no pickle) and handed over as an
        object.
    """
    spk = SchNetBackend.require("schnetpack")
    model, arch = read_network(directory, device)
    return spk.interfaces.SpkCalculator(
        model=model,
        neighbor_list=spk.transform.ASENeighborList(cutoff=arch["cutoff"]),
        energy_unit="eV",
        position_unit="Ang",
        device=device,
    )


def _silence(stack: contextlib.ExitStack) -> None:
    """Quiet lightning's INFO banners and chatty warnings for the ``stack``'s life."""
    for name in _LIGHTNING_LOGGERS:
        lightning_logger = logging.getLogger(name)
        stack.callback(lightning_logger.setLevel, lightning_logger.level)
        lightning_logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def _best_weights_callback(pl):
    """A lightning callback class that keeps the best-validation weights."""

    class BestWeights(pl.Callback):
        def __init__(self):
            self.best_state = None
            self.best_loss = math.inf
            self.best_epoch = None
            self.epochs = 0
            self.losses = []

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            self.epochs += 1
            loss = trainer.callback_metrics.get("val_loss")
            if loss is None:
                return
            loss = float(loss)
            self.losses.append(loss)
            if loss < self.best_loss:
                self.best_loss = loss
                self.best_epoch = self.epochs
                self.best_state = copy.deepcopy(pl_module.model.state_dict())

    return BestWeights
