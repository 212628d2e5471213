"""``--dask``: a real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

The fixture starts them as a user would (each under its own session, stopped by
killing its process group); ``select``, ``errors`` and ``md-validate`` through
them must give what the in-process path gives, also when a worker dies mid-run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from md_validation.cli import main as md_main  # noqa: E402
from tests.test_cli import assert_one_line_error, run_cli  # noqa: E402

pytestmark = pytest.mark.slow  # Dask clusters

DASK = str(Path(sys.executable).with_name("dask"))
LOOP = ["--init", "20", "--step", "8", "--iterations", "2", "--n-geometry", "3",
        "--n-energy", "2", "--n-fine", "12", "-p", "sigma=20"]  # fmt: skip
CLUSTERS = ["--n-geometry", "3", "--n-energy", "2"]
BATCH = 16  # sGDML's batch for these tests: chunks of 2 batches, several per pool


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: The Dask config docs/tutorials/dask.md recommends for workers (glibc's adaptive mmap
#: threshold stays on: predictions are not slowed down by Dask's malloc setting).
WORKER_CONFIG = """distributed:
  nanny:
    pre-spawn-environ:
      MALLOC_TRIM_THRESHOLD_: null
"""


def _start(argv, log: Path) -> subprocess.Popen:
    """A process in a new session (its own process group), with the Dask config
    of its log folder."""
    (log.parent / "dask.yaml").write_text(WORKER_CONFIG)
    env = dict(os.environ, DASK_CONFIG=str(log.parent))
    with open(log, "w") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def _stop(process: subprocess.Popen) -> None:
    """Stop a process and every child of its group (a worker's nanny and worker)."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _worker(address, log):
    return _start(
        [DASK, "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
         "--nthreads", "1", "--no-dashboard"],
        log,
    )  # fmt: skip


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """Address of a scheduler with two single-threaded workers; and a client."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask_logs")
    address = f"tcp://127.0.0.1:{_free_port()}"
    processes = []
    try:
        processes.append(
            _start(
                [DASK, "scheduler", "--host", "127.0.0.1", "--port",
                 address.rsplit(":", 1)[1], "--no-dashboard"],
                logs / "scheduler.log",
            )
        )  # fmt: skip
        for k in range(2):
            processes.append(_worker(address, logs / f"worker{k}.log"))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            trims = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
            assert set(trims.values()) == {None}
            yield address, client
    finally:
        for process in processes[::-1]:
            _stop(process)


@pytest.fixture()
def small_batches(monkeypatch):
    """sGDML predicts 16 frames per call here and on the workers (sent with the
    model), so that 32-frame chunks split the pool in several tasks."""
    from ase_flatten.backends.sgdml import SGDMLBackend

    monkeypatch.setattr(SGDMLBackend, "batch_size", BATCH)


def test_select_and_errors_on_workers_match_in_process(
    scheduler, small_batches, tmp_path, capsys, xtb_files
):
    from ase_flatten.dask_workers import worker_loads

    address, client = scheduler
    data, _ = xtb_files
    status, _, err = run_cli(capsys, "select", data, *LOOP, "-o", tmp_path / "here")
    assert status == 0, err
    dask = ["--dask", address, "--dask-chunk", str(2 * BATCH)]
    status, out, err = run_cli(
        capsys, "select", data, *LOOP, "-o", tmp_path / "there", *dask
    )
    assert status == 0, err
    assert "36 frames selected" in out
    here, there = tmp_path / "here", tmp_path / "there"
    np.testing.assert_array_equal(
        np.load(here / "train_indices.npy"), np.load(there / "train_indices.npy")
    )
    history = [json.loads((d / "history.json").read_text()) for d in (here, there)]
    for a, b in zip(*history, strict=True):
        assert a["test"] == b["test"]  # every number, to the last bit
        assert a.get("added") == b.get("added")
        assert a.get("pool_cluster_force_rmse") == b.get("pool_cluster_force_rmse")
    assert not (there / ".dask-models").exists()
    # each model (2 iterations + the final one) reached each worker at most once,
    # though its pool predictions went out in 4 chunks of 32 frames
    loads = client.run(worker_loads)
    per_model = {}
    for counts in loads.values():
        assert set(counts.values()) == {1}
        for token in counts:
            per_model[token] = per_model.get(token, 0) + 1
    assert len(per_model) >= 3 and max(per_model.values()) <= 2

    # errors --model: the same per-frame errors from the workers
    for out_dir, extra in ((tmp_path / "e_here", []), (tmp_path / "e_there", dask)):
        status, _, err = run_cli(
            capsys, "errors", data, "--model", there, *CLUSTERS, "-o", out_dir, *extra
        )
        assert status == 0, err
    assert (tmp_path / "e_here" / "frame_errors.csv").read_bytes() == (
        tmp_path / "e_there" / "frame_errors.csv"
    ).read_bytes()
    status, _, err = run_cli(
        capsys, "errors", data, "--predicted", data, "-o", tmp_path / "e", *dask
    )
    assert_one_line_error(status, err, "--dask", "--model")


def test_unreachable_scheduler_is_one_line(tmp_path, capsys, xtb_files):
    data, _ = xtb_files
    # a subprocess with a time limit: a hang fails the test instead of blocking
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ase-flatten")), "select", str(data),
         *LOOP, "-o", str(tmp_path / "s"), "--dask", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert_one_line_error(
        done.returncode, done.stderr, "--dask tcp://127.0.0.1:1", "no Dask scheduler"
    )
    assert not (tmp_path / "s").exists()
    status, _, err = run_cli(
        capsys, "select", data, *LOOP, "-o", tmp_path / "s", "--dask", "local:0"
    )
    assert_one_line_error(status, err, "--dask local:0", "expected local:N")


# -- md-validate -------------------------------------------------------------------

REPLICAS = 3


def _md_args(model, start, out):
    return [
        "--model", f"m={model}", "--start", start, "--temperatures", "300",
        "--steps", "400", "--replicas", str(REPLICAS), "--stride", "20",
        "-o", out, "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sgdml_model(tmp_path_factory, xtb_dataset) -> Path:
    """sGDML on 30 frames (sigma 20)."""
    from ase_flatten.backends import make_backend
    from ase_flatten.models import save_model

    train = np.arange(0, 150, 5)
    backend = make_backend("sgdml", sigma=20).fit(xtb_dataset, train)
    path = tmp_path_factory.mktemp("dask_models") / "sgdml"
    return save_model(path, backend, train, xtb_dataset)


@pytest.fixture(scope="module")
def md_in_process(tmp_path_factory, sgdml_model, xtb_files):
    out = tmp_path_factory.mktemp("md_here") / "md"
    start, _ = xtb_files
    assert md_main([str(a) for a in _md_args(sgdml_model, start, out)]) == 0
    return out


def _assert_same_runs(a: Path, b: Path) -> None:
    for k in range(REPLICAS):
        run = Path("m") / "300K" / f"replica{k}"
        assert (a / run / "thermo.csv").read_bytes() == (
            b / run / "thermo.csv"
        ).read_bytes()
        for info in (json.loads((d / run / "run.json").read_text()) for d in (a, b)):
            assert info["seed"] == k and info["steps_done"] == 400


def test_md_replicas_on_workers_match(
    scheduler, md_in_process, sgdml_model, xtb_files, tmp_path, capsys
):
    address, _ = scheduler
    start, _ = xtb_files
    out = tmp_path / "md"
    status, _, err = run_cli(
        capsys, *_md_args(sgdml_model, start, out), "--dask", address, entry=md_main
    )
    assert status == 0, err
    _assert_same_runs(md_in_process, out)


def test_md_survives_a_killed_worker(
    scheduler, md_in_process, sgdml_model, xtb_files, tmp_path, tmp_path_factory
):
    """A third worker dies (SIGKILL to its process group) while it runs a
    replica: the scheduler reruns that replica elsewhere, the results are the
    same."""
    address, client = scheduler
    start, _ = xtb_files
    before = set(client.scheduler_info()["workers"])
    victim = _worker(address, tmp_path_factory.mktemp("dask_logs") / "victim.log")
    try:
        client.wait_for_workers(3, timeout=120)
        (victim_address,) = set(client.scheduler_info()["workers"]) - before
        out = tmp_path / "md"
        argv = [str(a) for a in _md_args(sgdml_model, start, out)]
        status = []
        run = threading.Thread(
            target=lambda: status.append(md_main([*argv, "--dask", address]))
        )
        run.start()
        killed = None
        while run.is_alive() and killed is None:
            running = client.processing(workers=[victim_address])[victim_address]
            if running:
                time.sleep(0.3)  # let it get into the MD run
                os.killpg(victim.pid, signal.SIGKILL)
                killed = running
            time.sleep(0.05)
        run.join(120)
        assert killed, "the extra worker never got a replica"
        assert status == [0]
        _assert_same_runs(md_in_process, out)
    finally:
        _stop(victim)


def test_oracle_labels_on_workers(scheduler, xtb_dataset, tmp_path):
    """GFN2-xTB labels computed on the Dask workers: the labels of worker
    processes, none paid twice on resume, failures recorded and skipped."""
    from ase_flatten.oracle import LabelStore, Oracle, label_frames

    _, client = scheduler
    xtb = Oracle("tblite.ase:TBLite", {"method": "GFN2-xTB", "verbosity": 0})
    numbers, positions = xtb_dataset.numbers, xtb_dataset.positions[:6]
    here = label_frames(numbers, positions, xtb, LabelStore(tmp_path / "a"), jobs=2)
    there = label_frames(
        numbers, positions, xtb, LabelStore(tmp_path / "b"), client=client
    )
    assert there[2].all() and there[3].calls == 6
    np.testing.assert_allclose(there[0], here[0], rtol=1e-12)
    np.testing.assert_allclose(there[1], here[1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(there[0], xtb_dataset.energies[:6], atol=1e-4)
    # a resumed run sends only the two new frames to the workers
    more = xtb_dataset.positions[:8]
    again = label_frames(numbers, more, xtb, LabelStore(tmp_path / "b"), client=client)
    assert again[3].reused == 6 and again[3].calls == 2
    np.testing.assert_array_equal(again[0][:6], there[0])
    # an oracle that cannot label two of the frames: recorded on the workers,
    # skipped, and the run goes on
    xtb_dataset.write(tmp_path / "four.extxyz", np.arange(4))
    partial = Oracle(
        "ase_flatten.oracle:stored_labels",
        {"path": str(tmp_path / "four.extxyz")},
        max_failure_share=0.5,
    )
    energies, _, ok, stats = label_frames(
        numbers, positions, partial, LabelStore(tmp_path / "c"), client=client
    )
    assert ok.tolist() == [True] * 4 + [False] * 2 and stats.failed == 2
    np.testing.assert_array_equal(energies[:4], xtb_dataset.energies[:4])
    records = [json.loads(line) for line in open(tmp_path / "c")]
    assert sum("KeyError" in r.get("error", "") for r in records) == 2


def test_select_from_an_unlabelled_pool_labels_on_workers(
    scheduler, xtb_files, tmp_path, capsys
):
    import ase.io

    address, _ = scheduler
    frames = ase.io.read(xtb_files[0], ":")
    for i, atoms in enumerate(frames):
        if i % 3:
            atoms.calc = None  # two of every three frames without labels
    pool = tmp_path / "pool.extxyz"
    ase.io.write(pool, frames)
    xtb = '{"method": "GFN2-xTB", "verbosity": 0}'
    oracle = ["--oracle", "tblite.ase:TBLite", "--oracle-kwargs", xtb]
    oracle += ["--error-sample", "3"]
    loop = [*LOOP, "--n-energy", "1"]
    runs = {}
    for name, where in (("jobs", ["--jobs", "2"]), ("dask", ["--dask", address])):
        status, out, err = run_cli(
            capsys, "select", pool, *loop, *oracle, *where, "-o", tmp_path / name
        )
        assert status == 0, err
        runs[name] = tmp_path / name
    np.testing.assert_array_equal(
        np.load(runs["jobs"] / "train_indices.npy"),
        np.load(runs["dask"] / "train_indices.npy"),
    )
    paid = [
        json.loads((runs[k] / "history.json").read_text())[-1]["labels_paid"]
        for k in runs
    ]
    assert paid[0]["calls"] == paid[1]["calls"] > 0
    assert "labels paid" in out
