"""Does reducing the descriptor sharpen the clusters of a larger molecule?

The paper's clustering weakens for larger molecules (42 atoms: 861 distances) and
proposes dimensionality reduction. For each dataset this trains default (random)
models, predicts every frame outside their training sets once, then clusters the
dataset with the plain pairwise distances and with PCA / kernel PCA reductions,
and measures how well each clustering separates well- from poorly-predicted
frames:

* worst / best cluster force RMSE (clusters with at least ``--min-frames``
  evaluated frames), and worst / overall;
* eta^2, the share of the variance of the per-frame force RMSE that the cluster
  labels explain (1: clusters are pure error levels; ~K/M: no better than chance);
* the same for the geometry clusters alone (the stage the descriptor acts on),
  and for a random partition with the same cluster sizes: the noise floor.

usage: python benchmarks/bench_reduction.py DATA [DATA ...] [--backend sgdml]
       [--size 100] [--seeds 0 1] [--components 10 20] [-o OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from suite import cli  # benchmarks/suite.py: run `ase-flatten` once, keep its time

ROOT = Path(__file__).resolve().parents[1]


def separation(frame_rmse: np.ndarray, labels: np.ndarray, min_frames: int) -> dict:
    """Worst/best and worst/overall cluster force RMSE, and eta^2."""
    ids, counts = np.unique(labels, return_counts=True)
    sq = frame_rmse**2
    rmse = np.array([np.sqrt(sq[labels == c].mean()) for c in ids])
    big = rmse[counts >= min_frames]
    means = np.array([frame_rmse[labels == c].mean() for c in ids])
    between = (counts * (means - frame_rmse.mean()) ** 2).sum()
    total = ((frame_rmse - frame_rmse.mean()) ** 2).sum()
    overall = np.sqrt(sq.mean())
    return {
        "clusters": int(len(ids)),
        "worst_best": float(big.max() / big.min()),
        "worst_overall": float(big.max() / overall),
        "eta2": float(between / total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--backend", default="sgdml")
    parser.add_argument("-p", "--param", action="append", default=[])
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--components", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--min-frames", type=int, default=10)
    parser.add_argument(
        "-o", "--output", default=ROOT / "benchmarks" / "output" / "reduction"
    )
    args = parser.parse_args()

    from ase_flatten.clustering import cluster_dataset
    from ase_flatten.data import read_dataset
    from ase_flatten.files import write_text
    from ase_flatten.models import load_model

    params = [x for p in args.param for x in ("-p", p)]
    configs = [(None, 0)] + [(m, k) for m in ("pca", "kpca") for k in args.components]
    out = Path(args.output)
    rows, start = [], time.perf_counter()
    for data in args.data:
        name = Path(data).name.split(".")[0]
        dataset = read_dataset(data)
        frame_rmse = {}
        for seed in args.seeds:
            model_dir = out / name / f"{args.backend}_seed{seed}"
            cli(model_dir, "train", data, "--backend", args.backend, *params,
                "--size", args.size, "--seed", seed)  # fmt: skip
            model = load_model(model_dir)
            frames = np.setdiff1d(np.arange(len(dataset)), model.train_indices)
            _, forces = model.backend.predict(dataset, frames)
            diff = forces - dataset.forces[frames]
            frame_rmse[seed] = (frames, np.sqrt((diff**2).mean(axis=(1, 2))))
        for method, k in configs:
            t0 = time.perf_counter()
            clusters = cluster_dataset(dataset, reduce=method, n_components=k or 10)
            seconds = time.perf_counter() - t0
            for seed, (frames, rmse) in frame_rmse.items():
                labels = clusters.labels_[frames]
                shuffled = np.random.default_rng(seed).permutation(labels)
                row = {
                    "data": name,
                    "atoms": len(dataset.numbers),
                    "descriptor": f"{method} {k}" if method else "distances",
                    "seed": seed,
                    "cluster_s": seconds,
                    "overall": float(np.sqrt((rmse**2).mean())),
                    **separation(rmse, labels, args.min_frames),
                    # the descriptor acts on the geometry stage only
                    "geometry": separation(
                        rmse, clusters.geometry_labels_[frames], args.min_frames
                    ),
                    "random": separation(rmse, shuffled, args.min_frames),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    import sklearn

    meta = {
        "datasets": ", ".join(Path(d).name for d in args.data),
        "model": f"{args.backend} {' '.join(params)}, {args.size} random frames, "
        f"seeds {' '.join(map(str, args.seeds))}; all other frames evaluated",
        "clustering": "10 Ward x 5 KMeans (defaults)",
        "machine": f"{platform.machine()}, 2 cores (OMP_NUM_THREADS=1)",
        "date": time.strftime("%Y-%m-%d"),
        "versions": f"python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}",
        "wall time": f"{time.perf_counter() - start:.0f} s",
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "reduction.json", json.dumps({"meta": meta, "rows": rows}))
    write_text(out / "reduction.md", markdown(rows, meta))
    print((out / "reduction.md").read_text())


def markdown(rows, meta) -> str:
    lines = ["# Descriptor reduction and cluster separation", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines += [
        "| data (atoms) | descriptor | worst / best | worst / overall | eta^2 | "
        "geometry stage only: worst / best, eta^2 | "
        "random partition: worst / best, eta^2 | clustering (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    groups = {}
    for row in rows:
        groups.setdefault((row["data"], row["descriptor"]), []).append(row)

    def cell(group, key, source=None):
        values = [(r[source] if source else r)[key] for r in group]
        digits = 3 if key == "overall" else 2
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    def both(group, source):
        return f"{cell(group, 'worst_best', source)}, {cell(group, 'eta2', source)}"

    for (data, descriptor), group in groups.items():
        cells = [
            f"{data} ({group[0]['atoms']}; {cell(group, 'overall')} eV/Å)",
            descriptor,
            cell(group, "worst_best"),
            cell(group, "worst_overall"),
            cell(group, "eta2"),
            both(group, "geometry"),
            both(group, "random"),
            f"{group[0]['cluster_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from ase_flatten.exceptions import InputError

    try:
        main()
    except InputError as exc:  # one line, as the ase-flatten commands do
        sys.exit(f"error: {exc}")
