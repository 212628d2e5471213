"""The labelling oracle: reference energies and forces from any ASE calculator.

An :class:`Oracle` names a calculator factory (``module:callable`` and its keyword
arguments, the spec of ``errors --calculator``), or wraps a calculator or factory
given from Python. :func:`label_frames` labels frames with it, in this process, in
worker processes or on Dask workers (each builds its calculator factory once), and
stores every label the moment it arrives in
a :class:`LabelStore`: an append-only JSON-lines file keyed by the frame's content
(atomic numbers and positions). A frame whose key is in the store is never sent to
the oracle again, so a killed run resumes without paying for any label twice; a
frame the oracle failed on is stored with its reason and skipped, not retried.

Every frame gets a calculator of its own from the factory: a calculator that
keeps state between calls (tblite starts each SCF from the previous frame's
wavefunction) would make a label depend on the order frames were labelled in,
measured at 3e-9 eV with GFN2-xTB, and a resumed run could then differ from an
uninterrupted one. A calculator object given from Python is used as it is.

A failure is an exception, a result that is not finite, a wrong shape, or a call
longer than ``timeout_s`` (``SIGALRM`` in the worker: a timeout interrupts Python
code and calculators that call external programs; a C library that never returns
to Python cannot be interrupted this way). Dask runs tasks in threads, which
signals cannot reach: there a call is timed when it returns and a slower one is
recorded as a failure, but a call that hangs holds its worker. When more than
``max_failure_share`` of the frames labelled in one call fail (after at least
``MIN_ATTEMPTS``), labelling stops with one line naming the oracle and the last
error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .exceptions import InputError, RunError

logger = logging.getLogger(__name__)

__all__ = [
    "LabelStore",
    "LabelStats",
    "Oracle",
    "frame_keys",
    "label_frames",
    "probe_oracle",
]

#: Decimals of the positions (Å) that identify a frame: 1e-8 Å, far below any
#: physical difference and above the noise of a text round trip of float64.
KEY_DECIMALS = 8

#: Frames tried before the failure share can stop a labelling call.
MIN_ATTEMPTS = 5


def frame_keys(numbers: np.ndarray, positions: np.ndarray) -> list[str]:
    """Content keys of frames: SHA-256 of the atomic numbers and rounded positions.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
    positions : ndarray, shape (M, N, 3)
        Å.

    Returns
    -------
    list of str
        One 32-character hex key per frame; equal frames (to 1e-8 Å) share a key,
        whichever file they come from.

    Notes
    -----
    A label paid for belongs to exactly one geometry, so the key is exact (extxyz
    writes 8 decimals: a frame read back keeps its key). Telling whether two files
    hold the same frames despite float32 or text rounding is another question,
    answered by :func:`ase_flatten.data.frame_hashes` on a 0.001 Å grid.
    """
    numbers = np.ascontiguousarray(np.asarray(numbers, dtype=np.int64))
    rounded = np.round(np.asarray(positions, dtype=float), KEY_DECIMALS) + 0.0
    keys = []
    for frame in rounded:
        digest = hashlib.sha256(numbers.tobytes())
        digest.update(np.ascontiguousarray(frame).tobytes())
        keys.append(digest.hexdigest()[:32])
    return keys


@dataclass
class Oracle:
    """Which calculator labels frames, and how failures are handled.

    Parameters
    ----------
    factory : str or callable
        ``"module:callable"`` returning an ASE calculator (``tblite.ase:TBLite``),
        or, from Python, a calculator factory or a calculator itself (labelled in
        this process: ``jobs`` is then 1).
    kwargs : dict
        Keyword arguments of the factory.
    timeout_s : float or None
        Longest call; a longer one is a failure of that frame.
    max_failure_share : float
        Stop when more than this share of a labelling call's frames fail.
    """

    factory: object
    kwargs: dict = field(default_factory=dict)
    timeout_s: float | None = None
    max_failure_share: float = 0.2

    def __post_init__(self):
        if not isinstance(self.kwargs, dict):
            raise InputError(
                f"oracle {self.name}: keyword arguments must be a JSON object, got "
                f"{self.kwargs!r}"
            )
        if self.timeout_s is not None and not (
            np.isfinite(self.timeout_s) and self.timeout_s > 0
        ):
            raise InputError(
                f"oracle timeout must be a positive number of seconds, got "
                f"{self.timeout_s}"
            )
        if not 0.0 <= self.max_failure_share <= 1.0:
            raise InputError(
                f"oracle failure share must be in [0, 1], got {self.max_failure_share}"
            )

    @property
    def name(self) -> str:
        """The spec as the user gave it, for messages and history."""
        if isinstance(self.factory, str):
            return self.factory
        return getattr(self.factory, "__name__", type(self.factory).__name__)

    @property
    def importable(self) -> bool:
        """Whether worker processes can build it (a ``module:callable`` spec)."""
        return isinstance(self.factory, str)

    def describe(self) -> dict:
        """JSON-able description (run settings, history)."""
        return {"oracle": self.name, "kwargs": self.kwargs}

    def build(self):
        """A fresh calculator; a bad spec or a factory that fails: one line."""
        from ase.calculators.calculator import BaseCalculator

        if self.importable:
            from .backends.ase import import_factory

            function = import_factory(self.factory)
        elif isinstance(self.factory, BaseCalculator):
            return self.factory
        else:
            function = self.factory
        try:
            calc = function(**self.kwargs)
        except Exception as exc:  # the factory's own complaint, kept as the cause
            raise InputError(
                f"oracle {self.name} with {json.dumps(self.kwargs)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(calc, BaseCalculator):
            raise InputError(
                f"oracle {self.name} returned {type(calc).__name__}, not an ASE "
                "calculator"
            )
        return calc


def probe_oracle(oracle: Oracle, dataset, frame: int = 0) -> dict:
    """Label one frame of ``dataset`` before any work: the oracle must answer.

    Parameters
    ----------
    oracle : Oracle
    dataset : Dataset
        Labelled frames the oracle's labels will join.
    frame : int
        The frame to label.

    Returns
    -------
    dict
        ``energy_difference`` (eV, oracle minus dataset), ``force_rmse``
        (eV/Å between the two) and ``seconds`` of the call. A force RMSE above
        0.05 eV/Å is logged as a warning: the oracle is probably not the method
        that labelled the dataset, and mixing the two in one training set is
        rarely meant.

    Raises
    ------
    InputError
        The oracle cannot be built or fails on the frame.
    """
    record = _label_one(oracle, dataset.numbers, dataset.positions[frame])
    if "error" in record:
        raise InputError(
            f"oracle {oracle.name} with {json.dumps(oracle.kwargs)} failed on frame "
            f"{frame} of {dataset.source}: {record['error']}"
        )
    diff = np.asarray(record["forces"]) - dataset.forces[frame]
    check = {
        "energy_difference": record["energy"] - float(dataset.energies[frame]),
        "force_rmse": float(np.sqrt(np.mean(diff**2))),
        "seconds": record["seconds"],
    }
    if check["force_rmse"] > 0.05:
        logger.warning(
            "oracle %s disagrees with %s on frame %d (force RMSE %.3f eV/Å, energy "
            "%+.3f eV): is it the method that labelled the data?",
            oracle.name,
            dataset.source,
            frame,
            check["force_rmse"],
            check["energy_difference"],
        )
    return check


@dataclass
class LabelStats:
    """What one labelling call cost."""

    requested: int = 0  #: frames asked for
    reused: int = 0  #: found in the store (labels or failures paid for before)
    calls: int = 0  #: frames sent to the oracle now
    failed: int = 0  #: of those, failures (recorded, skipped)
    oracle_seconds: float = 0.0  #: summed wall time of the oracle calls
    wall_seconds: float = 0.0  #: wall time of the whole call

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class LabelStore:
    """Labels paid for, one JSON line per frame, appended as they arrive.

    Each line is ``{"key", "energy", "forces", "seconds"}`` (eV, eV/Å) or
    ``{"key", "error", "seconds"}``. A line cut short by a kill is ignored on
    reading (that frame is labelled again: it was never stored).

    Parameters
    ----------
    path : path
        The file; created on the first label.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: dict[str, dict] = {}
        self._handle = None
        self._synced = time.monotonic()
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        with open(self.path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if number >= len(lines) - 1:  # the last line, cut short by a kill
                    logger.warning("%s: ignoring an unfinished last line", self.path)
                    continue
                raise InputError(
                    f"{self.path}: line {number} is not a label record"
                ) from exc
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                raise InputError(f"{self.path}: line {number} is not a label record")
            self._records[record["key"]] = record

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict | None:
        """The record of ``key``, or None."""
        return self._records.get(key)

    def add(self, record: dict) -> None:
        """Append one record; it is in the file (the kernel's) when this returns.

        A killed process loses nothing written here; :meth:`sync` makes the file
        durable on disk as well (after a power cut), once per second while
        labelling and at the end of every labelling call.
        """
        line = json.dumps(record, separators=(",", ":")) + "\n"
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._drop_torn_line()
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(line)
        self._handle.flush()
        self._records[record["key"]] = record
        if time.monotonic() - self._synced > 1.0:
            self.sync()

    def sync(self) -> None:
        """Make every record written so far durable on disk."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        """Sync and close the file (it reopens on the next :meth:`add`)."""
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None

    def _drop_torn_line(self) -> None:
        """Cut a last line that a kill left unfinished (it was never a record)."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)


def label_frames(
    numbers: np.ndarray,
    positions: np.ndarray,
    oracle: Oracle,
    store: LabelStore,
    jobs: int = 1,
    progress: bool | None = None,
    client=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, LabelStats]:
    """Label frames with the oracle, reusing every label the store holds.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
    positions : ndarray, shape (M, N, 3)
        Å.
    oracle : Oracle
    store : LabelStore
        Labels paid for; new ones are appended as they arrive.
    jobs : int
        Worker processes (each builds its calculator once); 1 labels here.
    progress : bool or None
        tqdm bar (None: when stderr is a terminal).
    client : distributed.Client, optional
        Label on this Dask cluster's workers instead (``jobs`` is then unused).

    Returns
    -------
    energies : ndarray, shape (M,)
        eV; NaN where the oracle failed.
    forces : ndarray, shape (M, N, 3)
        eV/Å; NaN where the oracle failed.
    ok : ndarray of bool, shape (M,)
    stats : LabelStats

    Raises
    ------
    InputError
        The oracle cannot be built, or more than its failure share failed.
    RunError
        A worker process died (its cause chained).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    numbers = np.asarray(numbers, dtype=int)
    positions = np.asarray(positions, dtype=float)
    keys = frame_keys(numbers, positions)
    stats = LabelStats(requested=len(keys))
    todo, seen = [], set()
    for i, key in enumerate(keys):
        if key in store:
            stats.reused += 1
        elif key not in seen:  # the same frame twice in one call: one label
            seen.add(key)
            todo.append(i)
    if todo:
        bar = tqdm(
            total=len(todo),
            desc="labelling",
            unit="frame",
            disable=None if progress is None else not progress,
        )
        with bar:
            results = _oracle_results(numbers, positions, todo, oracle, jobs, client)
            for i, record in results:
                record["key"] = keys[i]
                store.add(record)
                stats.calls += 1
                stats.oracle_seconds += record["seconds"]
                if "error" in record:
                    stats.failed += 1
                    logger.warning(
                        "oracle %s: frame skipped (%s)", oracle.name, record["error"]
                    )
                    _check_failure_share(oracle, stats, record["error"])
                bar.update()
        store.sync()
    energies = np.full(len(keys), np.nan)
    forces = np.full(positions.shape, np.nan)
    for i, key in enumerate(keys):
        record = store.get(key)
        if record is not None and "error" not in record:
            energies[i] = record["energy"]
            forces[i] = np.asarray(record["forces"], dtype=float)
    stats.wall_seconds = time.perf_counter() - start
    return energies, forces, np.isfinite(energies), stats


def _check_failure_share(oracle: Oracle, stats: LabelStats, error: str) -> None:
    if stats.calls >= MIN_ATTEMPTS and stats.failed > (
        oracle.max_failure_share * stats.calls
    ):
        raise InputError(
            f"oracle {oracle.name}: {stats.failed} of {stats.calls} frames failed "
            f"(more than {oracle.max_failure_share:.0%}); last error: {error}"
        )


def _oracle_results(numbers, positions, todo, oracle, jobs, client=None):
    """(frame, record) pairs as the oracle finishes them.

    ``jobs`` 1 labels here; more label every frame in worker processes; a Dask
    ``client`` labels every frame on its workers. Where a label is computed is
    fixed by these settings alone: the same frame labelled here and in a worker
    differed in the 13th digit (tblite), so a choice made by timing would let a
    resumed run differ from an uninterrupted one.
    """
    from threadpoolctl import threadpool_limits

    if client is not None:
        yield from _dask_results(numbers, positions, todo, oracle, client)
        return
    if jobs <= 1 or not oracle.importable or len(todo) == 1:
        # one BLAS/OpenMP thread, as in the workers: two threads on a busy 2-core
        # machine made tblite calls 10-30x slower (set once: threadpoolctl scans
        # the loaded libraries, 3 ms, each time it is asked)
        with threadpool_limits(limits=1):
            for i in todo:
                yield i, _label_one(oracle, numbers, positions[i])
        return
    oracle.build()  # a spec that fails does so here, before any worker starts
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(oracle.factory, oracle.kwargs, oracle.timeout_s),
    ) as pool:
        futures = {pool.submit(_worker_label, numbers, positions[i]): i for i in todo}
        try:
            for future in as_completed(futures):
                try:
                    record = future.result()
                except BrokenProcessPool as exc:  # killed, out of memory, crashed
                    raise RunError(
                        f"oracle {oracle.name}: a label worker process died ({exc})"
                    ) from exc
                yield futures[future], record
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _dask_results(numbers, positions, todo, oracle, client):
    """(frame, record) pairs from the Dask workers, as they finish."""
    from distributed import KilledWorker
    from distributed import as_completed as dask_completed

    if not oracle.importable:
        raise InputError(
            f"oracle {oracle.name}: Dask workers build the oracle from a "
            "MODULE:FACTORY spec; a calculator object labels in this process only"
        )
    oracle.build()  # a spec that fails does so here, before any task is sent
    spec = (oracle.factory, oracle.kwargs, oracle.timeout_s)
    futures = {
        client.submit(_dask_label, spec, numbers, positions[i], pure=False): i
        for i in todo
    }
    try:
        for future in dask_completed(futures):
            try:
                record = future.result()
            except KilledWorker as exc:  # lost with every worker it was sent to
                raise RunError(
                    f"oracle {oracle.name}: Dask workers died labelling a frame ({exc})"
                ) from exc
            yield futures[future], record
    except BaseException:
        client.cancel(list(futures))
        raise


#: Per worker process: the oracle (its factory imported once).
_WORKER_ORACLE = None

#: Per Dask worker process: oracles by spec (factory imported once per spec).
_DASK_ORACLES: dict = {}
_DASK_LOCK = threading.Lock()


def _dask_label(spec, numbers, positions) -> dict:
    """One oracle call on a Dask worker; the worker builds each spec's factory once."""
    factory, kwargs, timeout_s = spec
    key = (factory, json.dumps(kwargs, sort_keys=True), timeout_s)
    with _DASK_LOCK:
        if key not in _DASK_ORACLES:
            from .backends.ase import import_factory

            _DASK_ORACLES[key] = Oracle(
                import_factory(factory), kwargs, timeout_s=timeout_s
            )
        oracle = _DASK_ORACLES[key]
    return _label_one(oracle, numbers, positions)


def _init_worker(factory: str, kwargs: dict, timeout_s) -> None:
    global _WORKER_ORACLE
    from threadpoolctl import threadpool_limits

    from .backends.ase import import_factory

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    threadpool_limits(1)
    _WORKER_ORACLE = Oracle(import_factory(factory), kwargs, timeout_s=timeout_s)


def _worker_label(numbers, positions):
    return _label_one(_WORKER_ORACLE, numbers, positions)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def _label_one(oracle: Oracle, numbers, positions) -> dict:
    """One oracle call: a label record, or a failure record with its reason.

    Its ``seconds`` include building the frame's calculator (the oracle's cost).
    A factory that fails raises (not the frame's fault).
    """
    from ase import Atoms

    timeout_s = oracle.timeout_s
    # signals reach the main thread only: elsewhere (Dask) a call is timed after
    alarm = timeout_s is not None and threading.current_thread() is (
        threading.main_thread()
    )
    start = time.perf_counter()
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = oracle.build()
    previous = None
    if alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=float)
        error = None
        if forces.shape != positions.shape:
            error = f"forces of shape {forces.shape}, expected {positions.shape}"
        elif not (np.isfinite(energy) and np.isfinite(forces).all()):
            error = "energy or forces not finite"
    except _Timeout:
        error = f"no result within {timeout_s:g} s"
    except Exception as exc:  # e.g. SCF not converged: recorded, the run goes on
        error = f"{type(exc).__name__}: {exc}".strip()
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - start
    if error is None and timeout_s is not None and seconds > timeout_s:
        error = f"no result within {timeout_s:g} s (took {seconds:.1f} s)"
    if error is not None:
        return {"error": error[:500], "seconds": seconds}
    return {"energy": energy, "forces": forces.tolist(), "seconds": seconds}


#: Labelled files read by :func:`stored_labels`, per process: path -> key table.
_STORED: dict = {}


def stored_labels(path: str, energy_key: str | None = None, forces_key=None):
    """An oracle that answers from a labelled file: benchmarks and dry runs.

    The calculator returns the stored energy and forces of the frame with the same
    content key (:func:`frame_keys`) and raises for any other frame. With the
    dataset itself as ``path`` it stands in for the method that labelled it, so a
    sweep over many seeds pays for its labels by a lookup and counts them as
    oracle calls all the same (``--oracle ase_flatten.oracle:stored_labels
    --oracle-kwargs '{"path": "data.xyz"}'``).

    Parameters
    ----------
    path : str
        A labelled trajectory (anything :func:`~ase_flatten.data.read_dataset`
        reads).
    energy_key, forces_key : str, optional
        Its label keys.
    """
    from ase.calculators.calculator import Calculator, all_changes

    table = _STORED.get((path, energy_key, forces_key))
    if table is None:
        from .data import read_dataset

        data = read_dataset(path, energy_key=energy_key, forces_key=forces_key)
        keys = frame_keys(data.numbers, data.positions)
        table = {key: i for i, key in enumerate(keys)}, data
        _STORED[(path, energy_key, forces_key)] = table
    index, data = table

    class StoredLabels(Calculator):
        implemented_properties = ("energy", "forces")

        def calculate(
            self, atoms=None, properties=("energy",), system_changes=all_changes
        ):
            super().calculate(atoms, properties, system_changes)
            key = frame_keys(self.atoms.numbers, self.atoms.positions[None])[0]
            if key not in index:
                raise KeyError(f"frame not in {path}")
            i = index[key]
            self.results = {
                "energy": float(data.energies[i]),
                "forces": data.forces[i].copy(),
            }

    return StoredLabels()
