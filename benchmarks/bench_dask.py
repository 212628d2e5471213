"""Pool predictions on Dask workers against in-process.

Trains sGDML (fixed sigma) on random frames of a dataset, then predicts a pool of
frames (all of the dataset by default, 20,000 for the shared data) in-process and
through :mod:`ase_flatten.dask_workers` on LocalClusters of 1 and 2 single-threaded
worker processes, at several chunk sizes. Each Dask measurement is what one
selection iteration pays: save the freshly trained model for the workers, each
worker loads it once, the chunks go out and come back in order. The overhead per
chunk is the slope of the 1-worker time against the number of chunks. With
``--gap-frames N`` it also fits GAP (the paper's SOAP) and measures its cost per
frame, in-process and on 2 workers, and prints what a 10^6-frame pool costs on 1,
16 and 128 cores from the measured numbers.

usage: python benchmarks/bench_dask.py [--data FILE] [--frames 20000]
       [--train 200] [--chunks 500 2500 20000] [--gap-frames 200] [-o OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ethanol_xtb500K.xyz.gz"


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def cpu_timed(function, *args, **kwargs):
    """(wall s, CPU s of this process, result): CPU time does not grow with load."""
    cpu = time.process_time()
    wall, result = timed(function, *args, **kwargs)
    return wall, time.process_time() - cpu, result


def on_workers(n_workers, backend, dataset, idx, chunks, reference, repeat):
    """Seconds per 'iteration' (save + predict) on n workers, per chunk size."""
    from distributed import get_task_stream

    from ase_flatten.dask_workers import WorkerPool, dask_client

    n = n_workers
    rows = []
    with (
        dask_client(f"local:{n_workers}") as client,
        tempfile.TemporaryDirectory() as scratch,
    ):
        pool = WorkerPool(client, Path(scratch) / "models")
        # workers import the backend's library on their first model: once per run
        first, _ = timed(pool.predictor(backend).predict, dataset, idx[:10])
        for chunk in chunks:
            pool.chunk_frames = chunk
            runs = []
            for _ in range(repeat):
                with get_task_stream(client) as stream:
                    start = time.perf_counter()
                    predictor = pool.predictor(backend)  # a new model, as each step
                    energies, forces = predictor.predict(dataset, idx, progress=False)
                    wall = time.perf_counter() - start
                compute = sum(
                    part["stop"] - part["start"]
                    for task in stream.data
                    for part in task["startstops"]
                    if part["action"] == "compute"
                )
                # wall time not spent predicting on the busiest worker
                runs.append(dict(wall=wall, compute=compute, rest=wall - compute / n))
            assert np.array_equal(energies, reference[0])
            assert np.array_equal(forces, reference[1])
            best = min(runs, key=lambda r: r["wall"])
            rows.append(
                dict(
                    workers=n_workers,
                    chunk=predictor.chunk_frames,
                    chunks=predictor.timings[-1]["chunks"],
                    seconds=best["wall"],
                    compute_s=best["compute"],
                    overhead_s=min(r["rest"] for r in runs),
                    runs=runs,
                )
            )
            print(rows[-1], flush=True)
        pool.close()
    return first, rows


def gap_cost(dataset, train_frames, n_frames, seed):
    """GAP fit on train_frames; ms per frame in-process and on 2 workers."""
    from ase_flatten.backends import make_backend
    from ase_flatten.dask_workers import WorkerPool, dask_client

    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(len(dataset), train_frames, replace=False))
    frames = np.setdiff1d(np.arange(len(dataset)), train)[:n_frames]
    fit_s, backend = timed(make_backend("gap", random_state=seed).fit, dataset, train)
    here_s, cpu_s, reference = cpu_timed(
        backend.predict, dataset, frames, progress=False
    )
    with tempfile.TemporaryDirectory() as scratch:  # what a worker pays per model
        start = time.perf_counter()
        backend.save(scratch)
        saved_s = time.perf_counter() - start
        copy = type(backend).load(scratch, backend.numbers_, backend.params)
        copy.predict_positions(dataset.positions[frames[:1]])
        load_s = time.perf_counter() - start - saved_s
    with (
        dask_client("local:2") as client,
        tempfile.TemporaryDirectory() as scratch,
    ):
        pool = WorkerPool(client, Path(scratch) / "models", chunk_frames=64)
        pool.predictor(backend).predict(dataset, frames[:4], progress=False)  # warm
        there_s, result = timed(
            pool.predictor(backend).predict, dataset, frames, progress=False
        )
        pool.close()
    assert np.array_equal(result[1], reference[1])
    return dict(
        train_frames=train_frames,
        frames=len(frames),
        fit_s=fit_s,
        save_s=saved_s,
        load_and_first_frame_s=load_s,
        in_process_ms_per_frame=1000 * here_s / len(frames),
        in_process_cpu_ms_per_frame=1000 * cpu_s / len(frames),
        two_workers_ms_per_frame=1000 * there_s / len(frames),
    )


def projection(ms_per_frame, chunk_overhead_s, fixed_s, chunk=2048, n=10**6):
    """Seconds of one pool prediction of n frames on 1, 16 and 128 cores."""
    rows = []
    n_chunks = math.ceil(n / chunk)
    for cores in (1, 16, 128):
        waves = math.ceil(n_chunks / cores)  # chunks each core runs, the last wave
        compute = waves * chunk * ms_per_frame / 1000
        rows.append(
            dict(
                cores=cores,
                chunk=chunk,
                chunks=n_chunks,
                ideal_s=n * ms_per_frame / 1000 / cores,
                seconds=compute + waves * chunk_overhead_s + fixed_s,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--frames", type=int, default=None, help="pool (all)")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--chunks", type=int, nargs="+", default=[500, 2500, 20000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--gap-frames", type=int, default=0)
    parser.add_argument("--gap-train", type=int, default=100)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from ase_flatten.backends import make_backend
    from ase_flatten.data import read_dataset

    load_before = os.getloadavg()
    dataset = read_dataset(args.data)
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(len(dataset), args.train, replace=False))
    idx = np.arange(len(dataset))[: args.frames]
    fit_s, backend = timed(
        make_backend("sgdml", sigma=10, random_state=0).fit, dataset, train
    )
    runs = [cpu_timed(backend.predict, dataset, idx, progress=False) for _ in range(2)]
    here_s = min(s for s, _, _ in runs)
    reference = runs[0][2]
    print(f"in-process: {here_s:.2f} s for {len(idx)} frames", flush=True)
    results = dict(
        data=str(args.data),
        pool_frames=len(idx),
        train_frames=args.train,
        sgdml_fit_s=fit_s,
        in_process_s=here_s,
        in_process_runs=[s for s, _, _ in runs],
        in_process_cpu_s=min(c for _, c, _ in runs),
        dask=[],
        first_model_s={},
    )
    for n in args.workers:
        first, rows = on_workers(
            n, backend, dataset, idx, args.chunks, reference, args.repeat
        )
        results["first_model_s"][n] = first
        results["dask"] += rows
    # overhead = fixed + per chunk x chunks, fitted on the 1-worker runs' time
    # outside the predictions (robust to the machine's load, unlike wall times)
    one = [r for r in results["dask"] if r["workers"] == 1]
    slope, intercept = np.polyfit(
        [r["chunks"] for r in one], [r["overhead_s"] for r in one], 1
    )
    results["chunk_overhead_s"] = float(slope)
    results["fixed_overhead_s"] = float(intercept)
    if args.gap_frames:
        gap = gap_cost(dataset, args.gap_train, args.gap_frames, seed=0)
        results["gap"] = gap
        # per iteration: the fixed overhead, and each worker loads the new model
        fixed_s = max(results["fixed_overhead_s"], 0.0) + gap["load_and_first_frame_s"]
        results["projection"] = {
            f"{ms:.1f} ms/frame": projection(
                ms, max(results["chunk_overhead_s"], 0.0), fixed_s
            )
            for ms in (gap["in_process_cpu_ms_per_frame"], 22.0)  # 22: BENCHMARKS.md
        }
    results["load_average"] = dict(before=load_before, after=os.getloadavg())
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    text = json.dumps(results, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
