"""Exploration: MD with the model, labels where it goes wrong, retrain, repeat.

Flattening the error on a dataset cannot fill a hole that lies outside the data;
only new labels can. Each round of :func:`explore`

1. runs short NVT replicas with the current model at every temperature (the
   engines, failure rule and seeds of ``md-validate``);
2. harvests candidates: the frames leading up to every failure (the last
   ``precursors`` saved frames of a failed run) and the frames outside the
   model's applicability domain or in one of its high-error clusters
   (:meth:`ase_flatten.models.SavedModel.locate`);
3. thins them to at most ``per_round`` frames by farthest-point sampling on the
   pairwise-distance descriptor, precursors first (no labels exist yet for an
   error-weighted allocation, so the paper's fine-cluster allocation has nothing
   to weigh; FPS spreads the labels over the distinct geometries instead);
4. labels them with the oracle (:mod:`ase_flatten.oracle`; labels paid for are
   never paid twice), adds every labelled frame to the training set and retrains
   the backend with the start model's settings: from scratch, or with
   ``warm_start`` from the last round's model (SchNet, MACE: the backend's warm
   schedule, ``warm_lr``, ``warm_epochs``, ``warm_patience`` of the start model's
   parameters).

It stops when a round's replicas show no failure and at most
``stop_outside_share`` of their frames lie outside the domain ("survived"), when
the label budget is spent, or after ``max_rounds``. The folder then holds the
last model as a normal model directory (FlattenedCalculator loads it,
``md-validate`` compares it), with::

    dataset.extxyz    the start model's dataset followed by the labelled MD frames
    explored.extxyz   the labelled MD frames alone (``config_type`` explore_<T>K,
                      ``round``, ``reason``), reusable for any other model
    labels.jsonl      every oracle call, in the order they arrived
    history.json      per round: failures, share outside the domain, labels, size
    rounds/rNN/       the round's MD runs and the model it produced

A killed run resumes with the same command plus ``--resume``: finished MD runs
and every label are kept, and it ends on the training set of an uninterrupted
run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ase_flatten.exceptions import InputError, RunError

logger = logging.getLogger(__name__)

__all__ = ["ExploreSettings", "ExplorationResult", "explore"]

COMMAND = "ase-flatten explore"


@dataclass(frozen=True)
class ExploreSettings:
    """What an exploration does; checked when made.

    Parameters
    ----------
    temperatures : tuple of float
        NVT temperatures (K) of every round.
    replicas : int
        Runs per temperature and round.
    time_ps : float
        Length of each run (ps).
    timestep_fs : float
    stride : int
        Steps between saved (and harvested) frames.
    engine : {"ase", "ipi"}
    per_round : int
        Labels asked for per round, at most.
    label_budget : int
        Oracle calls in all (failed calls count: they were paid for).
    max_rounds : int
    precursors : int
        Saved frames before each failure taken as candidates.
    stop_outside_share : float
        A round without failures and at most this share of frames outside the
        domain ends the exploration.
    high_error_factor : float
        A cluster is high-error above this times the model's overall force RMSE.
    seed : int
        Seeds start frames, MD and FPS.
    warm_start : bool
        Each retraining continues from the last round's model (backends that
        support it) instead of training from scratch.
    """

    temperatures: tuple = (300.0, 400.0)
    replicas: int = 4
    time_ps: float = 2.0
    timestep_fs: float = 0.5
    stride: int = 10
    engine: str = "ase"
    per_round: int = 25
    label_budget: int = 100
    max_rounds: int = 5
    precursors: int = 3
    stop_outside_share: float = 0.05
    high_error_factor: float = 1.1
    seed: int = 0
    warm_start: bool = False

    def __post_init__(self):
        object.__setattr__(
            self, "temperatures", tuple(float(t) for t in self.temperatures)
        )
        checks = {
            "temperatures": all(math.isfinite(t) and t > 0 for t in self.temperatures)
            and len(self.temperatures) > 0,
            "time_ps": math.isfinite(self.time_ps) and self.time_ps > 0,
            "timestep_fs": math.isfinite(self.timestep_fs) and self.timestep_fs > 0,
            "stop_outside_share": 0.0 <= self.stop_outside_share <= 1.0,
            "high_error_factor": math.isfinite(self.high_error_factor)
            and self.high_error_factor > 0,
            "seed": self.seed >= 0,
            "precursors": self.precursors >= 0,
        }
        for name in ("replicas", "stride", "per_round", "label_budget", "max_rounds"):
            checks[name] = getattr(self, name) >= 1
        from .engines import ENGINES

        checks["engine"] = self.engine in ENGINES
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise InputError(
                "exploration settings out of range: "
                + ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            )
        if self.n_steps < self.stride:
            raise InputError(
                f"exploration runs of {self.time_ps} ps are {self.n_steps} steps, "
                f"fewer than the stride {self.stride}: no frame would be saved"
            )

    @property
    def n_steps(self) -> int:
        """MD steps per run."""
        return int(round(self.time_ps * 1000.0 / self.timestep_fs))


@dataclass
class ExplorationResult:
    """What a finished exploration produced."""

    directory: Path
    history: list
    n_labels: int  #: oracle calls paid for, failures included
    n_added: int  #: labelled MD frames in the final training set
    stopped: str  #: "survived", "budget", "rounds" or "nothing to label"


@dataclass
class _Run:
    """The fixed inputs of an exploration (what every round needs)."""

    start: object  #: SavedModel to start from
    dataset: object  #: its Dataset
    test: np.ndarray  #: its test split (never trained on; errors are reported there)
    oracle: object
    settings: ExploreSettings
    work: Path  #: the work folder (``output.partial``)
    output: Path  #: where the result is published
    jobs: int
    progress: bool | None
    client: object = None  #: Dask client labelling on its workers, or None


def explore(
    model_dir,
    oracle,
    settings: ExploreSettings,
    directory,
    *,
    resume: bool = False,
    overwrite: bool = False,
    jobs: int = 1,
    progress: bool | None = None,
    client=None,
) -> ExplorationResult:
    """Explore with MD from a saved model until it survives or the budget is spent.

    Parameters
    ----------
    model_dir : path
        A model directory (``ase-flatten train`` or ``select``) whose dataset file
        is readable.
    oracle : ase_flatten.oracle.Oracle
        Labels the harvested frames.
    settings : ExploreSettings
    directory : path
        The output folder; the work goes on in ``directory.partial`` until the end.
    resume, overwrite : bool
        As for every resumable output
        (:meth:`ase_flatten.files.RunFolder.for_output`).
    jobs : int
        Worker processes for the MD replicas and the oracle.
    progress : bool or None
        tqdm bars (None: when stderr is a terminal).
    client : distributed.Client, optional
        Label on this Dask cluster's workers (the MD replicas still use ``jobs``).

    Returns
    -------
    ExplorationResult
    """
    from ase_flatten.files import RunFolder
    from ase_flatten.oracle import probe_oracle

    start, dataset, test = _read_start(model_dir)
    if settings.warm_start and not start.backend.supports_warm_start:
        raise InputError(
            f"--warm-start: the start model's {start.backend.name} backend cannot "
            "continue from a previous model; it retrains from scratch"
        )
    # a bad oracle fails now, in one line, before any MD
    probe_oracle(oracle, dataset, int(start.train_indices[0]))
    recorded = dataclasses.asdict(settings)
    if not settings.warm_start:  # runs from before the setting resume as they were
        del recorded["warm_start"]
    run_settings = {
        "settings": recorded,
        "oracle": oracle.describe(),
        "model": str(Path(model_dir).resolve()),
        "dataset": dataset.fingerprint(),
    }
    work = RunFolder.for_output(
        directory, COMMAND, run_settings, overwrite, resume, inputs=[model_dir]
    )
    with work:
        output = Path(directory).resolve()
        run = _Run(
            start,
            dataset,
            test,
            oracle,
            settings,
            work.path,
            output,
            jobs,
            progress,
            client,
        )
        result = _rounds(run)
    work.publish()
    result.directory = Path(directory)
    return result


def _read_start(model_dir):
    """The start model, its dataset and test split; one line when unusable."""
    from ase_flatten.data import read_dataset
    from ase_flatten.models import load_model, recorded_dataset, recorded_label_keys

    start = load_model(model_dir)
    if start.clusters is None:
        raise InputError(
            f"{model_dir}: saved without clusters; exploration needs them to find "
            "high-error frames (train or select it again)"
        )
    path = recorded_dataset(start)
    energy_key, forces_key = recorded_label_keys(start.meta)
    dataset = read_dataset(path, energy_key=energy_key, forces_key=forces_key)
    if dataset.fingerprint() != start.meta.get("dataset_fingerprint"):
        raise InputError(
            f"{path}: not the frames {model_dir} was trained on (fingerprint differs)"
        )
    test = start.test_indices if start.test_indices is not None else np.zeros(0, int)
    return start, dataset, test


def _rounds(run: _Run) -> ExplorationResult:
    from tqdm.auto import tqdm

    from ase_flatten.oracle import LabelStore

    settings = run.settings
    store = LabelStore(run.work / "labels.jsonl")
    history, added = _read_state(run)
    model = _round_model(run, len(history))
    stopped = "rounds"
    bar = tqdm(
        total=settings.max_rounds,
        initial=len(history),
        desc="exploring",
        unit="round",
        disable=None if run.progress is None else not run.progress,
    )
    with bar:
        for number in range(len(history), settings.max_rounds):
            spent = sum(e["labels"]["calls"] for e in history)
            entry, new = _round(run, number, model, store, spent)
            history.append(entry)
            if new is not None:
                added = _concat(added, new)
                model = _retrain(run, number + 1, added, entry, model)
            _checkpoint(run, history, added)
            bar.set_postfix(
                failed=entry["failed"], outside=f"{entry['outside_share']:.2f}"
            )
            bar.update()
            if entry["stop"]:
                stopped = entry["stop"]
                break
    store.close()
    _publish_model(run, model, added)
    spent = sum(e["labels"]["calls"] for e in history)
    logger.info(
        "exploration stopped (%s) after %d rounds: %d oracle calls, %d MD frames added",
        stopped,
        len(history),
        spent,
        0 if added is None else len(added["energies"]),
    )
    return ExplorationResult(
        run.work,
        history,
        spent,
        0 if added is None else len(added["energies"]),
        stopped,
    )


def _round(run: _Run, number: int, model, store, spent: int):
    """MD, harvest, thin, label. Returns the history entry and the new frames."""
    from ase_flatten.oracle import label_frames

    settings = run.settings
    folder = run.work / "rounds" / f"r{number:02d}"
    start = time.perf_counter()
    runs = _run_md(run, model, folder / "md", number)
    t_md = time.perf_counter() - start
    frames = _harvest(run, model, runs)
    n_frames = len(frames["positions"])
    outside_share = float(frames["outside"].mean()) if n_frames else 0.0
    entry = {
        "round": number,
        "model": _relative(model.path, run.work),
        "n_train": int(len(model.train_indices)),
        "runs": len(runs),
        "failed": int(sum(r["failed"] for r in runs)),
        "failed_per_temperature": {
            f"{t:g}": int(sum(r["failed"] for r in runs if r["temperature_K"] == t))
            for t in settings.temperatures
        },
        "frames": n_frames,
        "outside_share": outside_share,
        "high_error_share": float(frames["high_error"].mean()) if n_frames else 0.0,
        "candidates": int(frames["candidate"].sum()),
        "labels": {"requested": 0, "calls": 0, "failed": 0, "oracle_seconds": 0.0},
        "added": 0,
        "stop": None,
        "timings": {"md": t_md},
    }
    left = settings.label_budget - spent
    logger.info(
        "round %d: %d of %d runs failed, %.1f %% of %d frames outside the domain, "
        "%d candidates",
        number,
        entry["failed"],
        len(runs),
        100 * outside_share,
        n_frames,
        entry["candidates"],
    )
    if entry["failed"] == 0 and outside_share <= settings.stop_outside_share:
        entry["stop"] = "survived"
        return entry, None
    if left <= 0:
        entry["stop"] = "budget"
        return entry, None
    chosen = _thin(frames, min(settings.per_round, left), settings.seed + number)
    if len(chosen) == 0:
        entry["stop"] = "nothing to label"
        return entry, None
    start = time.perf_counter()
    energies, forces, ok, stats = label_frames(
        run.dataset.numbers,
        frames["positions"][chosen],
        run.oracle,
        store,
        jobs=run.jobs,
        progress=run.progress,
        client=run.client,
    )
    entry["timings"]["label"] = time.perf_counter() - start
    entry["labels"] = stats.as_dict()
    keep = chosen[ok]
    entry["added"] = int(len(keep))
    if spent + stats.calls >= settings.label_budget:
        entry["stop"] = "budget"
    if len(keep) == 0:
        entry["stop"] = "nothing to label"
        return entry, None
    new = {
        "positions": frames["positions"][keep],
        "energies": energies[ok],
        "forces": forces[ok],
        "temperature_K": frames["temperature_K"][keep],
        "reason": [frames["reason"][i] for i in keep],
        "round": np.full(len(keep), number),
    }
    return entry, new


def _run_md(run: _Run, model, folder: Path, number: int) -> list[dict]:
    """The round's replicas (finished ones kept on resume); one row per run."""
    from .replicas import ModelSpec, Task, is_finished, run_tasks
    from .result import RunResult
    from .settings import RunSettings

    settings = run.settings
    spec = ModelSpec(name=f"round{number}", path=str(model.path))
    starts = _start_frames(run)
    tasks = []
    for t_index, temperature in enumerate(settings.temperatures):
        for replica in range(settings.replicas):
            run_dir = folder / f"{temperature:g}K_{replica:02d}"
            tasks.append(
                Task(
                    spec=spec,
                    replica=replica,
                    run_dir=str(run_dir),
                    atoms=starts[replica],
                    settings=RunSettings(
                        temperature_K=temperature,
                        n_steps=settings.n_steps,
                        timestep_fs=settings.timestep_fs,
                        seed=int(
                            np.random.SeedSequence(
                                [settings.seed, number, t_index, replica]
                            ).generate_state(1)[0]
                        ),
                        engine=settings.engine,
                        stride=settings.stride,
                    ),
                )
            )
    todo = [task for task in tasks if not is_finished(task.run_dir)]
    errors = run_tasks(todo, jobs=run.jobs, progress=_on_terminal(run.progress))
    if errors:
        raise RunError(f"exploration MD could not run: {errors[0]}")
    rows = []
    for task in tasks:
        result = RunResult.load(task.run_dir)
        rows.append(
            {
                "temperature_K": task.temperature_K,
                "replica": task.replica,
                "failed": bool(result.failed),
                "failure_time_ps": result.failure_time_ps,
                "trajectory": result.trajectory,
            }
        )
    return rows


def _on_terminal(progress: bool | None) -> bool:
    """``progress``, or when None whether stderr is a terminal."""
    import sys

    return sys.stderr.isatty() if progress is None else progress


def _start_frames(run: _Run) -> list:
    """One start frame per replica: the start model's training frames, seeded."""
    from ase import Atoms

    rng = np.random.default_rng([run.settings.seed, 0xE7])
    train = np.asarray(run.start.train_indices)
    replicas = run.settings.replicas
    picks = rng.choice(train, replicas, replace=len(train) < replicas)
    return [
        Atoms(numbers=run.dataset.numbers, positions=run.dataset.positions[i])
        for i in picks
    ]


def _harvest(run: _Run, model, runs: list[dict]) -> dict:
    """Every saved MD frame of the round with its flags and candidacy."""
    import ase.io

    positions, energies, temps, precursor = [], [], [], []
    for row in runs:
        path = row["trajectory"]
        frames = [] if path is None or not path.exists() else ase.io.read(path, ":")
        frames = [f for f in frames if np.isfinite(f.positions).all()]
        for k, atoms in enumerate(frames):
            energy = atoms.get_potential_energy() if atoms.calc else np.nan
            positions.append(atoms.positions)
            energies.append(energy if np.isfinite(energy) else np.nan)
            temps.append(row["temperature_K"])
            last = len(frames) - k <= run.settings.precursors
            precursor.append(row["failed"] and last)
    n_atoms = len(run.dataset.numbers)
    positions = np.asarray(positions, dtype=float).reshape(-1, n_atoms, 3)
    energies = np.asarray(energies, dtype=float)
    if len(positions):
        # a frame whose energy the model could not give sits in no energy level
        where = model.locate(
            positions,
            np.nan_to_num(energies, nan=float(np.nanmedian(run.dataset.energies))),
            run.settings.high_error_factor,
        )
        outside, high = where.outside_domain, where.high_error
    else:
        outside = high = np.zeros(0, bool)
    precursor = np.asarray(precursor, bool)
    reason = [
        "+".join(
            name
            for name, flag in (
                ("failure_precursor", p),
                ("outside_domain", o),
                ("high_error", h),
            )
            if flag
        )
        for p, o, h in zip(precursor, outside, high, strict=True)
    ]
    return {
        "positions": positions,
        "temperature_K": np.asarray(temps, dtype=float),
        "outside": np.asarray(outside, bool),
        "high_error": np.asarray(high, bool),
        "precursor": precursor,
        "candidate": precursor | outside | high,
        "reason": reason,
    }


def _thin(frames: dict, n: int, seed: int) -> np.ndarray:
    """At most ``n`` candidates: FPS over failure precursors first, then the rest."""
    from ase_flatten.selection.baselines import farthest_point_frames

    chosen = []
    for group in (
        np.flatnonzero(frames["precursor"]),
        np.flatnonzero(frames["candidate"] & ~frames["precursor"]),
    ):
        room = n - len(chosen)
        if room <= 0 or len(group) == 0:
            continue
        picked = farthest_point_frames(frames["positions"][group], room, seed)
        chosen.extend(group[picked].tolist())
    return np.asarray(chosen, dtype=int)


def _combined(run: _Run, added):
    """The start dataset followed by the labelled MD frames, and the training set."""
    from ase_flatten.data import Dataset

    dataset = run.dataset
    train = np.asarray(run.start.train_indices)
    if added is None:
        return dataset, train
    n = len(dataset)
    combined = Dataset(
        dataset.numbers,
        np.concatenate([dataset.positions, added["positions"]]),
        np.concatenate([dataset.energies, added["energies"]]),
        np.concatenate([dataset.forces, added["forces"]]),
        source=str(run.output / "dataset.extxyz"),
    )
    new = n + np.arange(len(added["energies"]))
    return combined, np.concatenate([train, new])


def _retrain(run: _Run, number: int, added, entry: dict, previous=None):
    """Train the start model's backend on the grown set; save it as round ``number``.

    With ``warm_start`` the fit continues from ``previous`` (the saved model the
    round ran with, read from its files also in an uninterrupted run).
    """
    from ase_flatten.backends import make_backend
    from ase_flatten.error_analysis import model_errors
    from ase_flatten.models import load_model, save_model

    start = run.start
    dataset, train = _combined(run, added)
    folder = run.work / "rounds" / f"r{number:02d}" / "model"
    if (folder / "model.json").exists():  # trained before an interruption
        return load_model(folder)
    backend = make_backend(
        start.meta["backend"],
        random_state=start.meta.get("random_state", 0),
        **start.meta["params"],
    )
    init = previous.backend if run.settings.warm_start and previous else None
    t0 = time.perf_counter()
    backend.fit(dataset, train, held_out=run.test, init_from=init)
    seconds = time.perf_counter() - t0
    entry["fit"] = {
        "warm_start": init is not None,
        "epochs": (getattr(backend, "history_", None) or {}).get("epochs"),
    }
    errors = None
    if len(run.test):
        labels = start.clusters.labels_
        errors = model_errors(backend, run.dataset, run.test, labels, progress=False)
        entry["test"] = {
            "force_rmse": errors.overall["force_rmse"],
            "energy_rmse": errors.overall["energy_rmse"],
            "max_cluster_force_rmse": float(np.nanmax(errors.force_rmse)),
        }
    save_model(
        folder,
        backend,
        train,
        dataset,
        clusters=start.clusters,
        cluster_errors=errors,
        # the start model's kind of domain, calibrated again on the grown data
        domain=getattr(start.domain, "kind", None),
        test_indices=run.test if len(run.test) else None,
        strategy="explore",
        seed=run.settings.seed,
        start_model=str(Path(start.path).resolve()),
        explored_frames=int(len(added["energies"])),
        test_fraction=start.meta.get("test_fraction"),
        split_seed=start.meta.get("split_seed"),
        train_seconds=round(seconds, 2),
        warm_start_from=_relative(previous.path, run.work) if init else None,
        test_force_rmse=errors.overall["force_rmse"] if errors else None,
    )
    entry["timings"]["train"] = seconds
    entry["n_train_after"] = int(len(train))
    return load_model(folder)


def _round_model(run: _Run, number: int):
    """The model round ``number`` runs with: the start model or a retrained one."""
    from ase_flatten.models import load_model

    for k in range(number, 0, -1):
        folder = run.work / "rounds" / f"r{k:02d}" / "model"
        if (folder / "model.json").exists():
            return load_model(folder)
    return run.start


def _relative(path, work: Path) -> str:
    """``path`` relative to the work folder when inside it (it is renamed later)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(work.resolve()))
    except ValueError:
        return str(path)


def _history(work: Path) -> list:
    path = work / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def _read_state(run: _Run):
    """History and labelled MD frames of the finished rounds (resume)."""
    from ase_flatten.data import dataset_from_frames, read_frames

    history = _history(run.work)
    path = run.work / "explored.extxyz"
    if not history or not path.exists():
        return history, None
    info = read_frames(path)  # read once: labels and the per-frame info
    frames = dataset_from_frames(info, str(path))
    added = {
        "positions": frames.positions,
        "energies": frames.energies,
        "forces": frames.forces,
        "temperature_K": np.array([a.info["temperature_K"] for a in info], float),
        "reason": [a.info["reason"] for a in info],
        "round": np.array([a.info["round"] for a in info], int),
    }
    return history, added


def _concat(added, new):
    if added is None:
        return new
    out = {}
    for key in new:
        if key == "reason":
            out[key] = added[key] + new[key]
        else:
            out[key] = np.concatenate([added[key], new[key]])
    return out


def _checkpoint(run: _Run, history: list, added) -> None:
    """The labelled MD frames first, then the history that commits the round."""
    from ase_flatten.data import Dataset
    from ase_flatten.files import write_json

    if added is not None:
        frames = Dataset(
            run.dataset.numbers,
            added["positions"],
            added["energies"],
            added["forces"],
            source=str(run.work / "explored.extxyz"),
        )
        frames.write(
            run.work / "explored.extxyz",
            config_type=[f"explore_{t:g}K" for t in added["temperature_K"]],
            temperature_K=added["temperature_K"],
            round=added["round"],
            reason=added["reason"],
        )
    write_json(run.work / "history.json", history)


def _publish_model(run: _Run, model, added) -> None:
    """Copy the last model's files (its test split too) into the folder itself;
    write the datasets."""
    from ase_flatten.models import MODEL_FILES

    for name in MODEL_FILES:
        source = Path(model.path) / name
        target = run.work / name
        if not source.exists():
            continue
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    dataset, _ = _combined(run, added)
    dataset.write(run.work / "dataset.extxyz")
