"""The ``ipi`` engine: a real ``i-pi`` server process, the model over a UNIX socket.

One run:

1. writes ``start.extxyz`` and ``input.xml`` (:mod:`.ipi_files`) in the run folder,
   with a socket name unique to the run (``md-<uuid>``);
2. starts ``i-pi input.xml`` (the executable next to :data:`sys.executable`) in its
   own session, and waits for ``/tmp/ipi_<name>``;
3. forks a client process that builds the calculator, wraps it in
   :class:`~md_validation.failure.MonitoredCalculator` (the failure rule on every
   force call) and serves it with :class:`ase.calculators.socketio.SocketClient`;
4. watches i-PI's properties file (progress, temperature runaway) until both end;
5. always (success, model raising, client dying, Ctrl-C, SIGTERM): terminates the
   client and the server (SIGTERM, then SIGKILL after a timeout) and removes the
   socket file.

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
from tqdm.auto import tqdm

from ase_flatten.signals import sigterm_as_interrupt

from ..failure import FailureCriteria, MDFailure, MonitoredCalculator, TemperatureWatch
from ..result import RunResult, empty_record
from .common import trajectory_frame, trim_record
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


def _serve(calc_factory, atoms, address, criteria, status_file):
    """Client process: serve the model until i-PI says stop; report how it ended."""
    from ase.calculators.socketio import SocketClient

    # the fork inherits the parent's SIGTERM handler; the parent stops this
    # process with SIGTERM, which must end it, not pass for a Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    status = {"status": "done"}
    code = 0
    client = None
    monitored = None
    try:
        monitored = MonitoredCalculator(calc_factory(), criteria)
        atoms = atoms.copy()
        atoms.calc = monitored
        client = SocketClient(unixsocket=address)
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
    """Terminate a Popen or multiprocessing.Process, kill it after ``timeout``."""
    if proc is None:
        return
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop on SIGTERM; killing it", name)
                proc.kill()
                proc.wait(timeout)
        return
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout)
        if proc.is_alive():
            logger.warning("%s did not stop on SIGTERM; killing it", name)
            proc.kill()
            proc.join(timeout)
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
    temperature_K: float,
    n_steps: int,
    timestep_fs: float = 0.5,
    seed: int = 0,
    thermostat: str = "svr",
    stride: int = 10,
    outdir: Path | None = None,
    tau_fs: float = 100.0,
    criteria: FailureCriteria | None = None,
    progress: bool = False,
    label: str = "",
    start_timeout_s: float = 60.0,
    stop_timeout_s: float = 5.0,
) -> RunResult:
    """Run MD with an i-PI server; see :func:`md_validation.runner.run_md`.

    A model that raises during the run makes it a failed run (reason
    ``"model error: <type>: <message>"``), as the ase engine does.

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
    criteria = criteria or FailureCriteria()
    outdir = Path(outdir)
    address = f"md-{uuid.uuid4().hex[:16]}"
    sock = socket_path(address)
    start = atoms.copy()
    start.set_cell([BOX] * 3)
    start.center()
    start.pbc = False
    start.calc = None
    ase.io.write(outdir / "start.extxyz", start, format="extxyz")
    (outdir / "input.xml").write_text(
        input_xml(
            address=address,
            start_file="start.extxyz",
            temperature_K=temperature_K,
            n_steps=n_steps,
            timestep_fs=timestep_fs,
            seed=seed,
            thermostat=thermostat,
            tau_fs=tau_fs,
            stride=stride,
        )
    )
    status_file = outdir / "client.json"
    status_file.unlink(missing_ok=True)
    log = outdir / "ipi.log"
    watch = _PropertyWatch(
        outdir / PROPERTIES_FILE,
        TemperatureWatch(temperature_K, timestep_fs, criteria),
        timestep_fs,
    )
    server = client = None
    bar = tqdm(total=n_steps, desc=label or "i-pi", unit="step", disable=not progress)
    t0 = time.perf_counter()
    interrupted = False
    try:
        with open(log, "w") as log_handle:
            server = subprocess.Popen(
                [ipi_executable(), "input.xml"],
                cwd=outdir,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + start_timeout_s
        while not sock.exists():
            if server.poll() is not None:
                raise IPIError(
                    f"i-pi exited ({server.returncode}) before opening its socket: "
                    f"{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise IPIError(f"i-pi did not open {sock} within {start_timeout_s} s")
            time.sleep(0.02)
        client = multiprocessing.get_context("fork").Process(
            target=_serve,
            args=(calc_factory, start, address, criteria, status_file),
            daemon=True,
        )
        client.start()
        while True:
            step = watch.poll()
            bar.update(step - bar.n)
            if watch.failure:
                break
            client_done = not client.is_alive()
            if server.poll() is not None and client_done:
                break
            if client_done and server.poll() is None:
                # client ended (failure, error, death): the server would wait
                # forever for a new client
                break
            if server.poll() is not None and not client_done:
                client.join(stop_timeout_s)
                break
            time.sleep(0.02)
        watch.poll()
        bar.update(watch.step - bar.n)
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
    if failure is None and (not len(record["step"]) or record["step"][-1] < n_steps):
        last = int(record["step"][-1]) if len(record["step"]) else 0
        raise IPIError(f"i-pi stopped at step {last} of {n_steps}: {_tail(log)}")
    if failure is not None:
        keep = int(np.searchsorted(record["step"], failure[0], side="right"))
        record = trim_record(record, keep)
    steps_done = int(record["step"][-1]) if len(record["step"]) else 0
    _write_trajectory(outdir, record, failure, timestep_fs)
    failure_time = failure[0] * timestep_fs / 1000.0 if failure else None
    if failure:
        logger.warning(
            "%s failed at %.4f ps: %s", label or "run", failure_time, failure[1]
        )
    return RunResult(
        record=record,
        failed=failure is not None,
        failure_time_ps=failure_time,
        failure_reason=failure[1] if failure else None,
        n_steps=n_steps,
        steps_done=steps_done if failure is None else failure[0],
        wall_s=wall,
        outdir=outdir,
    )


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
    with open(outdir / "trajectory.extxyz", "w") as handle:
        for atoms in frames:
            step = atoms.info["step"]
            energy = energy_at.get(step, np.nan)
            frame = trajectory_frame(atoms, step, step * timestep_fs / 1000.0, energy)
            ase.io.write(handle, frame, format="extxyz")
