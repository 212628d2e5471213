"""The i-PI engine: real ``i-pi`` server, sGDML served over a UNIX socket."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ase_flatten.calculator import FlattenedCalculator
from md_validation import COLUMNS, run_md
from md_validation.engines.ipi import IPIError, socket_path
from md_validation.engines.ipi_files import read_properties
from tests.md_validation.conftest import Broken

pytestmark = pytest.mark.slow  # i-PI


def _address(run_dir: Path) -> str:
    return re.search(
        r"<address>\s*(\S+)\s*</address>", (run_dir / "input.xml").read_text()
    )[1]


def _live_children() -> list[int]:
    """Non-zombie processes whose parent is this test process.

    multiprocessing's resource tracker (started by md-validate's worker pool in
    earlier tests, alive for the whole session) does not count.
    """
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(
            line.split(":\t", 1) for line in status.splitlines() if ":\t" in line
        )
        if int(fields.get("PPid", 0)) == me and not fields.get("State", "").startswith(
            "Z"
        ):
            if b"resource_tracker" not in command:
                found.append(int(entry.name))
    return found


def _servers_in(run_dir: Path) -> list[int]:
    """Processes whose working directory is the run folder (the i-pi server)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == run_dir:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_cleaned_up(run_dir: Path) -> None:
    assert not socket_path(_address(run_dir)).exists()
    assert _servers_in(run_dir.resolve()) == []
    assert _live_children() == []


def test_ipi_run_parses_properties_and_cleans_up(sgdml_model, start_atoms, tmp_path):
    result = run_md(
        sgdml_model, start_atoms, 300, 300, engine="ipi", stride=20, outdir=tmp_path
    )
    assert not result.failed and result.steps_done == 300
    record = result.record
    assert tuple(record) == COLUMNS
    np.testing.assert_array_equal(record["step"], np.arange(301))
    np.testing.assert_allclose(record["time_ps"], record["step"] * 0.5e-3, atol=1e-9)
    assert 150 < record["temperature_K"][50:].mean() < 600
    # the potential is the sGDML model's: compare a saved frame with the calculator
    import ase.io

    frames = ase.io.read(tmp_path / "trajectory.extxyz", ":")
    assert [f.info["step"] for f in frames] == list(range(0, 301, 20))
    frame = frames[5]
    energy = frame.get_potential_energy()
    frame.calc = FlattenedCalculator(sgdml_model)
    assert frame.get_potential_energy() == pytest.approx(energy, abs=1e-4)
    # svr: the conserved quantity drifts much less than the total energy moves
    assert np.ptp(record["conserved_eV"]) < 0.5 * np.ptp(record["total_eV"])
    assert read_properties(tmp_path / "ipi.out")["step"][-1] == 300
    assert_cleaned_up(tmp_path)


def test_one_call_client_gives_ase_clients_trajectory(
    sgdml_model, start_atoms, tmp_path, monkeypatch
):
    """One evaluate per step instead of ASE's energy-then-forces path: the same
    i-PI run to the bit, and the same count of force calls."""
    from ase.calculators.socketio import SocketClient

    from md_validation.engines import ipi

    runs = {}
    for name in ("one_call", "ase"):
        if name == "ase":  # the forked client process inherits the patch
            monkeypatch.setattr(
                ipi,
                "_one_call_client",
                lambda monitored, address: SocketClient(unixsocket=address),
            )
        runs[name] = run_md(
            sgdml_model, start_atoms, 300, 60, engine="ipi", stride=10,
            outdir=tmp_path / name, seed=3,
        )  # fmt: skip
    for column in COLUMNS:
        np.testing.assert_array_equal(
            runs["one_call"].record[column], runs["ase"].record[column]
        )
    import ase.io

    one, two = (ase.io.read(tmp_path / n / "trajectory.extxyz", ":") for n in runs)
    assert len(one) == len(two) == 7
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_monitored_evaluate_counts_and_equals_the_calculator(sgdml_model, start_atoms):
    from md_validation.failure import MonitoredCalculator

    monitored = MonitoredCalculator(FlattenedCalculator(sgdml_model))
    energy, forces = monitored.evaluate(start_atoms)
    plain = start_atoms.copy()
    plain.calc = FlattenedCalculator(sgdml_model)
    assert energy == plain.get_potential_energy()
    np.testing.assert_array_equal(forces, plain.get_forces())
    assert monitored.n_calls == 1


def test_ipi_detects_failure_and_stops(sgdml_model, start_atoms, tmp_path):
    def factory():
        return Broken(FlattenedCalculator(sgdml_model), after=31, mode="nan")

    result = run_md(factory, start_atoms, 300, 5000, engine="ipi", outdir=tmp_path)
    assert result.failed
    assert result.failure_time_ps == pytest.approx(31 * 0.5e-3)
    assert "non-finite energy" in result.failure_reason
    assert result.record["step"][-1] <= 31
    assert_cleaned_up(tmp_path)


@pytest.mark.parametrize(
    ("mode", "error"), [("die", IPIError), ("interrupt", KeyboardInterrupt)]
)
def test_ipi_cleans_up_when_client_breaks(
    mode, error, sgdml_model, start_atoms, tmp_path
):
    def factory():
        return Broken(FlattenedCalculator(sgdml_model), after=20, mode=mode)

    with pytest.raises(error) as info:
        run_md(factory, start_atoms, 300, 5000, engine="ipi", outdir=tmp_path)
    if mode == "die":
        assert "exit code 9" in str(info.value)
    assert_cleaned_up(tmp_path)


@pytest.mark.parametrize("after", [0, 20])
def test_ipi_model_that_raises_is_a_failed_run(
    after, sgdml_model, start_atoms, tmp_path
):
    def factory():
        return Broken(FlattenedCalculator(sgdml_model), after=after, mode="raise")

    result = run_md(factory, start_atoms, 300, 5000, engine="ipi", outdir=tmp_path)
    assert result.failed
    reason = "model error: RuntimeError: model exploded on purpose"
    assert result.failure_reason == reason
    # force call k is step k
    assert result.failure_time_ps == pytest.approx(after * 0.5e-3)
    assert len(result.record["step"]) <= after
    assert (result.record["step"] < after).all()
    assert json.loads((tmp_path / "run.json").read_text())["failure_reason"] == reason
    assert_cleaned_up(tmp_path)
    if after == 0:
        return
    # the next run goes on as usual
    result = run_md(
        sgdml_model, start_atoms, 300, 20, engine="ipi", outdir=tmp_path / "next"
    )
    assert not result.failed and result.steps_done == 20


def test_sigterm_to_md_validate_cleans_up_ipi(sgdml_model, xtb_files, tmp_path):
    """``kill PID`` stops i-PI and its client, removes the socket and says so."""
    previous = signal.getsignal(signal.SIGTERM)
    proc = subprocess.Popen(
        [sys.executable, "-m", "md_validation", "--model", f"m={sgdml_model}",
         "--start", str(xtb_files[0]), "--temperatures", "300", "--steps",
         "1000000", "--engine", "ipi", "--no-progress", "-o", str(tmp_path / "md")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed whole on failure
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        sock = None
        while sock is None or not sock.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "i-PI did not start"
            time.sleep(0.1)
            inputs = list(tmp_path.rglob("input.xml"))  # the replica's folder
            if inputs and "</address>" in inputs[0].read_text():
                sock = socket_path(_address(inputs[0].parent))
        servers = _servers_under(tmp_path.resolve())
        assert servers  # the i-PI server runs in the replica's folder
        time.sleep(1.0)  # the client is connected and MD runs
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            # a SIGKILL to the command alone would leave its worker and the i-PI
            # server running the million steps: kill the whole group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "stopped the i-PI server and its client, removed" in err
    # the replica runs in a worker process: its log lines and the command's last
    # line reach stderr in either order
    assert "md-validate: interrupted" in err.strip().splitlines()
    assert "Traceback" not in err
    assert not sock.exists()
    assert not any(_alive(pid) for pid in servers)
    assert _servers_under(tmp_path.resolve()) == []
    assert signal.getsignal(signal.SIGTERM) == previous


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def _servers_under(root: Path) -> list[int]:
    """Live processes whose working directory is inside ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if entry.name.isdigit() and root in (cwd, *cwd.parents):
            if _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_run_ipi_restores_the_sigterm_handler(sgdml_model, start_atoms, tmp_path):
    def mine(signum, frame):  # pragma: no cover - never sent
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        run_md(sgdml_model, start_atoms, 300, 10, engine="ipi", outdir=tmp_path)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ipi_cleans_up_on_interrupt_in_parent(sgdml_model, start_atoms, tmp_path):
    """Ctrl-C in the parent while waiting: simulated by a watch that raises."""
    from md_validation.engines import ipi

    original = ipi._PropertyWatch.poll
    calls = {"n": 0}

    def poll(self):
        calls["n"] += 1
        if self.step > 10:
            raise KeyboardInterrupt
        return original(self)

    ipi._PropertyWatch.poll = poll
    try:
        with pytest.raises(KeyboardInterrupt):
            run_md(sgdml_model, start_atoms, 300, 100000, engine="ipi", outdir=tmp_path)
    finally:
        ipi._PropertyWatch.poll = original
    assert_cleaned_up(tmp_path)


def test_engines_give_the_same_columns(sgdml_model, start_atoms, tmp_path):
    runs = {
        engine: run_md(
            sgdml_model, start_atoms, 300, 40, engine=engine, outdir=tmp_path / engine
        )
        for engine in ("ase", "ipi")
    }
    assert tuple(runs["ase"].record) == tuple(runs["ipi"].record) == COLUMNS
    for result in runs.values():
        assert len(result.record["step"]) == 41
        assert (result.outdir / "thermo.csv").read_text().splitlines()[0] == ",".join(
            COLUMNS
        )
        # both start from the same frame: the same potential energy at step 0
    assert runs["ase"].record["potential_eV"][0] == pytest.approx(
        runs["ipi"].record["potential_eV"][0], abs=1e-4
    )
