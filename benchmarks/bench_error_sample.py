"""``--error-sample K`` against the full pool prediction in the labelled-pool loop.

For every dataset and seed the paper's loop (``run_selection``, what ``ase-flatten
select`` runs) is run on the labelled pool in the suite's regime (sGDML, sigma
10, 100 + 3 x 50 = 250 frames, 100 fine clusters, the default 10 x 5 coarse
clusters, test split of 10 %) once with every pool frame predicted each
iteration and once per sample size K (each coarse cluster's error estimated from
at most K of its frames; the frames of the clusters above the threshold are
then predicted for the picks). The same seed gives the same clusters, test split
and initial set, so the runs differ only in the error estimates. Per run:

- the frames selected against the full-pool run of the same seed: Jaccard
  overlap of the whole set and of the added frames (the shared initial set
  apart), and of the first iteration's picks, which come from the same model;
- whether the first iteration's estimated worst coarse cluster and its clusters
  above the threshold are the full prediction's;
- the final model's test force RMSE, overall and on the worst test cluster;
- frames predicted per iteration, wall and CPU seconds of the run, and the
  machine's load average at its start and end.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_error_sample.py \\
        /work/shared/data/ethanol_xtb500K.xyz.gz \\
        /work/shared/data/uracil_xtb500K.xyz.gz --seeds 0 1 2 --samples 10 30

Resumable: finished runs are rows of RESULTS/results.json and are skipped; an
interrupted run continues from its checkpoint in OUT/<molecule>/s<seed>/<K>/.
Writes RESULTS/results.json (one row per run) and RESULTS/error_sample.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"init": 100, "step": 50, "iterations": 3, "n_fine": 100}
FULL = "full"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, nargs="+", default=[10, 30])
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "benchmarks/output/error_sample"
    )
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks/results/error_sample"
    )
    args = parser.parse_args()
    from ase_flatten.files import write_json, write_text

    args.results.mkdir(parents=True, exist_ok=True)
    results_file = args.results / "results.json"
    rows = json.loads(results_file.read_text()) if results_file.exists() else []
    # the full pool and the first K over every dataset and seed first, then the
    # other sample sizes: a cut-short run still has complete pairs
    phases = [[FULL, f"k{args.samples[0]}"]] + [[f"k{k}"] for k in args.samples[1:]]
    datasets = {}
    for phase in phases:
        for path in args.data:
            molecule = Path(path).name.split("_xtb")[0]
            for seed in args.seeds:
                for variant in phase:
                    key = (molecule, seed, variant)
                    if any(
                        (r["molecule"], r["seed"], r["variant"]) == key for r in rows
                    ):
                        continue
                    if path not in datasets:
                        from ase_flatten.data import read_dataset

                        datasets[path] = read_dataset(path)
                    rows.append(
                        one_run(datasets[path], molecule, seed, variant, args.output)
                    )
                    print(json.dumps(rows[-1]), flush=True)
                    write_json(results_file, rows)
    text = table(rows, args.output)
    write_text(args.results / "error_sample.md", text)
    print(text)


def _load() -> float:
    return os.getloadavg()[0]


def one_run(dataset, molecule: str, seed: int, variant: str, output: Path) -> dict:
    from ase_flatten.selection.flatten import SelectionConfig, run_selection

    k = None if variant == FULL else int(variant[1:])
    config = SelectionConfig(
        backend="sgdml", params={"sigma": 10}, seed=seed, error_sample=k, **SIZES
    )
    folder = output / molecule / f"s{seed}" / variant
    resume = (folder / "checkpoint.json").exists()
    load_start = _load()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_selection(dataset, config, folder, resume=resume, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    iterations = result.history[:-1]
    final = result.history[-1]["test"]
    return {
        "molecule": molecule,
        "seed": seed,
        "variant": variant,
        "error_sample": k,
        "n_train": int(len(result.train_indices)),
        "force_rmse": final["force_rmse"],
        "worst_cluster_rmse": final["max_cluster_force_rmse"],
        "worst_cluster": final["max_cluster"],
        "worst_cluster_test_frames": final["max_cluster_frames"],
        "predicted_frames": [h["why"]["predicted_frames"] for h in iterations],
        "predict_s": round(sum(h["timings"]["predict"] for h in iterations), 2),
        "train_s": round(
            sum(h["timings"]["train"] for h in result.history), 2
        ),  # the final fit included
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "resumed": resume,
        "load_start": round(load_start, 2),
        "load_end": round(_load(), 2),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
    }


def _history(output: Path, row: dict) -> list:
    folder = output / row["molecule"] / f"s{row['seed']}" / row["variant"]
    return json.loads((folder / "history.json").read_text())


def _jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def compare(output: Path, row: dict, full: dict) -> dict:
    """Overlap with the full-pool run of the same seed (from the run folders)."""
    mine, ref = _history(output, row), _history(output, full)

    def added(history):
        return [i for h in history[:-1] for i in h["added"]]

    def worst(entry):
        rmse = np.array([np.nan if v is None else v for v in entry])
        return int(np.nanargmax(rmse))

    first, ref_first = mine[0], ref[0]
    return {
        "jaccard_added": _jaccard(added(mine), added(ref)),
        "jaccard_first_picks": _jaccard(first["added"], ref_first["added"]),
        "same_worst_pool_cluster": worst(first["pool_cluster_force_rmse"])
        == worst(ref_first["pool_cluster_force_rmse"]),
        "jaccard_high_clusters": _jaccard(
            first["why"]["high_clusters"], ref_first["why"]["high_clusters"]
        ),
    }


def _ms(values, digits=4) -> str:
    values = np.asarray(values, float)
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {spread:.{digits}f}"


def table(rows: list[dict], output: Path) -> str:
    """Mean ± sd over seeds per molecule and variant; overlaps against the full
    run of the same seed; differences to it paired by seed."""
    lines = [
        "| molecule | estimate | seeds | frames predicted / iteration | predict s "
        "(sum) | wall s | CPU s | Jaccard, added frames | Jaccard, first picks "
        "| same worst pool cluster (it. 0) | worst test cluster eV/Å | "
        "overall eV/Å | worst − full | overall − full |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    molecules = sorted({r["molecule"] for r in rows})
    variants = sorted(
        {r["variant"] for r in rows},
        key=lambda v: -1 if v == FULL else int(v[1:]),
    )
    for molecule in molecules:
        fulls = {
            r["seed"]: r
            for r in rows
            if r["molecule"] == molecule and r["variant"] == FULL
        }
        for variant in variants:
            group = [
                r for r in rows if r["molecule"] == molecule and r["variant"] == variant
            ]
            if not group:
                continue
            predicted = [np.mean(r["predicted_frames"]) for r in group]
            cells = [
                molecule,
                "full pool" if variant == FULL else f"K = {variant[1:]}",
                str(len(group)),
                f"{np.mean(predicted):,.0f}",
                _ms([r["predict_s"] for r in group], 1),
                _ms([r["wall_s"] for r in group], 0),
                _ms([r["cpu_s"] for r in group], 0),
            ]
            paired = [r for r in group if r["seed"] in fulls]
            if variant == FULL or not paired:
                cells += ["1", "1", "—"]
            else:
                overlaps = [compare(output, r, fulls[r["seed"]]) for r in paired]
                cells += [
                    _ms([o["jaccard_added"] for o in overlaps], 2),
                    _ms([o["jaccard_first_picks"] for o in overlaps], 2),
                    f"{sum(o['same_worst_pool_cluster'] for o in overlaps)} of "
                    f"{len(overlaps)}",
                ]
            cells += [
                _ms([r["worst_cluster_rmse"] for r in group]),
                _ms([r["force_rmse"] for r in group]),
            ]
            if variant == FULL or not paired:
                cells += ["—", "—"]
            else:
                for key in ("worst_cluster_rmse", "force_rmse"):
                    cells.append(_ms([r[key] - fulls[r["seed"]][key] for r in paired]))
            lines.append("| " + " | ".join(cells) + " |")
    loads = [r[key] for r in rows for key in ("load_start", "load_end")]
    lines.append("")
    lines.append(
        f"Mean ± sd over seeds (differences paired by seed). Load average (1 min) "
        f"during the runs: {min(loads):.1f}-{max(loads):.1f}."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
