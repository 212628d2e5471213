"""Replicas as tasks: one MD run per model x temperature x replica, in parallel.

Each task runs in a worker process started with the ``spawn`` method (forking a
process that holds torch's threads is unsafe), or with ``--dask`` as one task on
the workers of a Dask scheduler. A worker loads each model once
(:data:`_FACTORIES`), runs BLAS, OpenMP and torch on one thread, and writes the
run into its own folder, ``run.json`` last. A task's result depends only on the
task (its seed is ``seed + replica``), never on the number or kind of workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import signal
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms
from tqdm.auto import tqdm

from ase_flatten.backends.ase import import_factory

from .processes import terminate
from .result import RUN_FILE
from .settings import RunSettings

logger = logging.getLogger(__name__)

__all__ = [
    "ModelSpec",
    "Task",
    "default_jobs",
    "is_finished",
    "run_tasks",
    "run_tasks_on_dask",
]

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class ModelSpec:
    """How a worker builds a calculator: a saved model directory or a factory.

    Parameters
    ----------
    name : str
        The model's name in outputs.
    path : str, optional
        A model directory written by ``ase-flatten train`` or ``select``.
    factory : str, optional
        ``module:callable`` returning an ASE calculator (e.g. ``tblite.ase:TBLite``).
    kwargs : dict
        Keyword arguments of ``factory``.
    """

    name: str
    path: str | None = None
    factory: str | None = None
    kwargs: dict = field(default_factory=dict)

    def key(self) -> str:
        """What identifies the calculator (for the per-process cache)."""
        if self.path is not None:
            return f"path:{Path(self.path).resolve()}"
        return f"factory:{self.factory}:{json.dumps(self.kwargs, sort_keys=True)}"

    def describe(self) -> dict:
        """JSON-able description (for the run's marker file and reports)."""
        if self.path is not None:
            return {"name": self.name, "path": str(Path(self.path).resolve())}
        return {"name": self.name, "factory": self.factory, "kwargs": self.kwargs}

    def calculator_factory(self):
        """A zero-argument callable building a fresh calculator."""
        if self.path is not None:
            from .single_run import calculator_factory

            return calculator_factory(self.path)
        function = import_factory(self.factory)
        kwargs = dict(self.kwargs)
        return lambda: function(**kwargs)


@dataclass
class Task:
    """One MD run: a model at a temperature, one seeded replica, its folder.

    ``settings`` is everything the run does (temperature, steps and seed
    included); ``log_every_ps`` only how often it logs where it is.
    """

    spec: ModelSpec
    replica: int
    run_dir: str
    atoms: Atoms
    settings: RunSettings
    log_every_ps: float = 0.0

    @property
    def temperature_K(self) -> float:
        return self.settings.temperature_K

    @property
    def label(self) -> str:
        return f"{self.spec.name} {self.temperature_K:g} K #{self.replica}"


def is_finished(run_dir: str | Path) -> bool:
    """A run folder is finished when its ``run.json`` exists (written last)."""
    return (Path(run_dir) / RUN_FILE).exists()


def default_jobs() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Per worker process: model key -> calculator factory (each model loads once).
_FACTORIES: dict = {}


def _one_thread() -> None:
    """Run BLAS/OpenMP (and torch, once imported) on a single thread."""
    import sys

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


#: Set in a worker process once a run there was interrupted (Ctrl-C, or the
#: parent's stop): the tasks already queued for it then return without running.
_STOPPING = False


def _init_worker(log_level: int) -> None:
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    _one_thread()
    logging.basicConfig(
        level=log_level, format="%(levelname)s %(name)s: %(message)s", force=True
    )
    # Ctrl-C interrupts a run (see _run_pool_task), not an idle worker waiting
    # for its next task, which would die with a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_pool_task(task: Task) -> str | None:
    """:func:`_run_task` in a worker process: interruptible, once.

    The executor hands a worker the next queued task as soon as the last one
    returns, even after the parent began to stop (queued tasks cannot be
    cancelled). A worker whose run was interrupted therefore starts nothing
    more: an i-PI server started then would outlive the stop.
    """
    global _STOPPING
    if _STOPPING:
        return "not run: interrupted"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _run_task(task)
    except KeyboardInterrupt:
        _STOPPING = True
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_task(task: Task) -> str | None:
    """Run one task in a worker; returns an error text, or None on success."""
    from .single_run import run_md

    try:
        key = task.spec.key()
        if key not in _FACTORIES:
            _FACTORIES[key] = task.spec.calculator_factory()
            _one_thread()
        run_dir = Path(task.run_dir)
        if run_dir.exists():  # an unfinished folder of an interrupted run
            shutil.rmtree(run_dir)
        run_md(
            _FACTORIES[key],
            task.atoms,
            outdir=run_dir,
            label=task.label,
            settings=task.settings,
            log_every_ps=task.log_every_ps,
        )
    except Exception as exc:  # reported by the parent, the other tasks go on
        logger.debug("%s", task.label, exc_info=True)
        return f"{type(exc).__name__}: {exc}"
    return None


def run_tasks(
    tasks: list[Task], jobs: int = 1, progress: bool = False, client=None
) -> list[str]:
    """Run ``tasks`` on ``jobs`` worker processes, or on Dask workers.

    Parameters
    ----------
    tasks : list of Task
        Runs to do; each writes its own folder.
    jobs : int
        Worker processes (at most one per task).
    progress : bool
        A tqdm bar over finished runs.
    client : distributed.Client, optional
        Run each task as one Dask task instead (``jobs`` is then unused); the
        workers must see the model and output folders.

    Returns
    -------
    list of str
        ``"<label>: <error>"`` for every task that raised instead of finishing;
        the other tasks still ran.
    """
    if not tasks:
        return []
    if client is not None:
        return run_tasks_on_dask(client, tasks, progress)
    errors = []
    previous = signal.signal(signal.SIGTERM, _interrupt)
    pool = ProcessPoolExecutor(
        max_workers=max(1, min(jobs, len(tasks))),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(logging.getLogger().getEffectiveLevel(),),
    )
    try:
        futures = {pool.submit(_run_pool_task, task): task for task in tasks}
        done = as_completed(futures)
        for future in tqdm(done, total=len(tasks), unit="run", disable=not progress):
            task = futures[future]
            try:
                error = future.result()
            except BrokenProcessPool as exc:
                error = f"worker process died ({exc})"
            if error:
                logger.error("%s: %s", task.label, error)
                errors.append(f"{task.label}: {error}")
    except BaseException:
        # Ctrl-C, SIGTERM or a crash here: stop the workers now (finished runs
        # stay saved); SIGINT first so that an engine cleans up (i-PI, sockets)
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        _stop(workers)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    pool.shutdown()
    return errors


def run_tasks_on_dask(client, tasks: list[Task], progress: bool = False) -> list[str]:
    """Each task as one Dask task; returns the errors as :func:`run_tasks` does.

    A task whose worker is lost is rerun on another worker by the scheduler (up
    to its ``distributed.scheduler.allowed-failures``), one that raises is retried
    twice; a replica that fails (its MD broke, its model raised) is a result, not
    an error. Finished runs are in their folders whatever happens to the others.
    """
    from distributed import as_completed

    futures = {}
    for task in tasks:
        task = _absolute(task)
        key = (
            f"md-{task.spec.name}-{task.temperature_K:g}K-replica{task.replica}-"
            f"{uuid.uuid4().hex[:8]}"
        )
        futures[client.submit(_run_task, task, key=key, pure=False, retries=2)] = task
    errors = []
    try:
        done = as_completed(futures)
        for future in tqdm(done, total=len(tasks), unit="run", disable=not progress):
            task = futures[future]
            try:
                error = future.result()
            except Exception as exc:  # e.g. KilledWorker: lost on too many workers
                error = f"lost on the Dask workers ({type(exc).__name__}: {exc})"
            if error:
                logger.error("%s: %s", task.label, error)
                errors.append(f"{task.label}: {error}")
    except BaseException:  # Ctrl-C, SIGTERM: drop what has not started
        client.cancel(list(futures), force=True)
        raise
    return errors


def _absolute(task: Task) -> Task:
    """The task with absolute paths: a worker may run in another folder."""
    spec = task.spec
    if spec.path is not None:
        spec = dataclasses.replace(spec, path=str(Path(spec.path).resolve()))
    run_dir = str(Path(task.run_dir).resolve())
    return dataclasses.replace(task, spec=spec, run_dir=run_dir)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop(processes, grace_s: float = 10.0) -> None:
    """Interrupt worker processes, then terminate, then kill those still running."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(grace_s)
        # then SIGTERM (a run cleans up as on Ctrl-C), then SIGKILL
        terminate(process, f"worker {process.pid}", grace_s)
