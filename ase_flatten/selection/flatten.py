"""The paper's iterative training-set selection ("Improving model", Fig. 1 and 3).

Each iteration trains the backend on the current training set, measures its force
error per coarse cluster on the selection pool, merges the clusters above the
threshold, re-clusters that union finely with Ward, and adds frames from the worst
fine clusters. A held-out test split is never selected; every reported error is on
it. The run directory is checkpointed after each iteration and can be resumed.

Run directory::

    config.json         every setting (a resume must match it)
    checkpoint.json     finished iterations and the training set after them
    history.json        per iteration: frames added and why, errors, timings
    clusters.npz        the coarse clusters of the dataset
    test_indices.npy    the test split (never selected; all errors are on it)
    warm/iteration_NN/  with ``warm_start``: the models of the last two finished
                        iterations; the next fit continues from the last (also
                        on resume; the final one only with ``warm_final``)
    ... and at the end the model directory files (model.json, model/,
    train_indices.npy, validation_indices.npy, cluster_errors.json), train.xyz and
    error_curves.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import clustering_options as options
from ..data import Dataset, write_reference_frames
from ..domain import DOMAIN_KINDS
from ..exceptions import InputError, naming_flags, option
from ..files import RunFolder, changed_settings, write_json
from ..parameters import check_choice
from ..signals import sigterm_as_interrupt
from . import picking
from .estimate import ESTIMATES
from .split import holdout_split

logger = logging.getLogger(__name__)

COMMAND = "ase-flatten select"  #: recorded in the run directory's output marker


@dataclass
class SelectionConfig:
    """Every setting of ``ase-flatten select``; defaults are the paper's but one.

    The error estimate: each coarse cluster's force error comes from at most
    ``error_sample`` = 10 of its frames (then the frames of the clusters above
    the threshold are predicted for the picks); ``error_sample=None`` predicts
    every pool frame, as the paper did. Measured on ethanol and uracil (sGDML,
    250 frames, 3 seeds): the final test errors stay within the seed spread of
    the full prediction's, at a quarter of the frames predicted.
    """

    backend: str = "sgdml"
    params: dict = field(default_factory=dict)
    init: int = 200
    step: int = 100
    iterations: int = 8
    factor: float = 1.1
    threshold: str = "overall"
    allocation: str = "worst"
    criterion: str = "error"
    pick: str = "fine"  #: beyond the paper: "fps" or "ranked" (picking.PICKS)
    n_geometry: int = options.N_GEOMETRY
    n_energy: int = options.N_ENERGY
    n_fine: int = 200
    subset_size: int = options.SUBSET_SIZE
    assign: str = options.ASSIGN
    descriptor: str = options.DESCRIPTOR
    reduce: str | None = None  #: reduces the descriptor of the coarse clusters
    n_components: int = options.N_COMPONENTS
    #: frames per coarse cluster behind its error estimate; None: the whole pool
    error_sample: int | None = 10
    #: unlabelled frames' errors (module estimate): "cluster" or "committee"
    error_estimate: str = "cluster"
    committee: int = 4  #: members of the error-estimate committee
    committee_subsample: float = 0.5  #: each member's share of the training set
    #: oracle calls for training frames at most (initial set, error estimates,
    #: picks; the test split is counted apart); None: no limit
    label_budget: int | None = None
    diverse_share: float = 0.0
    test_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    #: each iteration's fit after the first continues from the previous
    #: iteration's model with the backend's warm schedule (SchNet, MACE), or
    #: searches only the previous kernel width and its grid neighbours (sGDML)
    warm_start: bool = False
    #: with warm_start, the final model continues too (else it is trained from
    #: scratch on the final set: measured to matter for SchNet)
    warm_final: bool = False
    #: the applicability domain saved with the final model: "distance" or
    #: "quests" (:data:`ase_flatten.domain.DOMAIN_KINDS`)
    domain: str = "distance"

    def validate(self, n_pool: int, source: str) -> None:
        for name, choices in (
            ("threshold", picking.THRESHOLDS),
            ("allocation", picking.ALLOCATIONS),
            ("criterion", picking.CRITERIA),
            ("pick", picking.PICKS),
            ("assign", options.ASSIGN_RULES),
            ("descriptor", options.DESCRIPTORS),
            ("reduce", options.REDUCTIONS),
            ("error_estimate", ESTIMATES),
            ("domain", DOMAIN_KINDS),
        ):
            value = getattr(self, name)
            if not (name == "reduce" and value is None):
                check_choice(name, value, choices)
        if (
            min(self.init, self.step, self.n_fine, self.n_geometry, self.n_energy) < 1
            or min(self.subset_size, self.n_components) < 1
            or self.iterations < 0
        ):
            names = [
                option(name)
                for name in ("init", "step", "n_fine", "n_geometry", "n_energy")
            ]
            raise InputError(
                f"{', '.join(names)}, {option('subset_size')} and "
                f"{option('n_components', flag='--components')} must be >= 1"
            )
        if self.error_sample is not None and self.error_sample < 1:
            raise InputError(
                f"{option('error_sample')} must be >= 1 frame per cluster, got "
                f"{self.error_sample} ({_whole_pool()}: predict the whole pool)"
            )
        if not 0.0 <= self.diverse_share < 1.0:
            raise InputError(
                f"{option('diverse_share')} must be in [0, 1), got {self.diverse_share}"
            )
        self.check_before_data()
        if self.warm_final and not self.warm_start:
            raise InputError(
                f"{option('warm_final')} needs {option('warm_start', True)}"
            )
        if self.warm_start:
            from ..backends import backend_class

            if not backend_class(self.backend).supports_warm_start:
                raise InputError(
                    f"{option('warm_start')}: the {self.backend} backend cannot "
                    "continue from a previous model; it trains from scratch every "
                    "iteration"
                )
        final = self.init + self.step * self.iterations
        if final > n_pool:
            raise InputError(
                f"{source}: {self.init} + {self.iterations} x {self.step} = {final} "
                f"training frames, but only {n_pool} frames are outside the test split"
            )

    def check_before_data(self) -> None:
        """The checks that need no data, run before the pool is read: an
        error-estimate committee needs two members or more, and a label budget
        must pay at least for the initial set."""
        if self.error_estimate == "committee" and self.committee < 2:
            raise InputError(
                f"a committee of {self.committee} model has no disagreement to "
                "estimate errors by: give at least 2 members"
            )
        if not 0 < self.committee_subsample <= 1:
            raise InputError(
                "the committee members' share of the training set must be in "
                f"(0, 1], got {self.committee_subsample}"
            )
        if self.label_budget is not None and self.label_budget < self.init:
            raise InputError(
                f"{option('label_budget', self.label_budget)} is smaller than the "
                "initial set "
                f"({self.init} frames); give at least {self.init}"
            )


def _whole_pool() -> str:
    """The setting that predicts the whole pool: ``--error-sample 0`` in a command
    line, ``error_sample=None`` from Python."""
    return option("error_sample", 0) if naming_flags() else "error_sample=None"


@dataclass
class SelectionResult:
    """What a finished run produced."""

    train_indices: np.ndarray
    test_indices: np.ndarray
    history: list
    directory: Path


def run_selection(
    dataset: Dataset,
    config: SelectionConfig,
    directory: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    workers=None,
    labels=None,
) -> SelectionResult:
    """Run (or resume) the flattening loop and save the final model in ``directory``.

    Parameters
    ----------
    dataset : Dataset
    config : SelectionConfig
    directory : path
        Run directory; must be new or empty unless ``resume``.
    resume : bool
        Continue a run in ``directory`` after its last finished iteration. The
        configuration and dataset must match; the result is the one an
        uninterrupted run gives.
    progress : bool or None
        tqdm bar over iterations (None: when stderr is a terminal).
    workers : ase_flatten.dask_workers.WorkerPool, optional
        Predict the pool and the test split on Dask workers (``--dask``); the
        results are the in-process ones. Training and clustering stay here.
    labels : ase_flatten.pool.LabelledPool, optional
        Where the labels of ``dataset`` (its ``dataset``) come from when some are
        missing: the test split is labelled up front, then the initial set, the
        error sample of every iteration (``config.error_sample`` frames per
        coarse cluster, required) and the frames picked; nothing else. Union
        frames without a label take their coarse cluster's sampled error. With
        ``config.label_budget`` the estimates and picks stop when that many
        oracle calls (the test split apart) are spent, and the final model is
        trained on the frames labelled by then.
    """
    directory = Path(directory)
    test, pool = holdout_split(len(dataset), config.test_fraction, config.split_seed)
    config.validate(len(pool), dataset.source)
    if labels is not None and not labels.complete:
        _check_oracle_config(config, dataset.source)
    else:
        labels = None  # every frame labelled: the paper's loop as it is
        if config.label_budget is not None:
            raise InputError(
                f"{dataset.source}: a label budget needs frames without labels and an "
                "oracle to label them (--oracle); every frame here is labelled"
            )
    with contextlib.ExitStack() as held:  # the run folder's lock, until the end
        state = _start(dataset, config, directory, resume, test, pool, held, labels)
        run = _Run(
            dataset,
            config,
            directory,
            clusters=state["clusters"],
            X=state["descriptors"],
            test=state["test"],
            pool=state["pool"],
            train=state["train"],
            history=state["history"],
            workers=workers,
            labels=labels,
        )
        return _loop(run, progress)


def _check_oracle_config(config, source) -> None:
    """What a pool with unlabelled frames needs: an error sample, no energy levels."""
    if config.error_sample is None:
        raise InputError(
            f"{source}: frames without labels need an error sample per coarse cluster "
            "(error_sample / --error-sample K); every pool frame would be labelled"
        )
    if config.n_energy != 1:
        raise InputError(
            f"{source}: frames without labels have no energies for energy levels; "
            "use n_energy=1 (--n-energy 1)"
        )


@dataclass
class _Run:
    """A selection run as its steps see it: its inputs, its folder and its state.

    ``train``, ``history`` and ``previous`` change as the iterations finish; the
    rest is fixed when the run starts (or resumes).
    """

    dataset: Dataset
    config: SelectionConfig
    directory: Path
    clusters: object  #: TwoStageClustering of the dataset (the coarse clusters)
    X: np.ndarray  #: (M, D) descriptors of every frame
    test: np.ndarray  #: the test split, never selected
    pool: np.ndarray  #: the frames selection may take
    train: np.ndarray  #: the training set so far, sorted
    history: list  #: one entry per finished iteration
    workers: object | None = None  #: WorkerPool predicting on Dask workers
    labels: object | None = None  #: LabelledPool when frames lack labels
    previous: object | None = None  #: the last model, with ``warm_start``

    def budget_left(self) -> int | None:
        """Oracle calls left for training frames (None: no budget).

        Counted from the run's label store, so a resumed run counts what the
        first one paid; the test split's calls are not counted.
        """
        if self.config.label_budget is None or self.labels is None:
            return None
        from ..oracle import frame_keys

        keys = frame_keys(self.dataset.numbers, self.dataset.positions[self.test])
        for_test = sum(key in self.labels.store for key in keys)
        return max(0, self.config.label_budget - (len(self.labels.store) - for_test))


def _loop(run: _Run, progress) -> SelectionResult:
    """Iterations from the last checkpoint on, then the final model."""
    from tqdm.auto import tqdm

    config = run.config
    run.previous = _warm_model(run.directory, config, run.dataset, len(run.history))
    bar = tqdm(
        total=config.iterations + 1,
        initial=len(run.history),
        desc="flattening",
        unit="it",
        disable=None if progress is None else not progress,
    )
    with sigterm_as_interrupt(), bar:
        for iteration in range(len(run.history), config.iterations):
            if run.budget_left() == 0:
                logger.info("label budget of %d calls spent", config.label_budget)
                break
            entry, added, backend = _iteration(run, iteration)
            run.train = np.sort(np.concatenate([run.train, added]))
            run.history.append(entry)
            if config.warm_start:  # saved before the checkpoint commits it
                run.previous = _save_warm(run.directory, iteration, backend)
            _checkpoint(run.directory, run.train, run.history)
            bar.set_postfix(
                test_rmse=f"{entry['test']['force_rmse']:.4f}",
                worst=f"{entry['test']['max_cluster_force_rmse']:.4f}",
            )
            bar.update()
        final = _finish(run)
        bar.update()
    return SelectionResult(run.train, run.test, run.history + [final], run.directory)


# -- the steps ---------------------------------------------------------------------


def _train(run: _Run, previous=None):
    """A backend trained on ``run.train``; its validation frames avoid the test
    split (and frames without labels). With ``previous`` it continues from that
    model."""
    from ..backends import make_backend

    config, labels = run.config, run.labels
    backend = make_backend(config.backend, random_state=config.seed, **config.params)
    held_out = run.test if labels is None else np.union1d(run.test, labels.unusable())
    start = time.perf_counter()
    backend.fit(run.dataset, run.train, held_out=held_out, init_from=previous)
    return backend, time.perf_counter() - start


def _fit_facts(backend, previous) -> dict:
    """What the history records of a fit: warm or cold, and its epochs."""
    history = getattr(backend, "history_", None) or {}
    return {"warm_start": previous is not None, "epochs": history.get("epochs")}


def _warm_folder(directory: Path, iteration: int) -> Path:
    return directory / "warm" / f"iteration_{iteration:02d}"


def _save_warm(directory: Path, iteration: int, backend):
    """Save iteration ``iteration``'s model for the next fit; drop older ones.

    Written beside its place and renamed in. The previous iteration's model
    stays until the next save: until the checkpoint commits this iteration, a
    resume redoes it from that one. Returns ``backend``.
    """
    import os
    import shutil

    from ..files import sibling_directory

    target = _warm_folder(directory, iteration)
    staging = sibling_directory(target)
    try:
        backend.save(staging)
        if target.exists():  # this iteration ran before an interruption
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in target.parent.glob("iteration_*"):
        if old.name < _warm_folder(directory, iteration - 1).name:
            shutil.rmtree(old)
    return backend


def _warm_model(directory: Path, config, dataset, done: int):
    """With ``warm_start``, the model of iteration ``done - 1``; else None."""
    from ..backends import backend_class

    if not config.warm_start or done == 0:
        return None
    folder = _warm_folder(directory, done - 1)
    if not folder.is_dir():
        raise InputError(
            f"{folder}: missing; a warm-started run continues from the model of "
            f"its last finished iteration ({done - 1}); start the run again in "
            "another folder"
        )
    return backend_class(config.backend).load(
        folder, dataset.numbers, config.params, random_state=config.seed
    )


def _predictor(backend, workers):
    """The trained backend, or with --dask its saved copy on the Dask workers."""
    return backend if workers is None else workers.predictor(backend)


def _frame_mse(backend, dataset, frames):
    """Per-frame mean squared force error, and the predictions."""
    energies, forces = backend.predict(dataset, frames, progress=False)
    diff = (forces - dataset.forces[frames]).reshape(len(frames), -1)
    return np.mean(diff**2, axis=1), energies, forces


@dataclass
class _Errors:
    """What an iteration measured on the pool, and the high-error union it found."""

    candidates: np.ndarray  #: pool frames not trained on (without failed labels)
    evaluated: np.ndarray  #: the frames whose errors were measured
    mse: np.ndarray  #: (M,) per-frame mean squared force error, NaN: unknown
    coarse: np.ndarray | None = None  #: force RMSE per coarse cluster (eV/Å)
    #: the pool's force RMSE: over the evaluated frames, or with an error
    #: sample the clusters' estimates weighted by their candidates
    overall: float = float("nan")
    high: np.ndarray | None = None  #: the high-error coarse clusters
    limit: float | None = None  #: the threshold they exceed
    union: np.ndarray | None = None  #: candidates in the high-error clusters
    predicted: int = 0  #: frames the model predicted (the sample, then the union)


def _iteration(run: _Run, iteration: int):
    """One round: train (from ``run.previous``'s weights when given), measure, pick.

    Returns the history entry, the new frames and the trained backend.
    """
    rng = np.random.default_rng([run.config.seed, iteration])
    # the error sample has a stream of its own: with and without --error-sample
    # the fine clusters and picks draw the same random numbers
    sample_rng = np.random.default_rng([run.config.seed, iteration, 0x5A3])
    trained, t_train = _train(run, run.previous)
    backend = _predictor(trained, run.workers)

    # 2. errors on the pool (or a sample of each cluster) and on the test split
    start = time.perf_counter()
    found = _measure(run, backend, sample_rng)
    test_report = _test_errors(backend, run.dataset, run.test, run.clusters.labels_)
    t_predict = time.perf_counter() - start

    # 3-5. high-error union, fine clusters, frames to add
    start = time.perf_counter()
    _high_error_union(run, found)
    missing = found.union[np.isnan(found.mse[found.union])]
    t_select = time.perf_counter() - start
    start = time.perf_counter()
    if len(missing) and run.labels is not None:
        # unlabelled frames: an estimate (module estimate), no label bought
        if run.config.error_estimate != "cluster":
            # the committee draws from a generator of its own; the picks go on
            # drawing from it
            rng = np.random.default_rng([run.config.seed, iteration, 1])
        _estimate_missing(run, found, missing, rng)
        t_select += time.perf_counter() - start
    elif len(missing):  # --error-sample: errors of the union frames are needed now
        found.mse[missing] = _frame_mse(backend, run.dataset, missing)[0]
        t_predict += time.perf_counter() - start
        found.predicted += len(missing)
    start = time.perf_counter()
    added, fine, diverse = _choose(run, found, rng)
    t_select += time.perf_counter() - start
    if run.labels is not None:  # the picked frames are labelled; failures dropped
        added = run.labels.ensure(added, "added")

    entry = {
        "iteration": iteration,
        "n_train": int(len(run.train)),
        "added": added.tolist(),
        "why": {
            "threshold": found.limit,
            "pool_force_rmse": found.overall,
            "high_clusters": found.high.tolist(),
            "union_frames": int(len(found.union)),
            "n_fine": fine["n_fine"],
            "added_fine_cluster": fine["cluster"],
            "added_fine_cluster_rmse": fine["rmse"],
            "added_frame_rmse": np.sqrt(found.mse[added]).tolist(),
            "evaluated_frames": int(len(found.evaluated)),
            "predicted_frames": int(found.predicted),  # the sample and the union
            "diverse_frames": diverse.tolist(),
        },
        "pool_cluster_force_rmse": _nan_to_none(found.coarse),
        "test": test_report,
        "timings": {"train": t_train, "predict": t_predict, "select": t_select},
        "fit": _fit_facts(trained, run.previous),
    }
    if run.labels is not None:
        entry["labels_paid"] = {**run.labels.spent, "calls": run.labels.calls()}
    _log_iteration(entry, found)
    return entry, added, trained


def _measure(run: _Run, backend, rng) -> _Errors:
    """The candidates and the squared force errors of those evaluated: every
    candidate, or ``error_sample`` per coarse cluster (with an oracle, frames
    labelled before come first; the rest is paid for, within the budget)."""
    config, oracle_labels = run.config, run.labels
    labels = run.clusters.labels_
    candidates = np.setdiff1d(run.pool, run.train)
    if oracle_labels is None:
        evaluated = _error_sample(candidates, labels, config.error_sample, rng)
    else:  # frames labelled before come first; the rest is paid for (and kept)
        labelled = oracle_labels.labelled
        evaluated = _error_sample(
            candidates, labels, config.error_sample, rng, prefer=labelled
        )
        left = run.budget_left()
        if left is not None:  # labelled frames of the sample are free
            paid = np.flatnonzero(~labelled[evaluated])
            evaluated = np.delete(evaluated, paid[left:])
        evaluated = oracle_labels.ensure(evaluated, "estimate")
        candidates = candidates[~oracle_labels.failed[candidates]]
    mse = np.full(len(run.dataset), np.nan)  # per-frame squared force error
    mse[evaluated] = _frame_mse(backend, run.dataset, evaluated)[0]
    return _Errors(candidates, evaluated, mse, predicted=len(evaluated))


def _high_error_union(run: _Run, found: _Errors) -> None:
    """The coarse clusters above the threshold and their candidates, in
    ``found``."""
    config, labels = run.config, run.clusters.labels_
    k = run.clusters.n_clusters_
    ev_mse = found.mse[found.evaluated]
    found.coarse = picking.cluster_rmse(labels[found.evaluated], ev_mse, k)
    per_cluster = np.bincount(labels[found.candidates], minlength=k)
    if config.error_sample is None:
        found.overall = float(np.sqrt(ev_mse.mean()))
    else:  # a sample per cluster: each cluster weighs as many frames as it has
        found.overall = picking.weighted_overall_rmse(found.coarse, per_cluster)
    found.high, found.limit = picking.high_error_union(
        found.coarse,
        found.overall,
        config.factor,
        config.threshold,
        per_cluster,
        config.step,
    )
    candidates = found.candidates
    found.union = candidates[np.isin(labels[candidates], found.high)]


def _estimate_missing(run: _Run, found: _Errors, missing, rng) -> None:
    """Squared force errors of the ``missing`` union frames, which have no
    label: their coarse cluster's sampled error, or a committee's estimate
    (drawing from ``rng``)."""
    config = run.config
    if config.error_estimate == "cluster":
        labels = run.clusters.labels_
        found.mse[missing] = np.nan_to_num(found.coarse[labels[missing]]) ** 2
        return
    held_out = np.union1d(run.test, run.labels.unusable())
    found.mse[missing] = _committee_mse(
        config,
        run.dataset,
        (run.train, held_out),
        rng,
        missing,
        found.evaluated,
        found.mse,
    )


def _choose(run: _Run, found: _Errors, rng):
    """The frames to add: by the error rules, then ``diverse_share`` of the step
    by farthest-point sampling; the step shrinks to the label budget left.

    Returns the frames, the fine clusters they came from and the diverse ones.
    """
    config = run.config
    step = config.step
    left = run.budget_left()
    if left is not None:
        step = min(step, left)
    n_diverse = round(config.diverse_share * step)
    n_error = step - n_diverse
    if step == 0:  # the label budget is spent: nothing more to pick
        added, fine = np.empty(0, int), {"n_fine": 0, "cluster": [], "rmse": []}
    elif config.pick == "fine":
        union, energies = found.union, run.dataset.energies
        added, fine = _pick(config, run.X, energies, union, found.mse, rng, n_error)
    else:
        added, fine = _pick_frames(run, found, n_error)
    diverse = picking.spread_frames(
        run.X, np.setdiff1d(found.candidates, added), [run.train, added], n_diverse
    )
    return np.concatenate([added, diverse]), fine, diverse


def _log_iteration(entry: dict, found: _Errors) -> None:
    test, timings = entry["test"], entry["timings"]
    logger.info(
        "iteration %d: %d frames, test force RMSE %.4f (worst cluster %.4f) eV/Å; "
        "%d high-error clusters, %d frames re-clustered into %d; train %.1f s, "
        "predict %.1f s, select %.2f s",
        entry["iteration"],
        entry["n_train"],
        test["force_rmse"],
        test["max_cluster_force_rmse"],
        len(found.high),
        len(found.union),
        entry["why"]["n_fine"],
        timings["train"],
        timings["predict"],
        timings["select"],
    )


def _committee_mse(config, dataset, split, rng, missing, measured, mse):
    """Squared force errors of the ``missing`` frames from a committee's
    deviations (module estimate), calibrated on the ``measured`` frames.
    ``split`` is the training set and the frames no member may validate on."""
    from ..backends import make_backend
    from .estimate import calibrated, committee_deviation

    def new_backend(seed):
        return make_backend(config.backend, random_state=seed, **config.params)

    train, held_out = split
    measured = measured[np.isfinite(mse[measured])]
    frames = np.concatenate([measured, missing])
    deviation = committee_deviation(
        dataset,
        train,
        frames,
        new_backend,
        config.committee,
        config.committee_subsample,
        rng,
        held_out,
    )
    known = np.arange(len(frames)) < len(measured)
    return calibrated(deviation, known, mse[frames])[len(measured) :]


def _error_sample(candidates, labels, k, rng, prefer=None):
    """All candidates, or at most ``k`` random ones per coarse cluster.

    ``prefer`` (bool per frame, e.g. labelled): those frames are taken first,
    in random order, then the others.
    """
    if k is None:
        return candidates
    chosen = []
    for c in np.unique(labels[candidates]):
        members = candidates[labels[candidates] == c]
        if prefer is None:
            chosen.append(rng.choice(members, min(k, len(members)), replace=False))
            continue
        order = rng.permutation(members)
        order = order[np.argsort(~prefer[order], kind="stable")]
        chosen.append(order[:k])
    return np.sort(np.concatenate(chosen))


def _pick_frames(run: _Run, found: _Errors, step: int):
    """``--pick fps`` or ``ranked``: frames chosen directly, no fine clusters."""
    X, train, mse = run.X, run.train, found.mse
    if run.config.pick == "fps":
        rmse = np.sqrt(mse[found.union])
        added = picking.farthest_high_error(
            X, found.union, rmse, found.limit, train, step
        )
    else:  # every candidate whose error was measured
        measured = found.candidates[np.isfinite(mse[found.candidates])]
        rmse = np.sqrt(mse[measured])
        added = picking.ranked_with_diversity(X, measured, rmse, train, step)
    return added, {"n_fine": 0, "cluster": [], "rmse": []}


def _pick(config, X, energies, union, mse, rng, step=None):
    """Fine Ward clusters of the union and the frames to take from them
    (``step``, default ``config.step``)."""
    from ..clustering import TwoStageClustering, cluster_features, count_distinct

    n_fine = min(config.n_fine, count_distinct(X[union]))
    fine_model = TwoStageClustering(
        n_geometry=n_fine,
        n_energy=1,
        subset_size=max(config.subset_size, n_fine),
        assign=config.assign,
        descriptor=config.descriptor,  # unreduced: a small set of frames
        random_state=int(rng.integers(2**31)),
    )
    # one energy level: the energy plays no part (NaN where a pool is unlabelled)
    features = cluster_features(X[union], np.nan_to_num(energies[union]))
    fine_labels = fine_model.fit(features).geometry_labels_
    frame_mse = mse[union]
    sizes = np.bincount(fine_labels, minlength=n_fine)
    rmse = picking.cluster_rmse(fine_labels, frame_mse, n_fine)
    squared = np.bincount(fine_labels, frame_mse, minlength=n_fine)
    step = config.step if step is None else step
    counts = picking.allocate(config.allocation, step, sizes, rmse, squared)
    added, cluster_of = [], []
    worst_first = np.argsort(-np.nan_to_num(rmse, nan=-np.inf), kind="stable")
    for c in worst_first[counts[worst_first] > 0]:
        inside = fine_labels == c
        picked = picking.pick_in_cluster(
            config.criterion,
            union[inside],
            counts[c],
            frame_mse[inside],
            X[union][inside],
            rng,
        )
        added.extend(picked.tolist())
        cluster_of.extend([int(c)] * len(picked))
    info = {
        "n_fine": int(n_fine),
        "cluster": cluster_of,
        "rmse": [float(rmse[c]) for c in cluster_of],
    }
    return np.asarray(added, dtype=int), info


def _test_errors(backend, dataset, test, labels) -> dict:
    from ..error_analysis import model_errors

    return _errors_entry(model_errors(backend, dataset, test, labels, progress=False))


def _errors_entry(errors) -> dict:
    """Test errors of one model, the worst cluster with its frames and intervals."""
    worst = int(errors.worst(1)[0])
    interval = errors.bootstrap(seed=0)
    return {
        "force_rmse": errors.overall["force_rmse"],
        "energy_rmse": errors.overall["energy_rmse"],
        "max_cluster_force_rmse": float(np.nanmax(errors.force_rmse)),
        "max_cluster": worst,
        "max_cluster_frames": int(errors.n_frames[worst]),
        "test_frames": int(len(errors.labels)),
        **{f"{key}_ci95": list(value) for key, value in interval.items()},
        "cluster_force_rmse": _nan_to_none(errors.force_rmse),
    }


def _nan_to_none(values) -> list:
    return [None if not np.isfinite(v) else float(v) for v in values]


# -- run directory -----------------------------------------------------------------


def _start(dataset, config, directory, resume, test, pool, held, labels=None) -> dict:
    """Create the run directory, or read it back on resume; lock it in ``held``.

    With ``labels`` (a pool with unlabelled frames) the test split and the
    training frames are labelled here (from the label store on resume); frames the
    oracle fails on leave both.
    """
    from ..descriptors import pairwise_distances

    settings = {"config": dataclasses.asdict(config), "dataset": dataset.fingerprint()}
    X = pairwise_distances(dataset.positions, kind=config.descriptor)
    held.enter_context(RunFolder.in_place(directory, COMMAND, resume))
    if resume:
        state = _resume(directory, settings, len(dataset))
        train = state["train"]
        if labels is not None:
            test = labels.ensure(test, "test")
            train = labels.ensure(train, "initial")
    else:
        energies = dataset.energies
        if labels is not None:  # no energy levels (n_energy=1): energies unknown
            energies = np.zeros(len(dataset))
            test = labels.ensure(test, "test")
        state = _begin(dataset, config, directory, X, energies, test)
        write_json(directory / "config.json", settings)
        rng = np.random.default_rng([config.seed, 0x1417])
        train = np.sort(rng.choice(pool, config.init, replace=False))
        if labels is not None:
            train = labels.ensure(train, "initial")
        _checkpoint(directory, train, [])
    return {**state, "descriptors": X, "train": train, "test": test, "pool": pool}


def _resume(directory: Path, settings: dict, n_frames: int) -> dict:
    """The clusters, training set and history of the run to resume in ``directory``;
    its settings must be ``settings``."""
    from ..clustering import load_clusters

    saved = _read_json(directory / "config.json", "no run to resume")
    if not isinstance(saved.get("config"), dict):
        raise InputError(f"{directory / 'config.json'}: damaged (no settings)")
    # a setting added later is missing in older runs: its default is what
    # they did (every new field's default keeps the old behaviour)
    saved["config"] = {**dataclasses.asdict(SelectionConfig()), **saved["config"]}
    if saved != json.loads(json.dumps(settings)):
        changed = changed_settings(settings["config"], saved["config"])
        hint = ""
        if "error_sample" in changed and saved["config"]["error_sample"] is None:
            # started before the sample was the default, or with 0
            hint = f" ({_whole_pool()}: the whole pool, as it was started)"
        raise InputError(
            f"{directory}: was started with other settings "
            f"({', '.join(changed) if changed else 'the dataset'}); resume "
            f"with the same command{hint}"
        )
    checkpoint = _read_checkpoint(directory / "checkpoint.json", n_frames)
    done = checkpoint["completed_iterations"]
    history = _read_json(directory / "history.json", "no history", list)
    if len(history) < done:
        raise InputError(
            f"{directory / 'history.json'}: {len(history)} iterations, but the "
            f"checkpoint has {done}"
        )
    history = history[:done]
    _check_history(directory / "history.json", history)
    clusters = load_clusters(directory / "clusters.npz")[0]
    logger.info("resuming %s after iteration %d", directory, done - 1)
    return {
        "clusters": clusters,
        "train": np.asarray(checkpoint["train_indices"], dtype=int),
        "history": history,
    }


def _begin(dataset, config, directory: Path, X, energies, test) -> dict:
    """Cluster the dataset and write the data files of a new run."""
    from ..clustering import TwoStageClustering, cluster_features
    from ..models import write_data_files

    clusters = TwoStageClustering(
        n_geometry=config.n_geometry,
        n_energy=config.n_energy,
        subset_size=config.subset_size,
        assign=config.assign,
        descriptor=config.descriptor,
        reduce=config.reduce,
        n_components=config.n_components,
        random_state=config.seed,
    ).fit(cluster_features(X, energies))
    # the final model's data files, written once: a resume reads the clusters
    write_data_files(directory, dataset, clusters, test)
    return {"clusters": clusters, "history": []}


def _checkpoint(directory: Path, train: np.ndarray, history: list) -> None:
    """History first, then the checkpoint that commits the iteration."""
    write_json(directory / "history.json", history)
    write_json(
        directory / "checkpoint.json",
        {"completed_iterations": len(history), "train_indices": train.tolist()},
    )


def _finish(run: _Run) -> dict:
    """Train the final model (from the last iteration's with ``warm_final``),
    evaluate it, save model, frames and plots."""
    from ..error_analysis import model_errors
    from ..plots import plot_error_curves

    dataset, config, labels = run.dataset, run.config, run.labels
    previous = run.previous if config.warm_final else None
    backend, t_train = _train(run, previous)
    errors = model_errors(
        _predictor(backend, run.workers),
        dataset,
        run.test,
        run.clusters.labels_,
        progress=False,
    )
    final = {
        "iteration": "final",
        "n_train": int(len(run.train)),
        "test": _errors_entry(errors),
    }
    final["timings"] = {"train": t_train}
    final["fit"] = _fit_facts(backend, previous)
    if labels is not None:
        final["labels_paid"] = {
            **labels.spent,
            "calls": labels.calls(),
            "in_store": len(labels.store),  # every call of this run, resumes included
        }
        if config.label_budget is not None:
            final["labels_paid"]["budget"] = config.label_budget
            final["labels_paid"]["budget_left"] = run.budget_left()
        # every label paid for, reusable for any other model
        dataset.write(
            run.directory / "labelled.extxyz", np.flatnonzero(labels.labelled)
        )
    _save_final(run, backend, errors)
    history = run.history + [final]
    write_json(run.directory / "history.json", history)
    plot_error_curves(history, run.directory / "error_curves.png")
    logger.info(
        "final model: %d frames, test force RMSE %.4f eV/Å, worst cluster %.4f eV/Å",
        len(run.train),
        final["test"]["force_rmse"],
        final["test"]["max_cluster_force_rmse"],
    )
    return final


def _save_final(run: _Run, backend, errors) -> None:
    """The final model in the run folder, its training frames in ``train.xyz``."""
    from ..models import save_model

    config = run.config
    save_model(
        run.directory,
        backend,
        run.train,
        run.dataset,
        clusters=run.clusters,
        cluster_errors=errors,
        domain=config.domain,
        overwrite=True,
        keep_data_files=True,  # clusters.npz and test_indices.npy, from _start
        strategy="flatten",
        seed=config.seed,
        test_fraction=config.test_fraction,
        split_seed=config.split_seed,
        test_force_rmse=errors.overall["force_rmse"],
    )
    write_reference_frames(
        run.dataset,
        run.directory / "train.xyz",
        run.train,
        frame_reasons(run.train, run.history),
    )


def frame_reasons(train, history: list) -> np.ndarray:
    """Why each training frame was picked, MACE's ``config_type`` of it.

    ``initial`` (the random start), ``flatten_iterN`` (added from the high-error
    clusters in the ``history.json`` entry of iteration N) or ``diverse_iterN``
    (``--diverse-share``'s farthest-point frames of that iteration).
    """
    reasons = {int(i): "initial" for i in train}
    for entry in history:
        if not isinstance(entry, dict) or entry.get("iteration") == "final":
            continue
        diverse = set((entry.get("why") or {}).get("diverse_frames") or [])
        for i in entry.get("added") or []:
            kind = "diverse" if i in diverse else "flatten"
            reasons[int(i)] = f"{kind}_iter{entry['iteration']}"
    return np.array([reasons[int(i)] for i in train])


def _read_json(path: Path, what: str, kind: type = dict):
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: {what} (missing file)") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, kind):
        raise InputError(f"{path}: damaged (a JSON {type(data).__name__})")
    return data


def _check_history(path: Path, history: list) -> None:
    """Refuse a damaged ``history.json``: what the loop, the plot and the summary
    read from every finished iteration must be there."""

    def number(value, none=False) -> bool:
        if value is None:
            return none
        return isinstance(value, int | float) and not isinstance(value, bool)

    for k, entry in enumerate(history):
        test = entry.get("test") if isinstance(entry, dict) else None
        ok = (
            isinstance(test, dict)
            and isinstance(entry.get("n_train"), int)
            and "iteration" in entry
            and all(
                number(test.get(key))
                for key in ("force_rmse", "energy_rmse", "max_cluster_force_rmse")
            )
            and isinstance(test.get("cluster_force_rmse"), list)
            and all(number(v, none=True) for v in test["cluster_force_rmse"])
        )
        if not ok:
            raise InputError(
                f"{path}: damaged (iteration {k} lacks its test errors); start the "
                "run again in another folder"
            )


def _read_checkpoint(path: Path, n_frames: int) -> dict:
    checkpoint = _read_json(path, "no checkpoint")
    done, train = (
        checkpoint.get("completed_iterations"),
        checkpoint.get("train_indices"),
    )
    if (
        not isinstance(done, int)
        or done < 0
        or not isinstance(train, list)
        or not all(isinstance(i, int) and 0 <= i < n_frames for i in train)
    ):
        raise InputError(f"{path}: damaged (iterations or training frames)")
    return checkpoint
