"""The ``ipi`` engine: a real ``i-pi`` server process, the model over a UNIX socket.

One run:

1. :func:`write_inputs` writes ``start.extxyz`` and ``input.xml``
   (:mod:`.ipi_files`) in the run folder, with a socket name unique to the run
   (``md-<uuid>``);
2. :func:`start_server` starts ``i-pi input.xml`` (the executable next to
   :data:`sys.executable`) in its own session, and waits for ``/tmp/ipi_<name>``;
3. :func:`start_client` forks a client process that builds the calculator, wraps it in
   :class:`~md_validation.failure.MonitoredCalculator` (the failure rule on every
   force call) and serves it with :class:`ase.calculators.socketio.SocketClient`,
   one model call per step (:func:`_one_call_client`);
4. :func:`watch_run` watches i-PI's properties file (progress, temperature
   runaway) until the run fails or a process ends;
5. always (success, model raising, client dying, Ctrl-C, SIGTERM): terminates the
   client and the server (SIGTERM, then SIGKILL after a timeout) and removes the
   socket file;
6. :func:`collect_run` reads the record and the failure, and writes
   ``trajectory.extxyz``; the end of the run is shared with the ase engine
   (:func:`.common.finish_run`).

The client reports how it ended in ``client.json``: ``done``, ``failed`` (with the
failing step and reason), ``error`` (the model raised: a failed run with reason
``model error: ...``) or ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from ase_flatten.files import atomic_path, write_text
from ase_flatten.signals import sigterm_as_interrupt

from ..failure import MDFailure, MonitoredCalculator, TemperatureWatch
from ..processes import release_in_child, signals_deferred, terminate
from ..result import RunResult, empty_record
from ..settings import RunSettings
from .common import StepProgress, finish_run, trajectory_frame, trim_record
from .ipi_files import (
    PROPERTIES_FILE,
    TRAJECTORY_FILE,
    input_xml,
    read_properties,
    read_xyz_trajectory,
)

logger = logging.getLogger(__name__)

BOX = 30.0  # Å: i-PI needs a cell; the molecule is not periodic (pbc='false')


class IPIError(RuntimeError):
    """The i-PI server or its client ended abnormally (not an MD failure)."""


def ipi_executable() -> str:
    """Path of ``i-pi`` next to the running Python, else on PATH."""
    candidate = Path(sys.executable).with_name("i-pi")
    return str(candidate) if candidate.exists() else "i-pi"


def socket_path(address: str) -> Path:
    """The file i-PI creates for a UNIX socket named ``address``."""
    return Path("/tmp") / f"ipi_{address}"


def _one_call_client(monitored: MonitoredCalculator, address: str):
    """ASE's SocketClient that asks ``monitored`` once per i-PI step.

    ASE's client asks the attached calculator for the energy and then for the
    forces of the frame it has just received: two cache checks (ASE's
    ``compare_atoms``, a handful of ``np.isclose`` each) and two copies of the frame per
    step. This one calls :meth:`MonitoredCalculator.evaluate` once, with the same
    numbers. Molecules only (no stress; i-PI runs them without a cell); one rank.
    """
    from ase.calculators.socketio import SocketClient

    class OneCallClient(SocketClient):
        def calculate(self, atoms, use_stress):
            if use_stress:  # a periodic cell: ASE's own path
                return super().calculate(atoms, use_stress)
            energy, forces = monitored.evaluate(atoms)
            return energy, forces, np.zeros((3, 3))

    return OneCallClient(unixsocket=address)


def _serve(calc_factory, atoms, address, criteria, status_file):
    """Client process: serve the model until i-PI says stop; report how it ended."""
    status = {"status": "done"}
    code = 0
    client = None
    monitored = None
    try:
        # forked in signals_deferred (see start_client): a stop noted since the
        # fork is raised here, as an interruption
        release_in_child()
        # the fork inherits the parent's SIGTERM handler; the parent stops this
        # process with SIGTERM, which must end it, not pass for a Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        monitored = MonitoredCalculator(calc_factory(), criteria)
        atoms = atoms.copy()
        atoms.calc = monitored
        client = _one_call_client(monitored, address)
        client.run(atoms)
    except MDFailure as exc:
        status = {"status": "failed", "reason": exc.reason, "step": exc.step}
    except KeyboardInterrupt:
        status, code = {"status": "interrupted"}, 130
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        status = {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        code = 1
    finally:
        if monitored is not None:
            status["n_calls"] = monitored.n_calls
        try:
            Path(status_file).write_text(json.dumps(status))
            if client is not None:
                client.close()
        finally:
            os._exit(code)  # no parent atexit handlers (pytest, loggers) in a fork


def _stop_process(proc, name: str, timeout: float = 5.0) -> None:
    """Stop a Popen or Process (:func:`md_validation.processes.terminate`).

    A Process is closed afterwards: the engine owns it.
    """
    terminate(proc, name, timeout)
    if proc is not None and not isinstance(proc, subprocess.Popen):
        proc.close()


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-n:])
    except OSError:
        return ""


class _PropertyWatch:
    """Reads new lines of the properties file: progress and temperature runaway."""

    def __init__(self, path: Path, watch: TemperatureWatch, timestep_fs: float):
        self.path, self.watch, self.dt = path, watch, timestep_fs
        self.offset = 0
        self.column = None
        self.step = 0
        self.failure = None

    def poll(self) -> int:
        """Consume complete new lines; return the latest step seen."""
        if not self.path.exists():
            return self.step
        with open(self.path) as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind("\n") + 1
        self.offset += len(chunk[:end].encode())
        for line in chunk[:end].splitlines():
            if line.startswith("#"):
                if "temperature{kelvin}" in line:
                    self.column = int(line.split()[2].split("-")[0]) - 1
                continue
            values = line.split()
            if not values or self.column is None or self.failure:
                continue
            self.step = int(float(values[0]))
            reason = (
                self.watch.update(float(values[self.column])) if self.step else None
            )
            if reason:
                self.failure = (self.step, reason)
        return self.step


def _say_stopped(label: str, sock: Path) -> None:
    logger.warning(
        "%s: interrupted; stopped the i-PI server and its client, removed %s",
        label or "run",
        sock,
    )


@sigterm_as_interrupt()  # SIGTERM cleans up like Ctrl-C (restored on return)
def run_ipi(
    calc_factory,
    atoms: Atoms,
    settings: RunSettings,
    outdir: Path | None = None,
    progress: bool = False,
    label: str = "",
    start_timeout_s: float = 60.0,
    stop_timeout_s: float = 5.0,
    log_every_ps: float = 0.0,
) -> RunResult:
    """Run MD with an i-PI server; see :func:`md_validation.single_run.run_md`.

    The steps of the module docstring: :func:`write_inputs`, :func:`start_server`,
    :func:`start_client`, :func:`watch_run`, then the clean-up, and
    :func:`collect_run`. A model that raises during the run makes it a failed run
    (reason ``"model error: <type>: <message>"``), as the ase engine does.

    Raises
    ------
    IPIError
        The server would not start or died, the model could not be built (the
        message holds its error) or the client died; both processes and the
        socket are gone.
    KeyboardInterrupt
        Interrupted by Ctrl-C or SIGTERM (in this process) or Ctrl-C in the
        client; cleaned up likewise, and logged.
    """
    if outdir is None:
        raise ValueError("the ipi engine needs an output folder (outdir)")
    outdir = Path(outdir)
    address = f"md-{uuid.uuid4().hex[:16]}"
    sock = socket_path(address)
    start = write_inputs(atoms, settings, outdir, address)
    status_file = outdir / "client.json"
    status_file.unlink(missing_ok=True)
    watch = _PropertyWatch(
        outdir / PROPERTIES_FILE,
        TemperatureWatch(
            settings.temperature_K, settings.timestep_fs, settings.criteria
        ),
        settings.timestep_fs,
    )
    server = client = None
    bar = StepProgress(
        settings.n_steps, settings.timestep_fs, label or "i-pi", progress, log_every_ps
    )
    t0 = time.perf_counter()
    interrupted = False
    try:
        server = start_server(outdir, sock, start_timeout_s)
        client = start_client(calc_factory, start, address, settings, status_file)
        watch_run(server, client, watch, bar, stop_timeout_s)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        interrupted = True
        raise
    finally:
        bar.close()
        exitcode = None
        if client is not None:
            if client.is_alive() and not watch.failure and not interrupted:
                client.join(0.5)
            exitcode = client.exitcode
        _stop_process(client, "i-PI client", stop_timeout_s)
        _stop_process(server, "i-pi server", stop_timeout_s)
        sock.unlink(missing_ok=True)
        if interrupted:
            _say_stopped(label, sock)
    wall = time.perf_counter() - t0
    record, failure = collect_run(outdir, settings, watch, exitcode, label, sock)
    steps_done = int(record["step"][-1]) if len(record["step"]) else 0
    steps_done = steps_done if failure is None else failure[0]
    return finish_run(record, failure, steps_done, settings, wall, outdir, label)


def write_inputs(atoms: Atoms, settings: RunSettings, outdir: Path, address: str):
    """Step 1: ``start.extxyz`` and ``input.xml`` in ``outdir``; the start frame.

    Returns
    -------
    Atoms
        The start frame as i-PI sees it: centred in a :data:`BOX` Å cell, not
        periodic, without a calculator.
    """
    start = atoms.copy()
    start.set_cell([BOX] * 3)
    start.center()
    start.pbc = False
    start.calc = None
    with atomic_path(outdir / "start.extxyz") as tmp:
        ase.io.write(tmp, start, format="extxyz")
    xml = input_xml(
        address=address,
        start_file="start.extxyz",
        temperature_K=settings.temperature_K,
        n_steps=settings.n_steps,
        timestep_fs=settings.timestep_fs,
        seed=settings.seed,
        thermostat=settings.thermostat,
        tau_fs=settings.tau_fs,
        stride=settings.stride,
    )
    write_text(outdir / "input.xml", xml)
    return start


def start_server(outdir: Path, sock: Path, timeout_s: float) -> subprocess.Popen:
    """Step 2: start ``i-pi input.xml`` in ``outdir``; wait for its socket ``sock``.

    Raises
    ------
    IPIError
        The server exited, or opened no socket within ``timeout_s``. On any
        exception the server is stopped here; otherwise the caller stops it.
    """
    log = outdir / "ipi.log"
    with open(log, "w") as log_handle:
        server = subprocess.Popen(
            [ipi_executable(), "input.xml"],
            cwd=outdir,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    try:
        while not sock.exists():
            if server.poll() is not None:
                raise IPIError(
                    f"i-pi exited ({server.returncode}) before opening its socket: "
                    f"{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise IPIError(f"i-pi did not open {sock} within {timeout_s} s")
            time.sleep(0.02)
    except BaseException:
        _stop_process(server, "i-pi server")
        raise
    return server


def start_client(calc_factory, start: Atoms, address, settings, status_file):
    """Step 3: fork the process serving the model to i-PI (see :func:`_serve`)."""
    client = multiprocessing.get_context("fork").Process(
        target=_serve,
        args=(calc_factory, start, address, settings.criteria, status_file),
        daemon=True,
    )
    try:
        # a stop during the fork is raised here, after it, not in logging's hook
        with signals_deferred():
            client.start()
    except BaseException:
        _stop_process(client, "i-pi client")
        raise
    return client


def watch_run(server, client, watch: _PropertyWatch, bar, stop_timeout_s: float):
    """Step 4: follow the properties file until the run fails or a process ends."""
    while True:
        bar.update(watch.poll() - bar.n)
        if watch.failure:
            break
        client_done = not client.is_alive()
        if client_done:
            # finished, or ended (failure, error, death): a server still
            # running would wait forever for a new client
            break
        if server.poll() is not None:
            client.join(stop_timeout_s)
            break
        time.sleep(0.02)
    watch.poll()
    bar.update(watch.step - bar.n)


def collect_run(outdir: Path, settings, watch, exitcode, label, sock):
    """Step 6: the record and the failure (step, reason) of a finished run.

    Reads how the client ended (``client.json``), i-PI's properties and its
    trajectory (converted to ``trajectory.extxyz``, see :func:`_write_trajectory`).

    Raises
    ------
    IPIError, KeyboardInterrupt
        See :func:`run_ipi`.
    """
    status_file, log = outdir / "client.json", outdir / "ipi.log"
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    kind = status.get("status")
    if kind == "interrupted":
        _say_stopped(label, sock)
        raise KeyboardInterrupt
    if kind == "error" and "n_calls" not in status:
        raise IPIError(
            f"the model could not be built in the i-PI client: {status['error']}"
        )
    if kind is None and not watch.failure:
        raise IPIError(f"the i-PI client died (exit code {exitcode}); {_tail(log)}")
    failure = None
    if kind == "failed":
        failure = (int(status["step"]), status["reason"])
    if kind == "error":  # the model raised at force call n_calls - 1 = that step
        logger.debug("%s: the model raised:\n%s", label or "run", status["traceback"])
        failure = (max(status["n_calls"] - 1, 0), f"model error: {status['error']}")
    if watch.failure and (failure is None or watch.failure[0] < failure[0]):
        failure = watch.failure
    properties = outdir / PROPERTIES_FILE
    record = read_properties(properties) if properties.exists() else empty_record()
    n_steps = settings.n_steps
    if failure is None and (not len(record["step"]) or record["step"][-1] < n_steps):
        last = int(record["step"][-1]) if len(record["step"]) else 0
        raise IPIError(f"i-pi stopped at step {last} of {n_steps}: {_tail(log)}")
    if failure is not None:
        keep = int(np.searchsorted(record["step"], failure[0], side="right"))
        record = trim_record(record, keep)
    _write_trajectory(outdir, record, failure, settings.timestep_fs)
    return record, failure


def _write_trajectory(outdir: Path, record: dict, failure, timestep_fs: float) -> None:
    """Convert i-PI's xyz trajectory to ``trajectory.extxyz`` with energies."""
    path = outdir / TRAJECTORY_FILE
    frames = read_xyz_trajectory(path) if path.exists() else []
    energy_at = dict(
        zip(record["step"].astype(int), record["potential_eV"], strict=True)
    )
    last = failure[0] if failure else None
    frames = [a for a in frames if last is None or a.info["step"] <= last]
    if not frames:  # failed at once: no frame, no file
        (outdir / "trajectory.extxyz").unlink(missing_ok=True)
        return
    with atomic_path(outdir / "trajectory.extxyz") as tmp, open(tmp, "w") as handle:
        for atoms in frames:
            step = atoms.info["step"]
            energy = energy_at.get(step, np.nan)
            frame = trajectory_frame(atoms, step, step * timestep_fs / 1000.0, energy)
            ase.io.write(handle, frame, format="extxyz")
