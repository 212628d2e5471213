"""Warm-started selection against cold: cost and errors of ``select``.

For every seed this runs the flattening loop (``run_selection``, what ``ase-flatten
select`` runs) once cold (every fit from scratch) and once per warm schedule
(``warm_start``: each fit after the first continues from the previous
iteration's model, the final one too: ``warm_final``), and then one cold
training of the final size on each run's final set: the reference cost, and the
model ``select --warm-start`` ends with (the same seed and frames give the same
model), whose final model is trained from scratch. The final warm fit is timed
again on its own (it repeats to the last digit) so that the cost of a run with a
cold final model is select's minus that fit plus the cold one. Everything is
measured on the run's own test split and clusters.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_warm_start.py \\
        /work/shared/data/ethanol_xtb500K.xyz.gz --seeds 0 1 2 \\
        --warm lr=5e-4,epochs=10,patience=5 --warm lr=2e-3,epochs=10,patience=5 \\
        -o benchmarks/output/warm_start/ethanol

Every run keeps its folder; the same command resumes an interrupted one and skips
finished ones. CPU seconds (this process, one torch thread) are the load-free
cost measure on a shared machine; wall seconds are recorded beside them. Writes
OUT/s<seed>/<variant>/ (the run folder and ``bench.json``), OUT/summary.md and
OUT/summary.json.

Measured with this script (2026-12-02, SchNet, the whole pool): cold,
``lr=5e-4,epochs=10,patience=5``, ``lr=2e-3,epochs=10,patience=5`` (seed 0) and
``lr=1e-3,epochs=20,patience=10``; (2026-12-07) SchNet and MACE on ethanol and
uracil with ``--error-sample 10`` (select's default) and ``--warm default``;
sGDML (its sigma grid) with ``--warm sigma=keep --warm sigma=neighbours``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

#: Each backend at the suite's sizes (quick: 40 epochs; MACE without its most
#: expensive parts, as the suite runs it).
BASE = {
    "schnet": {"max_epochs": 40, "device": "cpu"},
    "mace": {"max_epochs": 40, "max_ell": 2, "correlation": 2, "device": "cpu"},
    "sgdml": {},  # sigma from its grid on validation frames, as sGDML's default
}
DESCRIBED = {
    "schnet": "SchNet (64 features, 3 interactions, mixed loss",
    "mace": "MACE (l <= 2, correlation 2",
    "sgdml": "sGDML (sigma from [5, 10, 20, 40, 80] on 200 validation frames",
}


def parse_warm(text: str) -> dict:
    """``lr=5e-4,epochs=10,patience=5`` -> the backend's warm parameters.

    ``default`` is the backend's own warm schedule (its default parameters).
    """
    if text == "default":
        return {}
    names = {"lr": "warm_lr", "epochs": "warm_epochs", "patience": "warm_patience"}
    if text.startswith("sigma="):  # sgdml: sigma=keep or sigma=neighbours
        return {"warm_sigma": text.partition("=")[2]}
    params = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in names:
            raise SystemExit(
                f"--warm {text}: unknown {key!r} (lr, epochs, patience; sgdml: sigma)"
            )
        params[names[key]] = float(value) if key == "lr" else int(value)
    return params


def variant_name(warm: dict | None) -> str:
    if warm is None:
        return "cold"
    if not warm:
        return "warm_default"
    if "warm_sigma" in warm:
        return f"warm_sigma_{warm['warm_sigma']}"
    return "warm_lr{:g}_e{}_p{}".format(
        warm["warm_lr"], warm["warm_epochs"], warm["warm_patience"]
    )


def clock():
    return time.perf_counter(), time.process_time()


def run_one(dataset, args, seed: int, warm: dict | None, out: Path) -> dict:
    """One selection run and its reference training (each resumed or skipped)."""
    from ase_flatten.backends import make_backend
    from ase_flatten.clustering import load_clusters
    from ase_flatten.error_analysis import model_errors
    from ase_flatten.files import write_json
    from ase_flatten.selection.flatten import SelectionConfig, run_selection

    record_file = out / "bench.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    params = {**BASE[args.backend], **(warm or {})}
    if args.sigma is not None:
        params["sigma"] = args.sigma
    if "max_epochs" in params:
        params["max_epochs"] = args.epochs
    run_dir = out / "run"
    if "select" not in record:
        config = SelectionConfig(
            backend=args.backend,
            params=params,
            init=args.init,
            step=args.step,
            iterations=args.iterations,
            n_fine=args.n_fine,
            seed=seed,
            warm_start=warm is not None,
            warm_final=warm is not None,
            error_sample=args.error_sample or None,  # 0: the whole pool
        )
        resume = (run_dir / "checkpoint.json").exists()
        print(f"{out}: select{' (resumed)' if resume else ''}", flush=True)
        wall, cpu = clock()
        result = run_selection(dataset, config, run_dir, resume=resume, progress=False)
        wall2, cpu2 = clock()
        record["select"] = {
            "wall_s": wall2 - wall,
            "cpu_s": cpu2 - cpu,
            "resumed": resume,
            "history_s": sum(
                sum(entry["timings"].values()) for entry in result.history
            ),
            "fits": [
                {
                    "n_train": entry["n_train"],
                    "train_s": entry["timings"]["train"],
                    **entry.get("fit", {}),
                }
                for entry in result.history
            ],
            "test": _test_summary(result.history[-1]["test"]),
            "n_train": len(result.train_indices),
        }
        write_json(record_file, record)
    if "reference" not in record:
        print(f"{out}: one cold training of the final size", flush=True)
        train = np.load(run_dir / "train_indices.npy")
        test = np.load(run_dir / "test_indices.npy")
        clusters = load_clusters(run_dir / "clusters.npz")[0]
        backend = make_backend(args.backend, random_state=seed, **params)
        wall, cpu = clock()
        backend.fit(dataset, train, held_out=test)
        wall2, cpu2 = clock()
        errors = model_errors(backend, dataset, test, clusters.labels_, progress=False)
        record["reference"] = {
            "wall_s": wall2 - wall,
            "cpu_s": cpu2 - cpu,
            "epochs": getattr(backend, "history_", {}).get("epochs"),
            "test": {
                "force_rmse": errors.overall["force_rmse"],
                "max_cluster_force_rmse": float(np.nanmax(errors.force_rmse)),
            },
        }
        write_json(record_file, record)
    if warm is not None and "warm_final_fit" not in record:
        print(f"{out}: the final warm fit again, timed on its own", flush=True)
        record["warm_final_fit"] = time_final_warm_fit(
            dataset, args.backend, seed, params, run_dir
        )
        write_json(record_file, record)
    return record


def time_final_warm_fit(
    dataset, name: str, seed: int, params: dict, run_dir: Path
) -> dict:
    """CPU and wall time of the run's final warm fit, repeated from its files."""
    from ase_flatten.backends import backend_class
    from ase_flatten.clustering import load_clusters
    from ase_flatten.error_analysis import model_errors

    last = sorted((run_dir / "warm").glob("iteration_*"))[-1]
    cls = backend_class(name)
    previous = cls.load(last, dataset.numbers, params, random_state=seed)
    train = np.load(run_dir / "train_indices.npy")
    test = np.load(run_dir / "test_indices.npy")
    backend = cls(random_state=seed, **params)
    wall, cpu = clock()
    backend.fit(dataset, train, held_out=test, init_from=previous)
    wall2, cpu2 = clock()
    clusters = load_clusters(run_dir / "clusters.npz")[0]
    errors = model_errors(backend, dataset, test, clusters.labels_, progress=False)
    return {
        "wall_s": wall2 - wall,
        "cpu_s": cpu2 - cpu,
        "epochs": getattr(backend, "history_", {}).get("epochs"),
        "force_rmse": errors.overall["force_rmse"],  # equals select's final
    }


def _test_summary(test: dict) -> dict:
    return {key: test[key] for key in ("force_rmse", "max_cluster_force_rmse")}


def mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def mean_sd2(values) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def summary(records: dict, args) -> str:
    """The table: cost against one training, and the final errors."""
    import ase
    import torch

    library = {"schnet": "schnetpack", "mace": "mace", "sgdml": "sgdml"}[args.backend]
    version = __import__(library).__version__

    estimate = (
        f"{args.error_sample} frames per cluster"
        if args.error_sample
        else "the whole pool"
    )
    epochs = "" if args.backend == "sgdml" else f"; max_epochs {args.epochs}"
    if args.sigma is not None:
        epochs = f"; sigma {args.sigma} fixed"
    lines = [
        f"{DESCRIBED[args.backend]}{epochs}), select {args.init} + "
        f"{args.iterations} x {args.step} = "
        f"{args.init + args.iterations * args.step} frames, {args.n_fine} fine "
        f"clusters, {Path(args.data).name}, error estimate from {estimate}"
        f"; test force RMSE in eV/Å on the run's "
        "10 % test split, mean ± sd over seeds "
        f"{', '.join(str(s) for s in args.seeds)}. Cost is select's CPU time "
        "(one torch thread) over one cold training of the final size on the same "
        "frames (wall-time ratio beside it; the machine was shared). Final model "
        "cold: the warm run's selected frames with the final model trained from "
        "scratch (select --warm-start); its cost is the warm run's with the final "
        "warm fit swapped for the cold one.",
        "",
        "| variant | final model | seeds | select / one training (CPU) | (wall) | "
        "fit epochs per iteration | overall | worst cluster |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, runs in records.items():
        if not runs:
            continue
        rows = [("cold", "select", 0.0)] if name == "cold" else []
        if name != "cold":
            rows = [("warm", "select", 0.0), ("cold", "reference", 1.0)]
        for final, source, swap in rows:
            cpu, wall = [], []
            for r in runs:
                ref = r["reference"]
                redo = r.get("warm_final_fit", {"cpu_s": 0.0, "wall_s": 0.0})
                cpu.append(
                    (r["select"]["cpu_s"] + swap * (ref["cpu_s"] - redo["cpu_s"]))
                    / ref["cpu_s"]
                )
                wall.append(
                    (r["select"]["wall_s"] + swap * (ref["wall_s"] - redo["wall_s"]))
                    / ref["wall_s"]
                )
            fits = [r["select"]["fits"] for r in runs]
            epochs = [[f.get("epochs") for f in run] for run in fits]
            if source == "reference":
                epochs = [
                    e[:-1] + [r["reference"]["epochs"]]
                    for e, r in zip(epochs, runs, strict=True)
                ]
            epochs = " / ".join(
                "-".join(str(e[k]) for e in epochs) for k in range(len(epochs[0]))
            )
            if args.backend == "sgdml":
                epochs = "(a direct solve)"
            test = [r[source]["test"] for r in runs]
            resumed = any(r["select"]["resumed"] for r in runs)
            lines.append(
                f"| {name} | {final} | {len(runs)} | {mean_sd2(cpu)}"
                f"{' (a run resumed: partial)' if resumed else ''} | "
                f"{mean_sd2(wall)} | {epochs} | "
                f"{mean_sd([t['force_rmse'] for t in test])} | "
                f"{mean_sd([t['max_cluster_force_rmse'] for t in test])} |"
            )
    lines += [
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
        f"), python {platform.python_version()}, ase {ase.__version__}, {library} "
        f"{version}, torch {torch.__version__}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="labelled dataset (e.g. ethanol_xtb500K.xyz.gz)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--backend", choices=sorted(BASE), default="schnet")
    parser.add_argument("--sigma", type=int, help="sgdml: a fixed sigma (no grid)")
    parser.add_argument(
        "--error-sample",
        type=int,
        default=0,
        metavar="K",
        help="select's --error-sample (0: the whole pool, as the first runs)",
    )
    parser.add_argument("--init", type=int, default=50)
    parser.add_argument("--step", type=int, default=25)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--n-fine", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=40, help="cold max_epochs")
    parser.add_argument(
        "--warm",
        action="append",
        default=[],
        metavar="lr=L,epochs=E,patience=P",
        help="a warm schedule to run (repeatable; `default`: the backend's own; "
        "sgdml: sigma=keep or sigma=neighbours)",
    )
    parser.add_argument("--no-cold", action="store_true", help="skip the cold runs")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)

    import torch

    from ase_flatten.data import read_dataset
    from ase_flatten.files import write_json, write_text

    torch.set_num_threads(1)
    out = Path(args.output)
    if not Path(args.data).is_file():
        print(f"{args.data}: no such file", file=sys.stderr)
        sys.exit(2)
    dataset = read_dataset(args.data)
    variants = ([] if args.no_cold else [None]) + [parse_warm(w) for w in args.warm]
    records = {variant_name(v): [] for v in variants}
    for seed in args.seeds:
        for warm in variants:
            folder = out / f"s{seed}" / variant_name(warm)
            records[variant_name(warm)].append(
                run_one(dataset, args, seed, warm, folder)
            )
            write_json(out / "summary.json", records)
            write_text(out / "summary.md", summary(records, args))
    print(summary(records, args))


if __name__ == "__main__":
    main()
