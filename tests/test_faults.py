"""The red team's faults, rerun: each ends as one clear line, before any work, or
as a warning where the result is only doubtful; nothing is overwritten."""

import errno
import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ase_flatten.exceptions import InputError
from tests.test_cli import assert_one_line_error, run_cli

SMALL = ["--n-geometry", "3", "--n-energy", "2"]
SGDML = ["--backend", "sgdml", "-p", "sigma=20"]
LOOP = ["--init", "20", "--step", "8", "--iterations", "1", "--n-fine", "12",
        *SMALL, "-p", "sigma=20"]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """Drop log handlers that an earlier test left on a stream it closed (a capsys
    stream): they would print a logging error into this test's stderr."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if getattr(stream, "closed", False):
                logger.removeHandler(handler)


@pytest.fixture(scope="module")
def model(tmp_path_factory, xtb_files):
    from ase_flatten.cli.main import main

    out = tmp_path_factory.mktemp("faults") / "model"
    args = ["train", str(xtb_files[0]), *SGDML, "--size", "20", *SMALL, "-o", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture()
def model_copy(tmp_path, model):
    """A copy of the model to damage."""
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    return copy


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# -- data loss ------------------------------------------------------------------


@pytest.mark.slow
def test_predict_never_writes_into_a_model_folder(tmp_path, capsys, xtb_files, model):
    before = (model / "train.xyz").read_bytes()
    for target in (model / "train.xyz", model / "model" / "new.xyz"):
        status, _, err = run_cli(
            capsys, "predict", f"{xtb_files[0]}@0:3", "--model", model, "-o", target,
            "--overwrite",
        )  # fmt: skip
        assert_one_line_error(status, err, str(target), "lies inside")
    assert (model / "train.xyz").read_bytes() == before
    assert not (model / "model" / "new.xyz").exists()
    # a folder of another command (a clustering report) is refused the same way
    report = tmp_path / "report"
    status, _, err = run_cli(
        capsys, "errors", xtb_files[0], "--model", model, "-o", report, *SMALL
    )
    assert status == 0, err
    status, _, err = run_cli(
        capsys, "cluster", xtb_files[0], "-o", report / "clusters.npz", "--overwrite",
        *SMALL,
    )  # fmt: skip
    assert_one_line_error(status, err, "ase-flatten errors")
    # beside the model is fine
    status, _, err = run_cli(
        capsys, "predict", f"{xtb_files[0]}@0:3", "--model", model, "-o",
        tmp_path / "p.extxyz",
    )  # fmt: skip
    assert status == 0, err


# -- hang -----------------------------------------------------------------------


@pytest.mark.slow
def test_dask_address_of_a_web_server_fails_within_seconds(tmp_path, xtb_files):
    pytest.importorskip("distributed")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"tcp://127.0.0.1:{server.server_address[1]}"
    try:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "ase_flatten.cli.main", "select",
             str(xtb_files[0]), *LOOP, "-o", str(tmp_path / "s"), "--dask", address],
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])),
        )  # fmt: skip
        wall = time.perf_counter() - start
    finally:
        server.shutdown()
        server.server_close()
    assert_one_line_error(
        done.returncode, done.stderr, f"--dask {address}", "within 5 s"
    )
    assert wall < 30  # start-up of Python and the imports, and the 5 s
    assert not (tmp_path / "s").exists()
    # and in-process, the connection alone gives up after the timeout
    from ase_flatten.dask_workers import dask_client

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.perf_counter()
        with pytest.raises(InputError, match="not a Dask scheduler|within 1 s"):
            with dask_client(f"tcp://127.0.0.1:{server.server_address[1]}", 1.0):
                pass
        assert time.perf_counter() - start < 5
    finally:
        server.shutdown()
        server.server_close()


# -- tracebacks -----------------------------------------------------------------


def _frames_file(path, xtb_dataset, edit=None, n=20):
    """The first ``n`` frames as extxyz, each passed to ``edit`` first."""
    import ase.io

    frames = [xtb_dataset.to_atoms(i) for i in range(n)]
    for atoms in frames:
        atoms.info.pop("ref_energy")
        atoms.arrays.pop("ref_forces")
        if edit is not None:
            edit(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_labels_that_are_not_numbers(tmp_path, capsys, xtb_dataset):
    def name(atoms):
        atoms.info["name"] = "ethanol"

    data = _frames_file(tmp_path / "named.extxyz", xtb_dataset, name)
    out = tmp_path / "c.npz"
    status, _, err = run_cli(capsys, "cluster", data, "--energy-key", "name", "-o", out)
    assert_one_line_error(status, err, "frame 0", "'name'", "--energy-key", "not one")
    status, _, err = run_cli(
        capsys, "cluster", data, "--forces-key", "numbers", "-o", out
    )
    assert_one_line_error(status, err, "'numbers'", "--forces-key", "shape (9, 3)")
    text = (tmp_path / "named.extxyz").read_text().splitlines()
    text[1] = text[1].replace("energy=", "energy=abc ignored=", 1)
    (tmp_path / "bad_energy.extxyz").write_text("\n".join(text) + "\n")
    status, _, err = run_cli(
        capsys, "cluster", tmp_path / "bad_energy.extxyz", "-o", out
    )
    assert_one_line_error(status, err, "frame 0", "energy", "not one number")
    assert not out.exists()


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
def test_a_full_disk_is_one_line(tmp_path, capsys, xtb_files, model, monkeypatch):
    import ase.io

    monkeypatch.setattr(np, "savez", _disk_full)
    out = tmp_path / "c.npz"
    status, _, err = run_cli(capsys, "cluster", xtb_files[0], "-o", out, *SMALL)
    assert_one_line_error(status, err, str(out), "No space left on device")
    monkeypatch.setattr(ase.io, "write", _disk_full)
    out = tmp_path / "p.extxyz"
    status, _, err = run_cli(
        capsys, "predict", f"{xtb_files[0]}@0:3", "--model", model, "-o", out
    )
    assert_one_line_error(status, err, str(out), "No space left on device")
    assert os.listdir(tmp_path) == []  # no temporary file left behind
    # a model folder: the backend's own files go first
    monkeypatch.setattr(np, "savez_compressed", _disk_full)
    out = tmp_path / "m"
    status, _, err = run_cli(
        capsys, "train", xtb_files[0], *SGDML, "--size", "20", *SMALL, "-o", out
    )
    assert_one_line_error(status, err, "No space left on device")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_an_old_folder_that_cannot_be_moved_aside(
    tmp_path, capsys, xtb_files, model, monkeypatch
):
    report = tmp_path / "report"
    args = ["errors", xtb_files[0], "--model", model, "-o", report, *SMALL]
    status, _, err = run_cli(capsys, *args)
    assert status == 0, err
    before = {p.name: p.read_bytes() for p in report.iterdir() if p.is_file()}
    replace = os.replace

    def refuse(src, dst):
        if Path(src) == report:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    status, _, err = run_cli(capsys, *args, "--overwrite")
    assert_one_line_error(status, err, str(report), "cannot move the old folder")
    assert "report.new" in err
    after = {p.name: p.read_bytes() for p in report.iterdir() if p.is_file()}
    assert after == before
    assert (tmp_path / "report.new" / "summary.json").is_file()


@pytest.mark.slow
def test_damaged_domain_and_partners_in_a_model(
    tmp_path, capsys, xtb_files, model_copy
):
    from ase_flatten.models import load_model

    data = f"{xtb_files[0]}@0:3"
    good = dict(np.load(model_copy / "domain.npz"))
    bad = {**good, "reference_descriptors": good["reference_descriptors"][:, :10]}
    np.savez(model_copy / "domain.npz", **bad)
    out = tmp_path / "p.extxyz"
    status, _, err = run_cli(capsys, "predict", data, "--model", model_copy, "-o", out)
    assert_one_line_error(status, err, "domain.npz", "reference_descriptors")
    np.savez(model_copy / "domain.npz", **good)
    load_model(model_copy)  # the good one loads
    meta = model_copy / "model.json"
    for garbage in ("garbage", {"3": [99]}, {"0": [1]}, {"3": "C"}, [1, 2]):
        _edit_json(meta, hydrogen_partners=garbage)
        status, _, err = run_cli(
            capsys, "predict", data, "--model", model_copy, "-o", out
        )
        assert_one_line_error(status, err, "model.json", "hydrogen_partners")
    assert not out.exists()


@pytest.mark.slow
def test_garbage_history_on_resume(tmp_path, capsys, xtb_files):
    out = tmp_path / "run"
    args = ["select", xtb_files[0], *LOOP, "-o", out]
    status, _, err = run_cli(capsys, *args)
    assert status == 0, err
    for garbage in ([{"test": 1}], ["x"], [{"n_train": 20, "iteration": 0}]):
        (out / "history.json").write_text(json.dumps(garbage))
        before = (out / "model.json").read_bytes()
        status, _, err = run_cli(capsys, *args, "--resume")
        assert_one_line_error(status, err, "history.json", "damaged")
        assert (out / "model.json").read_bytes() == before


def test_a_working_directory_that_cannot_be_read(
    tmp_path, capsys, xtb_file, monkeypatch
):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    status, _, err = run_cli(capsys, "cluster", xtb_file, "-o", "c.npz", *SMALL)
    assert_one_line_error(status, err, "working directory")


@pytest.mark.slow
def test_a_working_directory_that_may_not_be_searched(tmp_path, xtb_files, monkeypatch):
    """The red team's case: ``-o ro/sub/c.npz`` from a folder without search
    permission. Root ignores permissions unless it drops the capabilities that
    let it (``setpriv``), so the command runs in a subprocess."""
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv: permissions cannot be tested")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
    here = tmp_path / "here"
    (here / "ro").mkdir(parents=True)
    monkeypatch.chdir(here)
    here.chmod(0)
    try:
        argv = [sys.executable, "-m", "ase_flatten.cli.main", "cluster"]
        done = subprocess.run(
            [*prefix, *argv, str(xtb_files[0]), "-o", "ro/sub/c.npz", *SMALL],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])),
        )  # fmt: skip
    finally:
        here.chmod(0o755)
    assert_one_line_error(
        done.returncode, done.stderr, "ro/sub/c.npz", "Permission denied"
    )
    assert not (here / "ro" / "sub").exists()


# -- silent ---------------------------------------------------------------------


def _swapped(xtb_dataset, first):
    """The dataset with two hydrogens of different heavy atoms swapped from
    frame ``first`` on, and which ones."""
    from ase_flatten.atom_order import hydrogen_partners
    from ase_flatten.data import Dataset

    partners = hydrogen_partners(xtb_dataset.numbers, xtb_dataset.positions[:1])[0]
    hydrogens = np.flatnonzero(xtb_dataset.numbers == 1)
    a = hydrogens[0]
    b = hydrogens[np.flatnonzero(partners != partners[0])[0]]
    positions = xtb_dataset.positions.copy()
    forces = xtb_dataset.forces.copy()
    for array in (positions, forces):
        array[first:, [a, b]] = array[first:, [b, a]]
    return Dataset(xtb_dataset.numbers, positions, xtb_dataset.energies, forces), a, b


def test_frames_with_swapped_hydrogens_are_refused(tmp_path, capsys, xtb_dataset):
    swapped, a, b = _swapped(xtb_dataset, 75)
    data = tmp_path / "swapped.extxyz"
    swapped.write(data)
    out = tmp_path / "c.npz"
    status, _, err = run_cli(capsys, "cluster", data, "-o", out, *SMALL)
    assert_one_line_error(
        status, err, "75 of 150 frames", "another order", f"H{min(a, b)}"
    )
    assert not out.exists()
    # a single swapped frame too
    swapped, *_ = _swapped(xtb_dataset, 149)
    swapped.write(data)
    status, _, err = run_cli(capsys, "cluster", data, "-o", out, *SMALL)
    assert_one_line_error(status, err, "1 of 150 frames")


def test_one_hydrogen_changing_partner_is_not_an_atom_order(xtb_dataset):
    """A proton transfer moves one hydrogen: allowed (salicylic acid does it)."""
    from ase_flatten.data import Dataset, check_atom_order

    numbers = xtb_dataset.numbers
    positions = xtb_dataset.positions.copy()
    hydroxyl = np.flatnonzero(numbers == 1)[-1]
    oxygen = int(np.flatnonzero(numbers == 8)[0])
    carbon = int(np.flatnonzero(numbers == 6)[0])
    # frame 5: the hydroxyl H sits next to C0 instead of O (one partner moved)
    direction = positions[5, carbon] - positions[5, oxygen]
    positions[5, hydroxyl] = positions[5, carbon] - 1.1 * direction / np.linalg.norm(
        direction
    )
    check_atom_order(
        Dataset(numbers, positions, xtb_dataset.energies, xtb_dataset.forces)
    )


def test_periodic_frames_are_refused_for_training(tmp_path, capsys, xtb_dataset):
    def periodic(atoms):
        atoms.cell = [12.0, 12.0, 12.0]
        atoms.pbc = True

    data = _frames_file(tmp_path / "periodic.extxyz", xtb_dataset, periodic, n=60)
    out = tmp_path / "m"
    status, _, err = run_cli(
        capsys, "train", data, *SGDML, "--size", "20", *SMALL, "-o", out
    )
    assert_one_line_error(status, err, "frame 0 is periodic", "pbc=False")
    assert not out.exists()


@pytest.mark.slow
def test_model_numbers_edited_to_another_element(model_copy, monkeypatch):
    from ase_flatten import FlattenedCalculator
    from ase_flatten.models import load_model

    meta = model_copy / "model.json"
    numbers = json.loads(meta.read_text())["numbers"]
    _edit_json(meta, numbers=[7, *numbers[1:]])
    with pytest.raises(InputError, match="model.json: numbers describe C.*sgdml"):
        load_model(model_copy)
    with pytest.raises(InputError, match="numbers describe"):
        FlattenedCalculator(str(model_copy))
    # the domain's own numbers are checked too (a backend that records none)
    from ase_flatten.backends.sgdml import SGDMLBackend

    monkeypatch.setattr(SGDMLBackend, "saved_numbers", lambda self: None)
    with pytest.raises(InputError, match="domain.npz"):
        load_model(model_copy)


@pytest.mark.slow
def test_a_scaled_molecule_warns_once(tmp_path, capsys, caplog, xtb_dataset, model):
    from ase_flatten import FlattenedCalculator

    calc = FlattenedCalculator(str(model))
    atoms = xtb_dataset.to_atoms(0)
    atoms.calc = calc
    with caplog.at_level(logging.WARNING, logger="ase_flatten"):
        atoms.get_potential_energy()
        assert not caplog.records
        atoms.positions *= 20
        atoms.get_potential_energy()
        atoms.positions *= 1.01
        atoms.get_potential_energy()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "far outside the model's training data" in warnings[0]
    # predict says it for the file, once, with the count
    big = tmp_path / "big.extxyz"
    scaled = xtb_dataset.subset(range(4))
    scaled.positions[2:] *= 20
    scaled.write(big)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ase_flatten"):
        status, _, err = run_cli(
            capsys, "predict", big, "--model", model, "-o", tmp_path / "p.extxyz"
        )
    assert status == 0, err
    warnings = [r.getMessage() for r in caplog.records if "far outside" in r.message]
    assert len(warnings) == 1 and "2 of 4 frames" in warnings[0], warnings


def test_options_that_would_be_ignored_are_refused(tmp_path, capsys, xtb_file):
    out = tmp_path / "c.npz"
    status, _, err = run_cli(
        capsys, "cluster", xtb_file, "-o", out, "--reduce", "pca",
        "--components", "500", *SMALL,
    )  # fmt: skip
    assert_one_line_error(status, err, "--components", "36-dimensional", "at most 36")
    assert not out.exists()
    status, _, err = run_cli(
        capsys, "select", xtb_file, *LOOP, "-o", tmp_path / "s", "--threshold",
        "mass", "--factor", "5",
    )  # fmt: skip
    assert_one_line_error(status, err, "--factor 5", "--threshold mass")
    assert not (tmp_path / "s").exists()


# -- implausible files -----------------------------------------------------------


def test_a_sparse_file_is_refused_before_it_is_read(
    tmp_path, capsys, xtb_file, monkeypatch
):
    import ase.io

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(ase.io, "read", no_reading)
    for name, size, head in (
        ("sparse.extxyz", 2 * 1024**3, b""),
        ("tail.xyz", 2 * 1024**3, xtb_file.read_bytes()[:5000]),
    ):
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.write(head)
            handle.truncate(size)
        start = time.perf_counter()
        status, _, err = run_cli(capsys, "cluster", path, "-o", tmp_path / "c.npz")
        assert_one_line_error(status, err, str(path), "NUL bytes")
        assert time.perf_counter() - start < 5


def test_a_file_too_large_for_memory_is_refused(
    tmp_path, capsys, xtb_file, monkeypatch
):
    import ase_flatten.data

    size = xtb_file.stat().st_size
    monkeypatch.setattr(ase_flatten.data, "_available_memory", lambda: 3 * size)
    status, _, err = run_cli(capsys, "cluster", xtb_file, "-o", tmp_path / "c.npz")
    assert_one_line_error(status, err, "available", "FILE@0:N")
    status, _, err = run_cli(
        capsys, "cluster", f"{xtb_file}@0:60", "-o", tmp_path / "c.npz", *SMALL
    )
    assert status == 0, err
