"""Clustering scaling: time and peak memory from 10^4 to 10^6 frames of ethanol.

Frames are real ethanol MD frames (the shared GFN2-xTB set when present, else the
demo's example data), tiled with 0.01 Å / 0.01 eV Gaussian noise up to the size.
Each size runs in a fresh process so its peak resident memory is its own. The timed
part is what `ase-flatten cluster` does after reading: pairwise-distance descriptor,
Ward on the subset, assignment of the rest, KMeans on energy (each step's time is
read from the clustering's log). Wall time, process CPU time and the machine's load
average are recorded: other jobs on the machine change the wall time.

usage: python benchmarks/bench_clustering.py [--sizes 10000 100000 1000000]
       [--source FILE] [--subset-size 5000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (
    ROOT.parent / "shared" / "data" / "ethanol_xtb500K.xyz.gz",
    ROOT / "examples" / "data" / "ethanol_gfn2_500K.extxyz",
)


def one_size(source: str, n_frames: int, subset_size: int) -> dict:
    """Run in a child process: build n_frames, cluster them, report."""
    import numpy as np

    from ase_flatten.clustering import TwoStageClustering, cluster_features
    from ase_flatten.data import read_dataset
    from ase_flatten.descriptors import pairwise_distances

    data = read_dataset(source)
    rng = np.random.default_rng(0)
    pick = rng.integers(len(data), size=n_frames)
    positions = data.positions[pick] + rng.normal(scale=0.01, size=(n_frames, 9, 3))
    energies = data.energies[pick] + rng.normal(scale=0.01, size=n_frames)
    del data, pick
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steps = StepTimes()
    logging.getLogger("ase_flatten.clustering").addHandler(steps)
    logging.getLogger("ase_flatten.clustering").setLevel(logging.INFO)
    cpu_start = time.process_time()
    start = time.perf_counter()
    X = pairwise_distances(positions)
    t_desc = time.perf_counter()
    X = cluster_features(X, energies)
    model = TwoStageClustering(subset_size=subset_size, random_state=0).fit(X)
    t_fit = time.perf_counter()
    return {
        **steps.times,
        "cpu_s": time.process_time() - cpu_start,
        "load_avg_1min": os.getloadavg()[0],
        "n_frames": n_frames,
        "subset_size": subset_size,
        "n_clusters": model.n_clusters_,
        "descriptor_s": t_desc - start,
        "fit_s": t_fit - t_desc,
        "total_s": t_fit - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
    }


class StepTimes(logging.Handler):
    """Reads the step times from the clustering's "clustered ..." log line."""

    def __init__(self):
        super().__init__()
        self.times = {}

    def emit(self, record):
        message = record.getMessage()
        for step in ("Ward", "assignment", "KMeans"):
            found = re.search(rf"{step}[^,]*? ([0-9.]+) s", message)
            if found:
                self.times[f"{step.lower()}_s"] = float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000, 1_000_000]
    )
    parser.add_argument("--source", help="labelled ethanol trajectory to tile")
    parser.add_argument("--subset-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", default=ROOT / "benchmarks" / "output")
    args = parser.parse_args()

    if args.child:
        source, n, subset = args.child
        print(json.dumps(one_size(source, int(n), int(subset))))
        return

    source = args.source or next((str(p) for p in SOURCES if p.exists()), None)
    if source is None:
        sys.exit("no ethanol data: run `make demo` first or pass --source FILE")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    rows = []
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            source,
            str(n),
            str(args.subset_size),
        ]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{n:>9d} frames: {r['total_s']:6.1f} s (descriptor "
            f"{r['descriptor_s']:.1f} s, clustering {r['fit_s']:.1f} s: Ward "
            f"{r.get('ward_s', 0):.1f} s, assignment {r.get('assignment_s', 0):.1f} "
            f"s, KMeans {r.get('kmeans_s', 0):.1f} s), CPU {r['cpu_s']:.1f} s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, load {r['load_avg_1min']:.1f}",
            flush=True,
        )
    meta = {
        "source": source,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.output).mkdir(parents=True, exist_ok=True)
    result = Path(args.output) / "clustering_scaling.json"
    result.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"results: {result}")


if __name__ == "__main__":
    main()
