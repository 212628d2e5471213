"""Labelling throughput of the oracle: tblite GFN2-xTB on 1 and 2 workers.

Labels the same frames of a dataset with ``label_frames`` into fresh label stores
and reports frames per second, the summed time inside the oracle's calls, and
the loop's overhead around them (wall time of a one-process call minus the time
in the oracle: keys, calculator builds, the store, NaN and shape checks).

    python benchmarks/bench_oracle.py ../shared/data/ethanol_xtb500K.xyz.gz -n 400
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ase_flatten.data import read_dataset
from ase_flatten.oracle import LabelStore, Oracle, label_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("-n", type=int, default=400, help="frames to label")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--method", default="GFN2-xTB")
    args = parser.parse_args()
    data = read_dataset(args.data, index=f"0:{args.n}")
    oracle = Oracle("tblite.ase:TBLite", {"method": args.method, "verbosity": 0})
    rows = []
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory() as tmp:
            store = LabelStore(Path(tmp) / "labels.jsonl")
            start = time.perf_counter()
            _, _, ok, stats = label_frames(
                data.numbers, data.positions, oracle, store, jobs=jobs, progress=False
            )
            wall = time.perf_counter() - start
        rows.append(
            {
                "jobs": jobs,
                "frames": len(data),
                "labelled": int(ok.sum()),
                "wall_s": round(wall, 3),
                "frames_per_s": round(len(data) / wall, 1),
                "oracle_s": round(stats.oracle_seconds, 3),
                "ms_per_call": round(1000 * stats.oracle_seconds / len(data), 2),
                "overhead_share": round((wall - stats.oracle_seconds) / wall, 3)
                if jobs == 1
                else None,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        "overhead = (wall - time inside the oracle) / wall, one process; "
        f"{np.mean([r['ms_per_call'] for r in rows]):.2f} ms per call on average"
    )


if __name__ == "__main__":
    main()
