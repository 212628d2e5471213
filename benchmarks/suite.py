"""The benchmark suite (issue 6): outlier detection, improvement, data efficiency.

One command over every dataset in a folder, through the project's own commands
(``ase-flatten train``, ``select``, ``compare``), for several seeds:

* outlier detection (Fig. 4): default (random) models of each backend; the worst
  cluster's test force RMSE against the overall RMSE;
* improvement (Table I, Fig. 5): default vs flattened sets of equal size, plus the
  energy, FPS and CUR strategies;
* data efficiency (Fig. 7): default models at 1x, 1.5x and 2x the flattened size
  against the flattened model, on the worst-cluster error.

``--size quick`` (50 + 2 x 25 frames) finishes in minutes on the demo data;
``--size full`` (100 + 3 x 50 frames, the largest that sGDML's analytic solver
trains at 2x on 16 atoms in 24 GB) takes hours on 2 cores; ``--size paper`` is the
paper's 200 + 8 x 100. Finished runs are kept and reused, so an interrupted suite
resumes where it stopped. Results: ``OUT/suite.md`` (tables
with machine, date, versions, sizes and wall time) and ``OUT/suite.json``.

usage: python benchmarks/suite.py [--data-dir DIR] [--size quick|full]
       [--seeds 0 1 2] [--backends sgdml schnet gap] [-o OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIZES = {
    # init, step, iterations; default sizes for the data-efficiency curve
    "quick": {"init": 50, "step": 25, "iterations": 2, "n_fine": 50},
    "full": {"init": 100, "step": 50, "iterations": 3, "n_fine": 100},
    "paper": {"init": 200, "step": 100, "iterations": 8, "n_fine": 200},
}
PARAMS = {  # fixed, cheap hyperparameters so the comparison is about the frames
    "sgdml": ["-p", "sigma=10"],
    "schnet": ["-p", "max_epochs=100"],
    "gap": [],
}


def cli(out: Path, *argv) -> float:
    """Run ``ase-flatten ...`` once; its wall time is kept in ``out/wall_s.txt``."""
    wall_file = out / "wall_s.txt"
    if (out / "model.json").exists():  # finished in an earlier run
        return float(wall_file.read_text()) if wall_file.exists() else float("nan")
    argv = [str(a) for a in argv] + ["-o", str(out)]
    if argv[0] == "select" and not (out / "checkpoint.json").exists():
        shutil.rmtree(out, ignore_errors=True)  # stopped before its first iteration
    if out.exists():  # interrupted: select resumes from its checkpoint
        argv.append("--resume" if argv[0] == "select" else "--overwrite")
    print("$ ase-flatten " + " ".join(argv), flush=True)
    start = time.perf_counter()
    subprocess.run([str(BIN / "ase-flatten"), *argv, "-q"], check=True)
    wall = time.perf_counter() - start
    wall_file.write_text(f"{wall:.1f}\n")
    return wall


def test_errors(run: Path) -> dict:
    """Overall and per-cluster test force RMSE saved by train/select."""
    errors = json.loads((run / "cluster_errors.json").read_text())
    rmse = np.array([v for v in errors["force_rmse"] if v >= 0])
    worst5 = float(np.sort(rmse)[-5:].mean())
    overall = errors["overall_force_rmse"]
    return {"overall": overall, "max": float(rmse.max()), "worst5": worst5}


def train(data, out, backend, size, strategy, seed) -> dict:
    wall = cli(out, "train", data, "--backend", backend, *PARAMS[backend], "--size",
               size, "--strategy", strategy, "--seed", seed)  # fmt: skip
    return {**test_errors(out), "wall_s": wall}


def flatten(data, out, backend, sizes, seed) -> dict:
    wall = cli(out, "select", data, "--backend", backend, *PARAMS[backend],
               "--init", sizes["init"], "--step", sizes["step"],
               "--iterations", sizes["iterations"], "--n-fine", sizes["n_fine"],
               "--seed", seed)  # fmt: skip
    return {**test_errors(out), "wall_s": wall}


def run_suite(args) -> dict:
    sizes = SIZES[args.size]
    n = sizes["init"] + sizes["step"] * sizes["iterations"]
    out = Path(args.output)
    results = {"outlier": [], "improvement": [], "efficiency": []}
    for data in args.data:
        name = Path(data).name.split(".")[0]
        for backend in args.backends:
            for seed in args.seeds:
                base = out / name / backend / f"seed{seed}"
                default = train(data, base / "random", backend, n, "random", seed)
                row = {"data": name, "backend": backend, "seed": seed, "n": n}
                results["outlier"].append({**row, **default})
                if backend == "gap" and not args.improve_gap:
                    continue
                flat = flatten(data, base / "flatten", backend, sizes, seed)
                results["improvement"].append({**row, "strategy": "random", **default})
                results["improvement"].append({**row, "strategy": "flatten", **flat})
                for strategy in args.strategies:
                    r = train(data, base / strategy, backend, n, strategy, seed)
                    results["improvement"].append({**row, "strategy": strategy, **r})
                if backend not in args.efficiency:
                    continue
                for factor in (1.5, 2.0):
                    size = int(n * factor)
                    r = train(
                        data, base / f"random_{size}", backend, size, "random", seed
                    )
                    results["efficiency"].append({**row, "n_default": size, **r})
                results["efficiency"].append({**row, "n_default": n, **default})
                results["efficiency"].append({**row, "n_default": "flattened", **flat})
    return results


def spread(values) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def markdown(results, meta) -> str:
    lines = [f"# Benchmark suite ({meta['size']})", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines += ["## Outlier detection: default models (test force RMSE, eV/Å)", ""]
    lines += ["| data | backend | frames | overall | worst cluster | worst / overall |"]
    lines += ["| --- | --- | ---: | ---: | ---: | ---: |"]
    for key, rows in _group(results["outlier"], ("data", "backend")).items():
        ratio = [r["max"] / r["overall"] for r in rows]
        lines.append(
            f"| {key[0]} | {key[1]} | {rows[0]['n']} | "
            f"{spread([r['overall'] for r in rows])} | "
            f"{spread([r['max'] for r in rows])} | {spread(ratio)} |"
        )
    lines += [
        "",
        "## Improvement: equal-size training sets (test force RMSE, eV/Å)",
        "",
    ]
    lines += [
        "| data | backend | strategy | overall | worst cluster | worst-5 | "
        "worst / default's |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    groups = _group(results["improvement"], ("data", "backend", "strategy"))
    for key, rows in groups.items():
        base = {r["seed"]: r for r in groups[(key[0], key[1], "random")]}
        ratio = [r["max"] / base[r["seed"]]["max"] for r in rows]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {spread([r['overall'] for r in rows])}"
            f" | {spread([r['max'] for r in rows])} | "
            f"{spread([r['worst5'] for r in rows])} | {spread(ratio)} |"
        )
    lines += ["", "## Data efficiency: worst-cluster test force RMSE (eV/Å)", ""]
    lines += ["| data | backend | default frames | worst cluster | overall |"]
    lines += ["| --- | --- | --- | ---: | ---: |"]
    efficiency = _group(results["efficiency"], ("data", "backend", "n_default"))

    def by_size(item):  # default sizes in order, the flattened model last
        size = item[0][2]
        return (
            item[0][:2],
            isinstance(size, str),
            0 if isinstance(size, str) else size,
        )

    for key, rows in sorted(efficiency.items(), key=by_size):
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {spread([r['max'] for r in rows])} | "
            f"{spread([r['overall'] for r in rows])} |"
        )
    return "\n".join(lines) + "\n"


def _group(rows, keys):
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "examples" / "data"))
    parser.add_argument("--size", choices=sorted(SIZES), default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backends", nargs="+", default=["sgdml", "schnet", "gap"])
    parser.add_argument("--strategies", nargs="+", default=["energy", "fps", "cur"])
    parser.add_argument(
        "--efficiency",
        nargs="*",
        help="backends for the data-efficiency runs (default: all of --backends)",
    )
    parser.add_argument(
        "--molecules", nargs="+", help="only these datasets (name prefixes)"
    )
    parser.add_argument(
        "--improve-gap", action="store_true", help="also run the loop with GAP"
    )
    parser.add_argument(
        "-o", "--output", default=ROOT / "benchmarks" / "output" / "suite"
    )
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    args.data = sorted(
        str(p)
        for p in data_dir.iterdir()
        if p.name.endswith((".xyz.gz", "500K.extxyz"))
    )
    if args.efficiency is None:
        args.efficiency = args.backends
    if args.molecules:
        args.data = [
            d for d in args.data if Path(d).name.startswith(tuple(args.molecules))
        ]
    if not args.data:
        sys.exit(f"{data_dir}: no datasets (run `make demo` to make the example one)")
    start = time.perf_counter()
    results = run_suite(args)
    import ase
    import sklearn

    meta = {
        "size": args.size,
        "datasets": ", ".join(Path(d).name for d in args.data),
        "seeds": " ".join(map(str, args.seeds)),
        "machine": f"{platform.machine()}, 2 cores (OMP_NUM_THREADS=1)",
        "date": time.strftime("%Y-%m-%d"),
        "versions": f"python {platform.python_version()}, ase {ase.__version__}, "
        f"scikit-learn {sklearn.__version__}",
        "wall time": f"{time.perf_counter() - start:.0f} s",
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps({"meta": meta, **results}, indent=1))
    (out / "suite.md").write_text(markdown(results, meta))
    print((out / "suite.md").read_text())


if __name__ == "__main__":
    main()
