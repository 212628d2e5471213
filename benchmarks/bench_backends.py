"""Backends: training time, prediction time and calculator overhead on ethanol.

For each backend and training size (random frames, seed 0): wall time of ``fit``
with the backend's default hyperparameters, force RMSE on 1,000 held-out frames,
prediction time per frame (batched, over 1,000 frames), and the cost of one
energy+forces call through FlattenedCalculator against the library's own ASE
calculator on the same saved model (plain, and with the cluster/domain extras).

usage: python benchmarks/bench_backends.py [--backends sgdml schnet gap]
       [--sizes 100 200 400] [--data FILE] [-p backend:key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ethanol_xtb500K.xyz.gz"


def bare_calculator(backend, model_dir: Path):
    """The library's own ASE calculator for a saved model."""
    if backend.name in ("sgdml", "mace"):
        return backend.bare_calculator(model_dir)
    if backend.name == "schnet":
        from ase_flatten.backends.schnet import spk_calculator

        return spk_calculator(model_dir)
    from ase_flatten.backends.gap import quippy_potential

    return quippy_potential(model_dir)


def time_calls(calc, dataset, frames, repeat: int = 3) -> float:
    """Median over ``repeat`` runs of the mean seconds per energy+forces call."""
    from ase import Atoms

    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for i in frames:
            atoms = Atoms(numbers=dataset.numbers, positions=dataset.positions[i])
            atoms.calc = calc
            atoms.get_potential_energy()
            atoms.get_forces()
        runs.append((time.perf_counter() - start) / len(frames))
    return float(np.median(runs))


def bench(name, size, dataset, params, n_calls) -> dict:
    from ase_flatten import FlattenedCalculator
    from ase_flatten.backends import make_backend
    from ase_flatten.clustering import cluster_dataset
    from ase_flatten.error_analysis import cluster_errors
    from ase_flatten.models import save_model

    rng = np.random.default_rng(0)
    order = rng.permutation(len(dataset))
    train, test = np.sort(order[:size]), np.sort(order[-1000:])
    backend = make_backend(name, **params)
    start = time.perf_counter()
    backend.fit(dataset, train, held_out=test)  # never validates on test
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    energies, forces = backend.predict(dataset, test, progress=False)
    predict_s = (time.perf_counter() - start) / len(test)
    rmse = float(np.sqrt(np.mean((forces - dataset.forces[test]) ** 2)))

    with tempfile.TemporaryDirectory() as tmp:
        plain = save_model(Path(tmp) / "plain", backend, train, dataset)
        sub = dataset.subset(test)
        clusters = cluster_dataset(sub, n_geometry=10, n_energy=5)
        errors = cluster_errors(sub, energies, forces, clusters.labels_)
        extras = save_model(
            Path(tmp) / "extras",
            backend,
            train,
            dataset,
            clusters=clusters,
            cluster_errors=errors,
        )
        calls = test[:n_calls]
        bare = bare_calculator(backend, plain / "model")
        time_calls(bare, dataset, calls[:5], repeat=1)  # warm up
        t_bare = time_calls(bare, dataset, calls)
        t_flat = time_calls(FlattenedCalculator(plain), dataset, calls)
        t_extras = time_calls(FlattenedCalculator(extras, domain=True), dataset, calls)
    return {
        "backend": name,
        "n_train": size,
        "params": backend.params,
        "fit_s": fit_s,
        "test_force_rmse": rmse,
        "predict_ms_per_frame": 1e3 * predict_s,
        "bare_call_ms": 1e3 * t_bare,
        "flattened_call_ms": 1e3 * t_flat,
        "flattened_extras_call_ms": 1e3 * t_extras,
        "overhead_pct": 100 * (t_flat / t_bare - 1),
        "extras_overhead_pct": 100 * (t_extras / t_bare - 1),
    }


def parse_params(items):
    params = {}
    for item in items:
        backend, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        params.setdefault(backend, {})[key] = value
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["sgdml", "schnet", "gap"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("-p", "--param", action="append", default=[])
    parser.add_argument("-o", "--output", default=ROOT / "benchmarks" / "output")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from ase_flatten.data import read_dataset

    dataset = read_dataset(args.data)
    params = parse_params(args.param)
    rows = []
    for name in args.backends:
        for size in args.sizes:
            row = bench(name, size, dataset, params.get(name, {}), args.calls)
            rows.append(row)
            print(
                f"{name:6s} {size:4d} frames: fit {row['fit_s']:7.1f} s, "
                f"test force RMSE {row['test_force_rmse']:.4f} eV/Å, predict "
                f"{row['predict_ms_per_frame']:.3f} ms/frame, call: bare "
                f"{row['bare_call_ms']:.3f} ms, flattened "
                f"{row['flattened_call_ms']:.3f} ms ({row['overhead_pct']:+.1f}%), "
                "with extras "
                f"{row['flattened_extras_call_ms']:.3f} ms "
                f"({row['extras_overhead_pct']:+.1f}%)",
                flush=True,
            )
    meta = {
        "data": args.data,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.output).mkdir(parents=True, exist_ok=True)
    result = Path(args.output) / f"backends_{'_'.join(args.backends)}.json"
    result.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"results: {result}", file=sys.stderr)


if __name__ == "__main__":
    main()
