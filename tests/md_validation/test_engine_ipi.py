"""The i-PI engine: real ``i-pi`` server, sGDML served over a UNIX socket."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from ase_flatten.calculator import FlattenedCalculator
from md_validation import COLUMNS, run_md
from md_validation.engines.ipi import IPIError, socket_path
from md_validation.engines.ipi_files import read_properties
from tests.md_validation.conftest import Broken


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
    ("mode", "error"),
    [("raise", IPIError), ("die", IPIError), ("interrupt", KeyboardInterrupt)],
)
def test_ipi_cleans_up_when_client_breaks(
    mode, error, sgdml_model, start_atoms, tmp_path
):
    def factory():
        return Broken(FlattenedCalculator(sgdml_model), after=20, mode=mode)

    with pytest.raises(error) as info:
        run_md(factory, start_atoms, 300, 5000, engine="ipi", outdir=tmp_path)
    if mode == "raise":
        assert "model exploded on purpose" in str(info.value)
    if mode == "die":
        assert "exit code 9" in str(info.value)
    assert_cleaned_up(tmp_path)


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
