"""MACE through mace-torch 0.3.16, with MACE's own model, data and training code.

Training uses mace-torch's pieces as ``mace_run_train`` does, on exactly the given
frames: the frames become :class:`mace.data.Configuration` objects and
:class:`mace.data.AtomicData` graphs (MACE's neighbour lists), the isolated-atom
energies are MACE's least-squares average (``--E0s average``), the message
normalisation and output scale are MACE's statistics (``avg_num_neighbors``,
``rms_forces_scaling``), the model is a :class:`mace.modules.ScaleShiftMACE` built
as ``--model MACE`` builds it, the loss is MACE's weighted energy + forces loss,
and each epoch is :func:`mace.tools.train.train_one_epoch` with Adam (amsgrad),
gradient clipping and a ReduceLROnPlateau schedule, validated with
:func:`mace.tools.train.evaluate`.

After training, the model's output shift takes the mean energy error of the
training frames (a constant per molecule, no change to the forces): with MACE's
loss weights (forces 100, energy 1) a few epochs fit the forces well but leave the
energy offset far from converged.

The epoch loop is ours: in mace-torch 0.3.16 :func:`mace.tools.train.train` stops
on ``patience`` only in distributed runs (a single process logs "Stopping
optimization" and carries on to ``max_num_epochs``) and keeps the best weights as
pickled checkpoint files. Here training stops after ``patience`` epochs without a
lower validation loss and the weights of the best validation epoch are kept in
memory.

A warm fit (``fit(..., init_from=previous)``) starts from a previous model's
weights with a short schedule of its own (``warm_lr``, ``warm_epochs``,
``warm_patience``). The isolated-atom energies are the new training set's
(``--E0s average``, as in a cold fit), with the output shift moved by the change
so the warm model starts out predicting what the previous one did. The message
normalisation (``avg_num_neighbors``) and the output scale
(``atomic_inter_scale``) shape what the weights mean, so they stay the previous
model's, as mace-torch's own fine-tuning keeps a foundation model's; the new
set's values are computed, logged and recorded in ``history_["warm_start"]``
(a warning when one differs by more than 20 %).

Files: ``mace.json`` holds the model's constructor settings (plain JSON: irreps
as strings, classes by name, looked up in mace's own tables) and
``mace_state.pt`` its ``state_dict``, read back with
``torch.load(weights_only=True)``. mace's own ``torch.save(model)`` files are
pickles, which can run code when loaded: they are neither written nor read.

``import mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process
(e3nn 0.4.4 needs it to read its own constants), which would make every later
``torch.load`` without an explicit ``weights_only`` unpickle arbitrary objects;
:func:`import_mace` puts the variable back as it was after the import.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..data import Dataset
from ..exceptions import FILE_READ_ERRORS, InputError
from .base import Backend
from .parameters import Boolean, Integer, ListOf, Options, Pattern, Real

logger = logging.getLogger(__name__)

__all__ = ["MACEBackend", "SETTINGS_FILE", "STATE_FILE", "import_mace"]

SETTINGS_FILE = "mace.json"  #: constructor settings of the model
STATE_FILE = "mace_state.pt"  #: the model's state_dict (tensors only)
FORMAT = "ase-flatten-mace"
_ENV_FLAG = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_GATES = ("silu", "tanh", "abs")
_MAX_GRAD_NORM = 10.0  # mace_run_train's --clip_grad default
_WEIGHT_DECAY = 5e-7  # mace_run_train's --weight_decay default


def import_mace(*extra: str):
    """Import mace-torch's modules; leave the process's environment as it was.

    Parameters
    ----------
    *extra : str
        Further modules to import under the same guard (``mace.calculators``
        sets the variable again when imported).

    Returns
    -------
    module
        The ``mace`` package, with ``mace.data``, ``mace.modules`` and
        ``mace.tools`` loaded.
    """
    previous = os.environ.get(_ENV_FLAG)
    try:
        # mace.tools.cg prints a notice about cuequivariance on import; e3nn
        # warns about the variable and torch.jit about type annotations
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mace = MACEBackend.require("mace")
            MACEBackend.require("mace.data")
            MACEBackend.require("mace.modules")
            MACEBackend.require("mace.tools")
            MACEBackend.require("mace.tools.train")
            for module in extra:
                MACEBackend.require(module)
    finally:
        if previous is None:
            os.environ.pop(_ENV_FLAG, None)
        else:
            os.environ[_ENV_FLAG] = previous
    return mace


class _NoMetricsLog:
    """What mace's training loop calls ``logger.log(metrics)`` on; keeps nothing."""

    def log(self, metrics: dict) -> None:
        pass


class MACEBackend(Backend):
    """MACE equivariant message-passing potential (mace-torch 0.3.16).

    Parameters
    ----------
    random_state : int
        Seed of the validation frames, the weight initialisation and the shuffling.
        The same call gives the same model on a CPU.
    **params
        Hyperparameters (see ``defaults``); the names follow ``mace_run_train``'s
        options:

        num_channels : int
            Channels of the hidden node features (32).
        max_L : int
            Highest rotation order of the hidden features (0: invariant
            ``32x0e``; 1 adds ``32x1o``).
        max_ell : int
            Highest order of the edge spherical harmonics (3).
        correlation : int
            Body order minus one of each product basis (3).
        num_interactions : int
            Message-passing layers (2).
        r_max : float
            Cutoff radius in Å (5.0).
        num_radial_basis : int
            Bessel radial basis functions (8).
        radial_MLP : list of int
            Widths of the radial network's hidden layers ([32, 32]).
        MLP_irreps : str
            Hidden irreps of the last readout ("16x0e").
        gate : {"silu", "tanh", "abs"}
            Non-linearity of the last readout ("silu").
        energy_weight, forces_weight : float
            Weights of the per-atom energy and force terms of MACE's weighted loss
            (1 and 100, MACE's defaults).
        lr : float
            Adam (amsgrad) learning rate (0.01); multiplied by 0.8 after
            ``scheduler_patience`` epochs without a lower validation loss.
        scheduler_patience : int
            Epochs of the learning-rate plateau rule (5).
        batch_size : int
            Training frames per step (5).
        max_epochs : int
            Upper limit on training epochs (60).
        patience : int
            Stop after this many epochs without a lower validation loss (15).
        n_valid : int or None
            Validation frames drawn when the caller gives none; None means
            ``max(10, 10% of the training frames)``.
        dtype : {"float64", "float32"}
            Precision of training and prediction ("float64", MACE's training
            default).
        device : str
            "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        warm_start : bool
            Fitting a trained backend again continues from its own weights
            (scikit-learn's ``warm_start``; False).
        warm_lr, warm_epochs, warm_patience : float, int, int
            Learning rate, upper limit on epochs and early-stopping patience of
            a warm fit, one that continues from a previous model
            (``fit(..., init_from=...)``): 0.0025, 15 and 4, a quarter of the
            cold schedule's, as the schedule measured for SchNet (not measured
            for MACE).

    Attributes
    ----------
    model_ : mace.modules.ScaleShiftMACE
        The trained model (eval mode).
    settings_ : dict
        The model's constructor settings as JSON values (what ``mace.json`` holds).
    history_ : dict
        Facts about the last fit: ``epochs``, ``best_epoch``, ``best_val_loss``,
        ``val_losses`` (per epoch), ``val_force_rmse`` (eV/Å),
        ``val_energy_rmse`` (eV), ``n_train``, ``n_valid``, ``seconds``,
        ``seconds_per_epoch``, and ``warm_start`` (None after a cold fit; else
        the change of the energy offset, eV per frame, and the statistics kept
        against the new set's).

    Notes
    -----
    Training and prediction set torch's default dtype for their duration (MACE's
    data and model code read it) and put it back afterwards; the torch random
    state is forked, so training leaves the global one unchanged.
    """

    name: ClassVar[str] = "mace"
    extra: ClassVar[str] = "mace"
    batch_size: ClassVar[int] = 64
    defaults: ClassVar[dict] = {
        "num_channels": 32,
        "max_L": 0,
        "max_ell": 3,
        "correlation": 3,
        "num_interactions": 2,
        "r_max": 5.0,
        "num_radial_basis": 8,
        "radial_MLP": [32, 32],
        "MLP_irreps": "16x0e",
        "gate": "silu",
        "energy_weight": 1.0,
        "forces_weight": 100.0,
        "lr": 0.01,
        "scheduler_patience": 5,
        "batch_size": 5,
        "max_epochs": 60,
        "patience": 15,
        "n_valid": None,
        "dtype": "float64",
        "device": "auto",
        "warm_start": False,
        "warm_lr": 0.0025,
        "warm_epochs": 15,
        "warm_patience": 4,
    }
    parameter_constraints: ClassVar[dict] = {
        "num_channels": [Integer(1)],
        "max_L": [Integer(0, 3)],
        "max_ell": [Integer(1, 6)],
        "correlation": [Integer(1, 4)],
        "num_interactions": [Integer(1)],
        "r_max": [Real(0, closed="neither")],
        "num_radial_basis": [Integer(1)],
        "radial_MLP": [ListOf(Integer(1))],
        "MLP_irreps": [Pattern(r"\d+x0e", "scalar irreps such as 16x0e")],
        "gate": [Options(_GATES)],
        "energy_weight": [Real(0)],
        "forces_weight": [Real(0)],
        "lr": [Real(0, closed="neither")],
        "scheduler_patience": [Integer(1)],
        "batch_size": [Integer(1)],
        "max_epochs": [Integer(1)],
        "patience": [Integer(1)],
        "n_valid": [Integer(1), None],
        "dtype": [Options(("float64", "float32"))],
        "device": [Pattern(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")],
        "warm_start": [Boolean()],
        "warm_lr": [Real(0, closed="neither")],
        "warm_epochs": [Integer(1)],
        "warm_patience": [Integer(1)],
    }
    supports_warm_start: ClassVar[bool] = True
    architecture_params: ClassVar[tuple[str, ...]] = (
        "num_channels",
        "max_L",
        "max_ell",
        "correlation",
        "num_interactions",
        "r_max",
        "num_radial_basis",
        "radial_MLP",
        "MLP_irreps",
        "gate",
        "dtype",
    )

    def __init__(self, random_state: int = 0, **params):
        super().__init__(random_state=random_state, **params)
        if self.params["energy_weight"] == 0 and self.params["forces_weight"] == 0:
            raise InputError("mace: energy_weight and forces_weight are both 0")
        self.model_ = None
        self.settings_: dict[str, Any] = {}
        self.history_: dict[str, Any] = {}
        self._device = None
        self._warm_record = None

    # -- helpers ----------------------------------------------------------------
    @contextlib.contextmanager
    def _dtype(self):
        """torch's default dtype set to ``dtype`` (MACE's code reads it)."""
        torch = self.require("torch")
        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, self.params["dtype"]))
        try:
            yield
        finally:
            torch.set_default_dtype(previous)

    def _graphs(self, positions: np.ndarray, energies=None, forces=None) -> list:
        """MACE's AtomicData graphs of frames of ``numbers_`` (labels optional)."""
        mace = import_mace()
        z_table = mace.tools.AtomicNumberTable(self.settings_["atomic_numbers"])
        weights = {"energy": 1.0, "forces": 1.0}
        graphs = []
        for k, frame in enumerate(positions):
            properties = {}
            if energies is not None:
                properties = {"energy": float(energies[k]), "forces": forces[k]}
            config = mace.data.Configuration(
                atomic_numbers=self.numbers_,
                positions=frame,
                properties=properties,
                property_weights=weights,
                pbc=(False, False, False),
                cell=np.zeros((3, 3)),
            )
            graphs.append(
                mace.data.AtomicData.from_config(
                    config, z_table=z_table, cutoff=self.settings_["r_max"]
                )
            )
        return graphs

    def _loader(self, graphs: list, batch_size: int, shuffle: bool, seed: int = 0):
        torch = self.require("torch")
        from mace.tools.torch_geometric import DataLoader

        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            graphs,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=False,
            generator=generator,
        )

    # -- training ---------------------------------------------------------------
    def _fit_warm(self, dataset, train_idx, val_idx, init_from) -> None:
        # taken now: init_from may be this backend, whose model the fit replaces
        warm = {
            "settings": copy.deepcopy(init_from.settings_),
            "state": {
                key: value.detach().cpu().clone()
                for key, value in init_from.model_.state_dict().items()
            },
            "n_train": init_from.history_.get("n_train"),
        }
        self._fit(dataset, train_idx, val_idx, warm=warm)

    def _fit(self, dataset: Dataset, train_idx: np.ndarray, val_idx, warm=None) -> None:
        torch = self.require("torch")
        mace = import_mace()

        val_idx = self.early_stopping_frames(len(dataset), train_idx, val_idx)
        device = self.torch_device()
        self._device = device
        start = time.perf_counter()
        forked = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked), self._dtype():
            torch.manual_seed(self.random_state)
            model, best = self._train(mace, torch, dataset, train_idx, val_idx, warm)
        self.model_ = model.to(device).eval()
        self._align_energy_offset(dataset, train_idx)
        history = {
            "n_train": len(train_idx),
            "n_valid": len(val_idx),
            **best,
            **self.validation_errors(dataset, val_idx),
            "warm_start": self._warm_record,
        }
        history["seconds"] = time.perf_counter() - start
        self.history_ = history
        logger.info(
            "mace: trained on %d frames (%d validation) on %s%s: %d epochs "
            "(%.2f s each), best validation loss %.4g at epoch %s, validation "
            "force RMSE %.4g eV/Å, %.1f s",
            history["n_train"],
            history["n_valid"],
            device,
            "" if warm is None else ", warm start",
            history["epochs"],
            history["seconds_per_epoch"],
            history["best_val_loss"],
            history["best_epoch"],
            history["val_force_rmse"],
            history["seconds"],
        )

    def _train(self, mace, torch, dataset, train_idx, val_idx, warm=None):
        """Build the model from the training frames' statistics and train it.

        ``warm``: the previous model's settings and state to start from (see
        :meth:`_warm_model`). Returns the model holding the best validation
        weights and a dict with ``epochs``, ``best_epoch``, ``best_val_loss``,
        ``val_losses`` and ``seconds_per_epoch``.
        """
        from mace.tools.train import evaluate, train_one_epoch

        p = self.params
        self.settings_ = {"atomic_numbers": sorted(set(dataset.numbers.tolist()))}
        self.settings_["r_max"] = float(p["r_max"])
        train = self._graphs(
            dataset.positions[train_idx],
            dataset.energies[train_idx],
            dataset.forces[train_idx],
        )
        valid = self._graphs(
            dataset.positions[val_idx],
            dataset.energies[val_idx],
            dataset.forces[val_idx],
        )
        train_loader = self._loader(train, p["batch_size"], True, self.random_state)
        stats_loader = self._loader(train, 100, False)
        val_loader = self._loader(valid, max(p["batch_size"], 50), False)
        self.settings_ = self._settings(mace, torch, dataset, train_idx, stats_loader)
        self._warm_record = None
        if warm is None:
            model = self._build(mace, torch).to(self._device)
        else:
            model = self._warm_model(mace, torch, dataset, warm).to(self._device)
        lr, max_epochs, patience = (
            (p["warm_lr"], p["warm_epochs"], p["warm_patience"])
            if warm is not None
            else (p["lr"], p["max_epochs"], p["patience"])
        )

        loss_fn = mace.modules.WeightedEnergyForcesLoss(
            energy_weight=p["energy_weight"], forces_weight=p["forces_weight"]
        )
        optimizer = torch.optim.Adam(
            model.parameters(), lr=lr, amsgrad=True, weight_decay=_WEIGHT_DECAY
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.8, patience=p["scheduler_patience"]
        )
        outputs = {
            "energy": True,
            "forces": True,
            "virials": False,
            "stress": False,
            "dipoles": False,
        }
        best = {
            "epochs": 0,
            "best_epoch": None,
            "best_val_loss": math.inf,
            "val_losses": [],
        }
        best_state, waited, start = None, 0, time.perf_counter()
        for epoch in range(1, max_epochs + 1):
            model.train()
            train_one_epoch(
                model=model,
                loss_fn=loss_fn,
                data_loader=train_loader,
                optimizer=optimizer,
                epoch=epoch,
                output_args=outputs,
                max_grad_norm=_MAX_GRAD_NORM,
                ema=None,
                logger=_NoMetricsLog(),
                device=self._device,
                distributed=False,
            )
            best["epochs"] = epoch
            if not valid:
                continue
            model.eval()
            loss, metrics = evaluate(model, loss_fn, val_loader, outputs, self._device)
            loss = float(loss)
            best["val_losses"].append(loss)
            scheduler.step(loss)
            logger.debug(
                "mace epoch %d: validation loss %.4g, force RMSE %.4g eV/Å",
                epoch,
                loss,
                metrics.get("rmse_f", math.nan),
            )
            if loss < best["best_val_loss"]:
                best.update(best_epoch=epoch, best_val_loss=loss)
                best_state = copy.deepcopy(model.state_dict())
                waited = 0
            else:
                waited += 1
                if waited >= patience:
                    break
        best["seconds_per_epoch"] = (time.perf_counter() - start) / best["epochs"]
        if best_state is not None:
            model.load_state_dict(best_state)
        return model, best

    def _warm_model(self, mace, torch, dataset: Dataset, warm: dict):
        """The previous model rebuilt with this training set's energy offsets.

        ``settings_`` holds the new set's statistics on entry. The isolated-atom
        energies stay the new set's and the output shift moves by their change
        (so the energies are the previous model's); ``avg_num_neighbors`` and
        ``atomic_inter_scale`` go back to the previous model's, their new values
        recorded in ``_warm_record``.
        """
        fresh, old = self.settings_, warm["settings"]
        kept = ("avg_num_neighbors", "atomic_inter_scale", "atomic_inter_shift")
        self.settings_ = {**fresh, **{key: old[key] for key in kept}}
        model = self._build(mace, torch)
        atoms = np.searchsorted(fresh["atomic_numbers"], dataset.numbers)
        change = float(
            np.sum(np.asarray(fresh["atomic_energies"])[atoms])
            - np.sum(np.asarray(old["atomic_energies"])[atoms])
        )
        own = model.state_dict()
        state = dict(warm["state"])
        key = "atomic_energies_fn.atomic_energies"
        state[key] = own[key]
        state["scale_shift.shift"] = state["scale_shift.shift"] - change / len(atoms)
        model.load_state_dict(state)
        drift = {
            name: {"kept": float(old[name]), "this_set": float(fresh[name])}
            for name in ("avg_num_neighbors", "atomic_inter_scale")
        }
        self._warm_record = {
            "from_n_train": warm["n_train"],
            "energy_offset_change": change,
            **drift,
        }
        for name, values in drift.items():
            relative = abs(values["this_set"] / values["kept"] - 1)
            log = logger.warning if relative > 0.2 else logger.info
            log(
                "mace warm start: %s %.4g of the previous model kept (this training "
                "set's: %.4g, %+.0f %%)%s",
                name,
                values["kept"],
                values["this_set"],
                100 * (values["this_set"] / values["kept"] - 1),
                "; a cold fit would re-derive it" if relative > 0.2 else "",
            )
        return model

    def _align_energy_offset(self, dataset: Dataset, train_idx: np.ndarray) -> None:
        """Shift the energies so their mean error on the training frames is zero.

        With MACE's weights (forces 100, energy 1) and few epochs, the forces
        train well but the constant energy offset converges slowly; one constant
        per frame, added through the model's output shift (per atom), fixes it
        without changing the forces.
        """
        torch = self.require("torch")
        energies, _ = self._predict(dataset.positions[train_idx])
        offset = float(np.mean(dataset.energies[train_idx] - energies))
        with torch.no_grad():
            self.model_.scale_shift.shift += offset / len(self.numbers_)
        logger.debug("mace: energy offset %.4g eV moved into the output shift", offset)

    def _settings(self, mace, torch, dataset, train_idx, stats_loader) -> dict:
        """The model's constructor settings, as JSON values, from the frames."""
        from e3nn import o3

        p = self.params
        z_table = mace.tools.AtomicNumberTable(self.settings_["atomic_numbers"])
        configs = [
            mace.data.Configuration(
                atomic_numbers=dataset.numbers,
                positions=dataset.positions[i],
                properties={"energy": float(dataset.energies[i])},
                property_weights={"energy": 1.0},
            )
            for i in train_idx
        ]
        e0s = mace.data.compute_average_E0s(configs, z_table)  # --E0s average
        atomic_energies = np.array([e0s[z] for z in z_table.zs])
        _, rms = mace.modules.scaling_classes["rms_forces_scaling"](
            stats_loader, atomic_energies
        )
        hidden = (
            (p["num_channels"] * o3.Irreps.spherical_harmonics(p["max_L"]))
            .sort()
            .irreps.simplify()
        )
        return {
            "format": FORMAT,
            "mace_version": _mace_version(),
            "dtype": p["dtype"],
            "r_max": float(p["r_max"]),
            "num_bessel": p["num_radial_basis"],
            "num_polynomial_cutoff": 5,
            "max_ell": p["max_ell"],
            "interaction_cls": "RealAgnosticResidualInteractionBlock",
            "interaction_cls_first": "RealAgnosticInteractionBlock",
            "num_interactions": p["num_interactions"],
            "num_elements": len(z_table),
            "hidden_irreps": str(hidden),
            "MLP_irreps": p["MLP_irreps"],
            "atomic_energies": atomic_energies.tolist(),
            "avg_num_neighbors": float(
                mace.modules.compute_avg_num_neighbors(stats_loader)
            ),
            "atomic_numbers": list(z_table.zs),
            "correlation": p["correlation"],
            "gate": p["gate"],
            "radial_MLP": list(p["radial_MLP"]),
            "atomic_inter_scale": float(np.ravel(rms)[0]),
            "atomic_inter_shift": 0.0,
        }

    def _build(self, mace, torch):
        """A ScaleShiftMACE from ``settings_`` (as ``--model MACE`` builds it)."""
        s = self.settings_
        # torch.jit warns about mace's scripted helpers at every construction
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
            return self._construct(mace, s)

    def _construct(self, mace, s: dict):
        from e3nn import o3

        try:
            interaction = mace.modules.interaction_classes[s["interaction_cls"]]
            first = mace.modules.interaction_classes[s["interaction_cls_first"]]
            if s["gate"] not in _GATES:
                raise KeyError(s["gate"])
            return mace.modules.ScaleShiftMACE(
                r_max=float(s["r_max"]),
                num_bessel=int(s["num_bessel"]),
                num_polynomial_cutoff=int(s["num_polynomial_cutoff"]),
                max_ell=int(s["max_ell"]),
                interaction_cls=interaction,
                interaction_cls_first=first,
                num_interactions=int(s["num_interactions"]),
                num_elements=int(s["num_elements"]),
                hidden_irreps=o3.Irreps(s["hidden_irreps"]),
                MLP_irreps=o3.Irreps(s["MLP_irreps"]),
                atomic_energies=np.asarray(s["atomic_energies"], dtype=float),
                avg_num_neighbors=float(s["avg_num_neighbors"]),
                atomic_numbers=[int(z) for z in s["atomic_numbers"]],
                correlation=int(s["correlation"]),
                gate=mace.modules.gate_dict[s["gate"]],
                radial_MLP=[int(w) for w in s["radial_MLP"]],
                atomic_inter_scale=float(s["atomic_inter_scale"]),
                atomic_inter_shift=float(s["atomic_inter_shift"]),
                use_reduced_cg=False,  # mace_run_train's default
                heads=["Default"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"bad model settings ({type(exc).__name__}: {exc})"
            ) from exc

    # -- prediction -------------------------------------------------------------
    def _predict(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(positions, dtype=float)
        n_frames, n_atoms = positions.shape[:2]
        with self._dtype():
            loader = self._loader(self._graphs(positions), n_frames, False)
            batch = next(iter(loader)).to(self._device)
            output = self.model_(batch.to_dict(), training=False, compute_force=True)
        energies = output["energy"].detach().cpu().numpy().astype(float)
        forces = output["forces"].detach().cpu().numpy().astype(float)
        return energies.reshape(n_frames), forces.reshape(n_frames, n_atoms, 3)

    # -- persistence ------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        torch = self.require("torch")
        (directory / SETTINGS_FILE).write_text(
            json.dumps(self.settings_, indent=1) + "\n"
        )
        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        torch.save(state, directory / STATE_FILE)

    def _load(self, directory: Path) -> None:
        torch = self.require("torch")
        mace = import_mace()
        settings_path = directory / SETTINGS_FILE
        state_path = directory / STATE_FILE
        for path in (settings_path, state_path):
            if not path.is_file():
                raise InputError(f"{path}: cannot load MACE model (no such file)")
        try:
            self.settings_ = json.loads(settings_path.read_text())
            if self.settings_.get("format") != FORMAT:
                raise ValueError(f"not an {FORMAT} settings file")
            self.params["dtype"] = self.settings_["dtype"]
            device = self.torch_device()
            with self._dtype():
                model = self._build(mace, torch)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(
                f"{settings_path}: cannot load MACE model ({exc})"
            ) from exc
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (*FILE_READ_ERRORS, RuntimeError) as exc:  # refused, wrong tensors
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(
                f"{state_path}: cannot load MACE model ({type(exc).__name__}: "
                f"{message})"
            ) from exc
        self._device = device
        self.model_ = model.to(device).eval()

    def bare_calculator(self, directory: str | Path | None = None):
        """mace-torch's own ``MACECalculator`` on this model (eV, Å, eV/Å).

        For comparisons (call overhead, agreement). MACE's calculator reads only
        its pickled ``.model`` files, which this backend does not write, so it
        gets a copy of the model object; ``directory`` is accepted for the
        common signature of the backends and not read.
        """
        self._check_fitted()
        mace = import_mace("mace.calculators")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
            return mace.calculators.MACECalculator(
                models=copy.deepcopy(self.model_),
                device=str(self._device),
                default_dtype=self.params["dtype"],
            )


def _mace_version() -> str:
    from importlib.metadata import version

    return version("mace-torch")
