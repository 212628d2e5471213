"""KMeans energy levels on one OpenMP thread against the default threads.

Times :func:`ase_flatten.clustering._energy_levels` (scikit-learn KMeans on 1-D
energies, 5 levels, 10 restarts) on 10 geometry clusters of N Gaussian energies
each, with OpenMP limited to one thread and without a limit, twice each, and
checks that the labels agree. Wall time, process CPU time and the load average
are printed: other jobs on the machine change the wall time.

    python benchmarks/bench_kmeans_threads.py --frames 100000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from ase_flatten.clustering import _energy_levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="per cluster")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    energies = [rng.normal(scale=0.3, size=args.frames) for _ in range(10)]
    threads = max(
        (i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"),
        default=1,
    )
    results = {}
    for limit in (None, 1, None, 1):
        start, cpu = time.perf_counter(), time.process_time()
        with threadpool_limits(limit, user_api="openmp"):
            out = [_energy_levels(e, 5, 10, k) for k, e in enumerate(energies)]
        name = f"{limit or threads} thread(s)"
        print(
            f"{name}: {time.perf_counter() - start:.2f} s wall, "
            f"{time.process_time() - cpu:.2f} s CPU, load {os.getloadavg()[0]:.1f}"
        )
        results[limit] = out
    same = all(
        np.array_equal(a[0], b[0])
        for a, b in zip(results[None], results[1], strict=True)
    )
    largest = max(
        np.abs(a[1] - b[1]).max()
        for a, b in zip(results[None], results[1], strict=True)
    )
    print(f"labels identical: {same}; largest centre difference {largest:.1e} eV")


if __name__ == "__main__":
    main()
