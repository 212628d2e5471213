"""Past one machine: predictions on Dask workers (``--dask ADDRESS|local:N``).

The embarrassingly parallel work of a run (the pool and test predictions of
``select`` and ``errors``, the replicas of ``md-validate``, the training runs of
the benchmark suite) can go to the workers of a Dask scheduler instead of this
process:

* ``--dask tcp://host:8786`` uses a running scheduler (one that ``dask scheduler``
  or dask-jobqueue started); an address nobody answers at fails within
  :data:`CONNECT_TIMEOUT_S` seconds with one line;
* ``--dask local:N`` starts a :class:`distributed.LocalCluster` of N worker
  processes (one thread each) for the run.

A model goes to the workers as the path of its files, never as a pickled object:
the workers read it from a filesystem they share with this process (as on a
cluster), each worker once per model (:func:`_worker_backend` keeps it). Frames
go in chunks of whole prediction batches, so every frame is predicted in the same
batch as in-process and the results are identical; they come back in order.
Clustering stays in-process: 10^6 frames take seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .exceptions import InputError, RunError

logger = logging.getLogger(__name__)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_CHUNK",
    "ModelFiles",
    "WorkerPredictor",
    "WorkerPool",
    "dask_client",
]

#: Seconds to wait for a scheduler to answer before giving up.
CONNECT_TIMEOUT_S = 5.0
#: Frames per prediction task by default (rounded up to whole batches).
DEFAULT_CHUNK = 2048
#: Prefix of a LocalCluster address: ``local:N`` starts N worker processes.
LOCAL = "local:"
#: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; any value
#: turns off glibc's adaptive mmap threshold, so that every prediction batch maps
#: and unmaps its arrays: sGDML predicted 3.5x slower on such a worker (measured,
#: BENCHMARKS.md). ``local:N`` workers start without it; for others, see the docs
#: (tutorials/dask).
NO_MALLOC_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def parse_local(address: str) -> int | None:
    """N of ``local:N``; None for a scheduler address. Bad N raises InputError."""
    if not address.startswith(LOCAL):
        return None
    text = address[len(LOCAL) :]
    if not text.isdigit() or int(text) < 1:
        raise InputError(
            f"--dask {address}: expected local:N with N >= 1 worker processes"
        )
    return int(text)


@contextlib.contextmanager
def dask_client(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S):
    """A connected :class:`distributed.Client`, or None without an address.

    Parameters
    ----------
    address : str or None
        A scheduler address (``tcp://host:8786``), ``local:N`` for a LocalCluster
        of N single-threaded worker processes that lives as long as the block, or
        None (yields None: the in-process path).
    timeout_s : float
        How long to wait for the scheduler to answer.

    Raises
    ------
    InputError
        dask is not installed, the address is malformed, or no scheduler answers
        there within ``timeout_s``.
    """
    if address is None:
        yield None
        return
    n_local = parse_local(address)
    distributed = _require_distributed()
    if not logger.isEnabledFor(logging.DEBUG):  # Dask's INFO lines only with -v
        logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = None
    try:
        if n_local is not None:
            import dask

            with dask.config.set(NO_MALLOC_TRIM):
                cluster = distributed.LocalCluster(
                    n_workers=n_local,
                    threads_per_worker=1,
                    host="127.0.0.1",
                    processes=True,
                    dashboard_address=None,
                )
            client = distributed.Client(cluster)
        else:
            client = _connect(distributed, address, timeout_s)
        with client:
            _log_workers(client, address)
            yield client
    finally:
        if cluster is not None:
            cluster.close()


def _require_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise InputError(
            f"--dask needs dask.distributed ({exc}): pip install 'ase-flatten[dask]'"
        ) from exc
    return distributed


def _connect(distributed, address: str, timeout_s: float):
    """Connect to a scheduler; every way of failing is one InputError line.

    ``Client(address, timeout=...)`` bounds only the TCP connection: a server
    that accepts it and never answers Dask's handshake (any other service on that
    port, an HTTP server say) keeps it waiting forever. So the address is first
    asked for its identity, as a scheduler answers it, within ``timeout_s``.
    """
    try:
        _probe(address, timeout_s)
        return distributed.Client(address, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        reason = str(exc) or "no answer"
        raise InputError(
            f"--dask {address}: no Dask scheduler answers there within {timeout_s:g} "
            f"s ({type(exc).__name__}: {reason}); start one with `dask scheduler` or "
            "use --dask local:N"
        ) from exc


def _probe(address: str, timeout_s: float) -> None:
    """Ask ``address`` for its identity; raise unless a scheduler answers in time.

    Runs in a thread of its own, with its own event loop, so that it works the
    same when the caller already runs one (a notebook).
    """
    import asyncio
    import concurrent.futures

    from distributed.comm import connect

    async def identity():
        comm = await connect(address, timeout=timeout_s)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def ask():
        return asyncio.run(asyncio.wait_for(identity(), timeout_s))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(ask).result()
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise ValueError(f"the server there is not a Dask scheduler ({kind})")


def _log_workers(client, address: str) -> None:
    workers = client.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 1) for w in workers.values())
    if not workers:
        logger.warning(
            "dask %s: no workers yet; the tasks wait until workers connect", address
        )
        return
    logger.info("dask %s: %d workers, %d threads", address, len(workers), threads)
    trims = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
    if any(value is not None for value in trims.values()):
        logger.warning(
            "dask %s: workers run with MALLOC_TRIM_THRESHOLD_ set (Dask's default), "
            "which makes predictions up to 3.5x slower; start them with "
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null in "
            "their Dask config (docs: tutorials/dask, 'Past one machine')",
            address,
        )


# -- models on the workers ---------------------------------------------------------


@dataclass
class ModelFiles:
    """What a worker needs to load a trained backend from a shared filesystem.

    Parameters
    ----------
    backend : str
        Backend name (``sgdml``, ``schnet``, ...).
    path : str
        Absolute path of the backend's own files (a model directory's ``model/``).
    numbers : tuple of int
        Atomic numbers of the molecule, shape (N,).
    params : dict
        Hyperparameters.
    random_state : int
    batch_size : int
        Frames per model call; the in-process path's, so that batches match.
    token : str
        Unique per saved model: the key of the worker's cache.
    """

    backend: str
    path: str
    numbers: tuple
    params: dict
    random_state: int
    batch_size: int
    token: str

    @classmethod
    def of_backend(cls, backend, path: str | os.PathLike) -> ModelFiles:
        """Describe ``backend``, whose files :meth:`Backend.save` wrote to ``path``."""
        return cls(
            backend=backend.name,
            path=str(Path(path).resolve()),
            numbers=tuple(int(z) for z in backend.numbers_),
            params=dict(backend.params),
            random_state=int(backend.random_state),
            batch_size=int(backend.batch_size),
            token=uuid.uuid4().hex,
        )

    @classmethod
    def of_saved(cls, saved) -> ModelFiles:
        """Describe a :class:`~ase_flatten.models.SavedModel` loaded from disk."""
        return cls.of_backend(saved.backend, Path(saved.path) / "model")

    def load(self):
        """The trained backend (on a worker: each model loads once, then is kept)."""
        from .backends import backend_class

        if not Path(self.path).is_dir():
            raise InputError(
                f"{self.path}: not found on Dask worker {_worker_name()}; the "
                "workers must share the model's filesystem"
            )
        return backend_class(self.backend).load(
            self.path, self.numbers, self.params, self.random_state
        )


#: Per worker process: the model last loaded, by token; and how often each loaded.
_WORKER_MODEL: dict = {}
_WORKER_LOADS: dict = {}
_WORKER_LOCK = threading.Lock()


def _worker_backend(model: ModelFiles):
    """The backend of ``model`` in this worker process, loaded on first use only."""
    with _WORKER_LOCK:
        if model.token not in _WORKER_MODEL:
            _WORKER_MODEL.clear()  # one model at a time: the previous iteration's goes
            _WORKER_MODEL[model.token] = model.load()
            _WORKER_LOADS[model.token] = _WORKER_LOADS.get(model.token, 0) + 1
        return _WORKER_MODEL[model.token]


def worker_loads() -> dict:
    """Token -> times this worker process loaded that model (for tests)."""
    return dict(_WORKER_LOADS)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "(not a worker)"


def _predict_chunk(model: ModelFiles, positions: np.ndarray):
    """Energies (M,) and forces (M, N, 3) of positions (M, N, 3), in batches."""
    backend = _worker_backend(model)
    energies = np.empty(len(positions))
    forces = np.empty(positions.shape)
    for start in range(0, len(positions), model.batch_size):
        stop = start + model.batch_size
        energies[start:stop], forces[start:stop] = backend.predict_positions(
            positions[start:stop]
        )
    return energies, forces


class WorkerPredictor:
    """A saved model predicting on the Dask workers, like :meth:`Backend.predict`.

    Parameters
    ----------
    client : distributed.Client
    model : ModelFiles
    chunk_frames : int
        Frames per task, rounded up to a multiple of the model's batch size.
    """

    def __init__(self, client, model: ModelFiles, chunk_frames: int = DEFAULT_CHUNK):
        self.client = client
        self.model = model
        batches = max(1, -(-chunk_frames // model.batch_size))
        self.chunk_frames = batches * model.batch_size
        self.name = model.backend
        self.numbers_ = np.asarray(model.numbers)
        # the description reaches every worker once, not once per chunk
        self._model_future = client.scatter(model, broadcast=True, hash=False)
        self.timings: list[dict] = []  #: per predict call: frames, chunks, seconds

    def predict(self, dataset, idx=None, batch_size=None, progress=None):
        """Energies (M,) in eV and forces (M, N, 3) in eV/Å of frames ``idx``.

        ``batch_size`` is accepted for the Backend signature; the model's own
        batch size is used so that every batch is the in-process one.
        """
        from distributed import KilledWorker, as_completed
        from tqdm.auto import tqdm

        if not np.array_equal(dataset.numbers, self.numbers_):
            raise InputError(
                f"{dataset.source}: holds {dataset.formula}, the {self.name} model "
                "was trained on another molecule or atom order"
            )
        start = time.perf_counter()
        idx = np.arange(len(dataset)) if idx is None else np.asarray(idx, dtype=int)
        bounds = range(0, len(idx), self.chunk_frames)
        chunks = [dataset.positions[idx[b : b + self.chunk_frames]] for b in bounds]
        data = self.client.scatter(chunks, hash=False) if chunks else []
        futures = [
            self.client.submit(_predict_chunk, self._model_future, chunk, pure=False)
            for chunk in data
        ]
        sizes = {f.key: len(c) for f, c in zip(futures, chunks, strict=True)}
        disable = None if progress is None else not progress
        bar = tqdm(total=len(idx), desc=f"{self.name} predict (dask)", disable=disable)
        try:
            with bar:
                for future in as_completed(futures):
                    bar.update(sizes[future.key])
            results = self.client.gather(futures)
        except KilledWorker as exc:  # a chunk lost with every worker it was sent to
            self.client.cancel(futures + data)
            raise RunError(
                f"{self.name} predict: Dask workers died predicting a chunk ({exc})"
            ) from exc
        except BaseException:  # Ctrl-C or a failed chunk: drop the other chunks
            self.client.cancel(futures + data)
            raise
        energies = np.concatenate([e for e, _ in results]) if results else np.empty(0)
        forces = np.concatenate([f for _, f in results]) if results else np.empty(0)
        self.timings.append(
            dict(frames=len(idx), chunks=len(futures), s=time.perf_counter() - start)
        )
        return energies, forces.reshape(len(idx), len(self.numbers_), 3)


class WorkerPool:
    """A Dask client and a scratch folder for the models the workers load.

    Parameters
    ----------
    client : distributed.Client
    scratch : path, optional
        Where trained backends are saved for the workers (on a filesystem they
        share); removed by :meth:`close`.
    chunk_frames : int
        Frames per prediction task.
    """

    def __init__(self, client, scratch=None, chunk_frames: int = DEFAULT_CHUNK):
        self.client = client
        self.scratch = None if scratch is None else Path(scratch)
        self.chunk_frames = chunk_frames

    def predictor(self, backend) -> WorkerPredictor:
        """Save a trained ``backend`` to the scratch folder; predict with it there."""
        if self.scratch is None:
            raise ValueError("WorkerPool.predictor needs a scratch folder")
        path = self.scratch / uuid.uuid4().hex
        shutil.rmtree(self.scratch, ignore_errors=True)  # the previous model
        backend.save(path)
        return WorkerPredictor(
            self.client, ModelFiles.of_backend(backend, path), self.chunk_frames
        )

    def saved_predictor(self, saved) -> WorkerPredictor:
        """Predict with a loaded model directory, read by the workers in place."""
        return WorkerPredictor(
            self.client, ModelFiles.of_saved(saved), self.chunk_frames
        )

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


@contextlib.contextmanager
def worker_pool(client, scratch=None, chunk_frames: int = DEFAULT_CHUNK):
    """A :class:`WorkerPool` (None without a client) whose scratch goes at the end."""
    if client is None:
        yield None
        return
    pool = WorkerPool(client, scratch, chunk_frames)
    try:
        yield pool
    finally:
        pool.close()
