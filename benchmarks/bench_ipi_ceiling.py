"""The i-PI route against i-PI's own ceiling: where a step's time goes.

Three measurements on the same ``input.xml`` (``md_validation``'s, ethanol in a
30 Å box, SVR at 300 K, 0.5 fs, properties flushed every step):

- **ceiling**: the i-PI server with its own ``i-pi-py_driver -m dummy`` client
  (zero forces, no model): what the server and the socket allow;
- **ours**: ``md_validation``'s ipi engine (``run_ipi``: the server, an ASE
  ``SocketClient`` in a forked process, ``MonitoredCalculator`` around
  ``FlattenedCalculator``);
- **model**: one ``FlattenedCalculator`` call (energy and forces of new
  positions) and one through ``MonitoredCalculator``, CPU time of this process
  in a loop over 500 frames of the data, best of 5 (``--calls-only``: only
  this).

Steps/s of a route are measured from two run lengths (``--short`` and
``--steps``): (long - short) / (wall(long) - wall(short)), which leaves out the
server's start. The ceiling with this model is 1 / (1 / ceiling + model call).
``--profile`` runs the client in this process under cProfile (the server as in
``run_ipi``) and writes the top functions. ``--reference FILE`` compares the
long run's trajectory with a saved one (``positions.npy`` of an earlier run).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_ipi_ceiling.py \\
        /work/shared/data/ethanol_xtb500K.xyz.gz --profile

Writes OUT/model (an sGDML model of 100 frames, sigma 10, trained once),
OUT/positions.npy (the long run's saved positions) and RESULTS/ipi_ceiling.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--short", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--tag", default="run")
    parser.add_argument(
        "--calls-only", action="store_true", help="only the per-call CPU times"
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "benchmarks/output/ipi_ceiling"
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks/results/ipi_ceiling"
    )
    args = parser.parse_args()
    from ase_flatten.data import read_dataset
    from ase_flatten.models import load_model

    args.output.mkdir(parents=True, exist_ok=True)
    data = read_dataset(args.data, index="0:2000")
    model_dir = args.output / "model"
    if not (model_dir / "model.json").exists():
        from ase_flatten.backends import make_backend
        from ase_flatten.models import save_model

        backend = make_backend("sgdml", random_state=0, sigma=10)
        train = np.arange(0, 1000, 10)
        backend.fit(data, train, held_out=np.arange(1000, 2000))
        save_model(model_dir, backend, train, data, overwrite=True)
    saved = load_model(model_dir)
    atoms = data.to_atoms(0)
    load_start = os.getloadavg()[0]
    row = {"tag": args.tag, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    row["model_call_ms"], row["monitored_call_ms"] = model_calls(saved, data)
    if args.calls_only:
        print(json.dumps(row))
        return
    ceiling, ours = [], []
    for _ in range(args.repeats):
        ceiling.append(rate(args, atoms, None, "dummy"))
        ours.append(rate(args, atoms, saved, "ours"))
    row["ceiling_steps_per_s"] = ceiling
    row["ours_steps_per_s"] = ours
    per_step = 1 / np.median(ceiling) + row["model_call_ms"] / 1000
    row["ceiling_with_model_steps_per_s"] = 1 / per_step
    row["share_of_ceiling_with_model"] = float(np.median(ours)) * per_step
    positions = np.load(args.output / "ours" / "positions.npy")
    if args.reference is not None:
        ref = np.load(args.reference)
        row["trajectory_max_diff_A"] = (
            float(np.abs(ref - positions).max())
            if ref.shape == positions.shape
            else f"shapes differ: {ref.shape} vs {positions.shape}"
        )
    np.save(args.output / f"positions_{args.tag}.npy", positions)
    if args.profile:
        row["profile"] = profile(args, atoms, saved)
    row["load"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "ipi_ceiling.json"
    rows = json.loads(out.read_text()) if out.exists() else []
    rows = [r for r in rows if r.get("tag") != args.tag] + [row]
    from ase_flatten.files import write_json

    write_json(out, rows)
    print(json.dumps({k: v for k, v in row.items() if k != "profile"}, indent=1))
    if args.profile:
        print(row["profile"])


def _atoms(data, i):
    from ase import Atoms

    return Atoms(data.numbers, positions=data.positions[i])


def model_calls(saved, data, n: int = 500) -> tuple[float, float]:
    """ms per FlattenedCalculator call, bare and through MonitoredCalculator."""
    from ase_flatten.calculator import FlattenedCalculator
    from md_validation.failure import MonitoredCalculator

    times = []
    for wrap in (False, True):
        calc = FlattenedCalculator(saved)
        if wrap:
            calc = MonitoredCalculator(calc)
        atoms = _atoms(data, 0)
        atoms.calc = calc
        atoms.get_forces()
        best = np.inf
        for _ in range(5):  # CPU time of this process: the load apart
            start = time.process_time()
            for i in range(1, n + 1):
                atoms.positions = data.positions[i]
                atoms.get_potential_energy()
                atoms.get_forces()
            best = min(best, (time.process_time() - start) / n * 1000)
        times.append(best)
    return times[0], times[1]


def _settings(n_steps: int):
    from md_validation.settings import RunSettings

    return RunSettings(
        temperature_K=300.0, n_steps=n_steps, engine="ipi", seed=0, stride=10
    )


def _one_run(args, atoms, saved, kind: str, n_steps: int) -> float:
    """Wall seconds of one run of ``n_steps`` (server start to end)."""
    from md_validation.engines import ipi

    folder = args.output / kind
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "ours":
        from md_validation.single_run import calculator_factory

        start = time.perf_counter()
        ipi.run_ipi(calculator_factory(saved), atoms, _settings(n_steps), folder)
        wall = time.perf_counter() - start
        from md_validation.engines.ipi_files import read_xyz_trajectory

        frames = read_xyz_trajectory(folder / "ipi.pos_0.xyz")
        np.save(folder / "positions.npy", np.array([f.positions for f in frames]))
        return wall
    address = f"md-{uuid.uuid4().hex[:16]}"
    sock = ipi.socket_path(address)
    ipi.write_inputs(atoms, _settings(n_steps), folder, address)
    start = time.perf_counter()
    server = ipi.start_server(folder, sock, 60.0)
    driver = Path(sys.executable).with_name("i-pi-py_driver")
    client = subprocess.Popen(
        [str(driver), "-u", "-a", address, "-m", "dummy"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server.wait(timeout=600)
        wall = time.perf_counter() - start
    finally:
        ipi._stop_process(client, "dummy driver")
        ipi._stop_process(server, "i-pi server")
        sock.unlink(missing_ok=True)
    return wall


def rate(args, atoms, saved, kind: str) -> float:
    short = _one_run(args, atoms, saved, kind, args.short)
    long = _one_run(args, atoms, saved, kind, args.steps)
    return (args.steps - args.short) / (long - short)


def profile(args, atoms, saved, top: int = 25) -> str:
    """The client in this process under cProfile, for ``--steps`` steps."""
    from md_validation.engines import ipi
    from md_validation.failure import MonitoredCalculator
    from md_validation.single_run import calculator_factory

    folder = args.output / "profile"
    folder.mkdir(parents=True, exist_ok=True)
    address = f"md-{uuid.uuid4().hex[:16]}"
    sock = ipi.socket_path(address)
    start = ipi.write_inputs(atoms, _settings(args.steps), folder, address)
    server = ipi.start_server(folder, sock, 60.0)
    profiler = cProfile.Profile()
    try:
        work = start.copy()
        work.calc = MonitoredCalculator(calculator_factory(saved)())
        client = ipi._one_call_client(work.calc, address)  # the engine's client
        profiler.enable()
        client.run(work)
        profiler.disable()
        client.close()
        server.wait(timeout=60)
    finally:
        ipi._stop_process(server, "i-pi server")
        sock.unlink(missing_ok=True)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


if __name__ == "__main__":
    main()
