"""The benchmark suite: outlier detection, improvement, data efficiency.

One command over every dataset in a folder, through the project's own commands
(``ase-flatten train``, ``select``, ``compare``), for several seeds:

* outlier detection (Fig. 4): default (random) models of each backend; the worst
  cluster's test force RMSE against the overall RMSE;
* improvement (Table I, Fig. 5): default vs flattened sets of equal size, plus the
  energy, FPS, CUR, GGFPS and query-by-committee strategies (and DIRECT and QUESTS
  where maml and quests are installed; the committee follows the flattening loop's
  schedule of random start and rounds);
* data efficiency (Fig. 7): default models at 1x, 1.5x and 2x the flattened size
  against the flattened model, on the worst-cluster error;
* measures beside the worst cluster, from ``ase-flatten compare`` of each seed's
  equal-size sets (random first, its clusters for all): the 99th percentile and
  the maximum of the per-atom force-error norms, the test frames in the worst
  cluster and, with ``--extra-test FILE`` (a labelled trajectory never in the
  pool, e.g. hotter MD), the force RMSE on it; every ratio to random with a
  bootstrap 95 % interval over the test frames (per seed, and of the mean over
  seeds: the same frames drawn for every seed) beside the spread over seeds.

``--size quick`` (50 + 2 x 25 frames) finishes in minutes on the demo data;
``--size full`` (100 + 3 x 50 frames, the largest that sGDML's analytic solver
trains at 2x on 16 atoms in 24 GB) takes hours on 2 cores; ``--size paper`` is the
paper's 200 + 8 x 100. Finished runs are kept and reused, so an interrupted suite
resumes where it stopped. Results: ``OUT/suite.md`` (tables
with machine, date, versions, sizes and wall time) and ``OUT/suite.json``.

usage: python benchmarks/suite.py [--data-dir DIR] [--size quick|full]
       [--seeds 0 1 2] [--backends sgdml schnet gap] [-o OUT] [--dask ADDRESS]
       [--extra-test FILE]

With ``--dask ADDRESS`` (or ``local:N``) every run still to do is one task on the
Dask workers (they must see this folder and the data); the tables are made here
once all have finished.
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

from ase_flatten.error_analysis import KCAL_MOL
from ase_flatten.files import write_text
from ase_flatten.selection.baselines import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_DATA = ROOT / "examples" / "data"
SIZES = {
    # the flattening loop (init + iterations x step frames, n_fine clusters) and
    # SchNet's epochs; defaults get 1x, 1.5x and 2x the final size
    "quick": {"init": 50, "step": 25, "iterations": 2, "n_fine": 50, "epochs": 40},
    "full": {"init": 100, "step": 50, "iterations": 3, "n_fine": 100, "epochs": 100},
    "paper": {"init": 200, "step": 100, "iterations": 8, "n_fine": 200, "epochs": 100},
}


def default_strategies() -> list[str]:
    """The peers of the flattened set: DIRECT and QUESTS only with their extras."""
    import importlib.util

    peers = ["energy", "fps", "cur", "ggfps", "committee"]
    if importlib.util.find_spec("maml"):
        peers.append("direct")
    if importlib.util.find_spec("quests"):
        peers.append("quests")
    return peers


def strategy_params(strategy: str, sizes: dict) -> list[str]:
    """The committee follows the flattening loop's schedule: the same random start
    and the same number of rounds (4 models each)."""
    if strategy != "committee":
        return []
    n = sizes["init"] + sizes["step"] * sizes["iterations"]
    return [
        "--committee-steps",
        str(sizes["iterations"]),
        "--committee-init",
        f"{sizes['init'] / n:.6g}",
    ]


def backend_params(backend: str, sizes: dict) -> list[str]:
    """Fixed, cheap hyperparameters, so the comparison is about the frames."""
    return {
        "sgdml": ["-p", "sigma=10"],
        "schnet": ["-p", f"max_epochs={sizes['epochs']}"],
        "gap": [],
        # MACE's defaults less its most expensive parts: l <= 2 features and
        # correlation 2 predict 3.6x faster, so the pool fits each iteration
        "mace": ["-p", "max_ell=2", "-p", "correlation=2", "-p", "max_epochs=40"],
    }[backend]


#: Selection rules beyond the paper's: extra ``select`` flags per name;
#: ``--rules`` runs each as one more flattened set of the same size.
RULES = {
    "centroid": ["--criterion", "centroid"],
    "error_alloc": ["--allocation", "error"],
    "diverse30": ["--diverse-share", "0.3"],
    "fps": ["--pick", "fps"],
    "ranked": ["--pick", "ranked"],
    # more, smaller steps: the same 150 added frames in 6 steps of 25
    "steps25": ["--step", "25", "--iterations", "6"],
    "steps10": ["--step", "10", "--iterations", "15"],
    # adaptive threshold: the worst coarse clusters carrying half the squared error
    "mass": ["--threshold", "mass"],
    "error_alloc_steps25": [
        "--allocation",
        "error",
        "--step",
        "25",
        "--iterations",
        "6",
    ],
}

WALLS: dict[Path, float] = {}  # every run's wall time, for the report
#: With --dask: the runs still to do, (output folder, ase-flatten arguments), to be
#: sent to the workers as tasks before the tables are made.
PLAN: list | None = None


class NotRun(Exception):
    """With --collect: this run has not finished."""


def cli(out: Path, *argv, collect: bool = False) -> float:
    """Run ``ase-flatten ...`` once; its wall time is kept in ``out/wall_s.txt``."""
    wall_file = out / "wall_s.txt"
    if (out / "model.json").exists():  # finished in an earlier run
        wall = float(wall_file.read_text()) if wall_file.exists() else float("nan")
        WALLS[out] = wall
        return wall
    if collect:
        raise NotRun(out)
    argv = [str(a) for a in argv] + ["-o", str(out)]
    if argv[0] == "select" and not (out / "checkpoint.json").exists():
        shutil.rmtree(out, ignore_errors=True)  # stopped before its first iteration
    if out.exists():  # interrupted: select resumes from its checkpoint
        argv.append("--resume" if argv[0] == "select" else "--overwrite")
    if PLAN is not None:  # --dask: run later, as a task
        PLAN.append((out, argv))
        return float("nan")
    print("$ ase-flatten " + " ".join(argv), flush=True)
    start = time.perf_counter()
    subprocess.run([str(BIN / "ase-flatten"), *argv, "-q"], check=True)
    wall = time.perf_counter() - start
    write_text(wall_file, f"{wall:.1f}\n")
    WALLS[out] = wall
    return wall


def run_command(argv: list[str], cwd: str | None = None) -> tuple[int, float, str]:
    """Run a command line on a Dask worker: (exit status, wall seconds, stderr's
    tail). Defined in the script, so that Dask sends it by value."""
    import subprocess
    import time

    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    return done.returncode, time.perf_counter() - start, done.stderr[-2000:]


def run_planned_on_dask(args) -> None:
    """Every run the suite still needs, each one task on the Dask workers."""
    global PLAN
    from distributed import as_completed

    from ase_flatten.dask_workers import dask_client

    PLAN = []
    try:
        run_suite(args)  # plans the runs, trains nothing
        planned = PLAN
    finally:
        PLAN = None
    failed = []
    with dask_client(args.dask) as client:
        futures = {}
        for out, argv in planned:
            print(f"$ ase-flatten {' '.join(argv)}  (dask task)", flush=True)
            command = [str(BIN / "ase-flatten"), *argv, "-q"]
            futures[client.submit(run_command, command, pure=False)] = out
        for future in as_completed(futures):
            out = futures[future]
            status, wall, stderr = future.result()
            if status:
                failed.append(f"{out}: exit status {status}: {stderr.strip()}")
            else:
                write_text(out / "wall_s.txt", f"{wall:.1f}\n")
    if failed:
        sys.exit(f"{len(failed)} runs failed, first: {failed[0]}")


def test_errors(run: Path) -> dict:
    """Overall and per-cluster test force RMSE saved by train/select."""
    if PLAN is not None and not (run / "cluster_errors.json").exists():
        return {}  # planned, not run yet
    errors = json.loads((run / "cluster_errors.json").read_text())
    per_cluster = np.array(errors["force_rmse"], dtype=float)  # -1: no test frames
    rmse = per_cluster[per_cluster >= 0]
    return {
        "overall": errors["overall_force_rmse"],
        "max": float(rmse.max()),
        "worst5": float(np.sort(rmse)[-5:].mean()),
        "clusters": per_cluster.tolist(),
    }


def train(
    data, out, backend, params, size, strategy, seed, collect=False, extra=()
) -> dict:
    wall = cli(out, "train", data, "--backend", backend, *params,
               "--size", size, "--strategy", strategy, "--seed", seed, *extra,
               collect=collect)  # fmt: skip
    return {**test_errors(out), "wall_s": wall}


def flatten(data, out, backend, params, sizes, seed, collect=False, rule=()) -> dict:
    wall = cli(out, "select", data, "--backend", backend, *params,
               "--init", sizes["init"], "--step", sizes["step"],
               "--iterations", sizes["iterations"], "--n-fine", sizes["n_fine"],
               "--seed", seed, "--error-sample", 0,  # the paper: the whole pool
               *rule, collect=collect)  # fmt: skip
    return {**test_errors(out), "wall_s": wall}


def compare(base: Path, names, extra_test=None) -> Path | None:
    """``ase-flatten compare`` of one seed's equal-size sets, random first.

    Kept in ``base/compare`` (``base/compare_NAME`` with the extra test set
    ``NAME.*``) and reused while it compares the same runs with the same extra
    test set. None while planning the Dask tasks.
    """
    if PLAN is not None:
        return None
    out = base / "compare"
    if extra_test:
        out = base / f"compare_{Path(extra_test).name.split('.')[0]}"
    extra = str(Path(extra_test).resolve()) if extra_test else None
    done = out / "comparison.json"
    if done.exists() and (out / "frame_errors.npz").exists():
        made = json.loads(done.read_text())
        runs = [row["run"] for row in made["runs"]]
        if runs == list(names) and (made.get("extra_test") or {}).get("path") == extra:
            return out
    argv = ["compare", *(base / name for name in names), "-o", out]
    if extra:
        argv += ["--extra-test", extra]
    if out.exists():
        argv.append("--overwrite")
    argv = [str(a) for a in argv]
    print("$ ase-flatten " + " ".join(argv), flush=True)
    subprocess.run([str(BIN / "ase-flatten"), *argv, "-q"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return out


#: comparison.csv columns kept in the suite's rows (values, intervals, ratios).
MEASURES = (
    "test_frames",
    "max_cluster_frames",
    "force_rmse",
    "max_cluster_force_rmse",
    "atom_error_p99",
    "atom_error_max",
    "extra_test_frames",
    "extra_force_rmse",
    "extra_atom_error_p99",
)
#: The ratios to random in the tables: (comparison.csv column, statistic,
#: test set, header).
RATIOS = (
    ("force_rmse_ratio", "force_rmse", "test", "overall"),
    ("max_cluster_ratio", "max_cluster_force_rmse", "test", "worst cluster"),
    ("atom_error_p99_ratio", "atom_error_p99", "test", "p99 per atom"),
    ("atom_error_max_ratio", "atom_error_max", "test", "max per atom"),
    ("extra_force_rmse_ratio", "force_rmse", "extra", "hotter overall"),
    ("extra_atom_error_p99_ratio", "atom_error_p99", "extra", "hotter p99 per atom"),
)


def compared(out: Path | None) -> dict:
    """Each run's measures from ``out/comparison.json``: ``{run: {...}}``."""
    if out is None:
        return {}
    made = json.loads((out / "comparison.json").read_text())
    rows = {}
    for row in made["runs"]:
        keep = {}
        for key in MEASURES:
            if key in row:
                keep[key] = row[key]
                for end in ("_low", "_high"):
                    if key + end in row:
                        keep[key + end] = row[key + end]
        for key, *_ in RATIOS:
            if key in row:
                keep[key] = [row[key], row[f"{key}_low"], row[f"{key}_high"]]
        rows[row["run"]] = {**keep, "compare": str(out)}
    return rows


def run_suite(args) -> dict:
    results = {"outlier": [], "improvement": [], "efficiency": []}
    for data in args.data:
        for backend in args.backends:
            for seed in args.seeds:
                try:
                    block = run_block(args, data, backend, seed)
                except NotRun as missing:
                    print(f"not finished, left out: {missing}", flush=True)
                    continue
                for key, rows in block.items():
                    results[key] += rows
    return results


def run_block(args, data, backend, seed) -> dict:
    """Every run of one dataset, backend and seed (all or none of them)."""
    sizes = SIZES[args.size]
    n = sizes["init"] + sizes["step"] * sizes["iterations"]
    name = Path(data).name.split(".")[0]
    base = Path(args.output) / name / backend / f"seed{seed}"
    kw = {"collect": args.collect}
    params = backend_params(backend, sizes)
    results = {"outlier": [], "improvement": [], "efficiency": []}
    default = train(data, base / "random", backend, params, n, "random", seed, **kw)
    row = {"data": name, "backend": backend, "seed": seed, "n": n}
    results["outlier"].append({**row, **default})
    if backend == "gap" and not args.improve_gap:
        return results
    flat = flatten(data, base / "flatten", backend, params, sizes, seed, **kw)
    results["improvement"].append({**row, "strategy": "random", **default})
    results["improvement"].append({**row, "strategy": "flatten", **flat})
    for strategy in args.strategies:
        extra = strategy_params(strategy, sizes)
        r = train(
            data, base / strategy, backend, params, n, strategy, seed, extra=extra, **kw
        )
        results["improvement"].append({**row, "strategy": strategy, **r})
    for name in args.rules:
        out = base / f"flatten_{name}"
        r = flatten(data, out, backend, params, sizes, seed, rule=RULES[name], **kw)
        results["improvement"].append({**row, "strategy": f"flatten_{name}", **r})
    improvement = results["improvement"]
    measures = compared(
        compare(base, [r["strategy"] for r in improvement], args.extra_test)
    )
    for r in improvement:
        r["measures"] = measures.get(r["strategy"], {})
    if backend not in args.efficiency:
        return results
    for factor in (1.5, 2.0):
        size = int(n * factor)
        r = train(
            data, base / f"random_{size}", backend, params, size, "random", seed, **kw
        )
        results["efficiency"].append({**row, "n_default": size, **r})
    results["efficiency"].append({**row, "n_default": n, **default})
    results["efficiency"].append({**row, "n_default": "flattened", **flat})
    return results


def measures_over_seeds(rows) -> list[dict]:
    """Per dataset, backend and strategy, over its seeds: every measure's mean and
    sample sd, and every ratio to random's: mean and sd over the seeds and the
    95 % interval of the mean, the test frames drawn again (the same draw for
    every seed and both sets, :func:`~ase_flatten.error_analysis.mean_ratios`).
    """
    from ase_flatten.comparison import load_frame_errors
    from ase_flatten.error_analysis import mean_ratios

    loaded = {}

    def frame_errors(path):
        if path not in loaded:
            loaded[path] = load_frame_errors(Path(path) / "frame_errors.npz")
        return loaded[path]

    groups = _group([r for r in rows if r.get("measures")],
                    ("data", "backend", "strategy"))  # fmt: skip
    entries = []
    for (data, backend, strategy), these in groups.items():
        entry = {"data": data, "backend": backend, "strategy": strategy,
                 "seeds": [r["seed"] for r in these]}  # fmt: skip
        for key in MEASURES:
            values = [r["measures"][key] for r in these if key in r["measures"]]
            if values:
                entry[key] = [float(np.mean(values)), _sd(values)]
        entry["worst_cluster_frames"] = [
            r["measures"]["max_cluster_frames"] for r in these
        ]
        pairs = {"test": [], "extra": []}
        for r in these:
            test, extra = frame_errors(r["measures"]["compare"])
            pairs["test"].append((test[strategy], test["random"]))
            if extra:
                pairs["extra"].append((extra[strategy], extra["random"]))
        pooled = {}
        for which, these_pairs in pairs.items():
            try:
                pooled[which] = mean_ratios(these_pairs) if these_pairs else None
            except ValueError as exc:  # seeds with other test frames
                print(f"{data} {backend} {strategy}: no interval over seeds ({exc})")
                pooled[which] = None
        for column, statistic, which, _ in RATIOS:
            ratios = [r["measures"][column][0] for r in these
                      if column in r["measures"]]  # fmt: skip
            if not ratios:
                continue
            entry[column] = {"mean": float(np.mean(ratios)), "sd": _sd(ratios)}
            if pooled[which] is not None:
                entry[column]["ci95"] = list(pooled[which][statistic][1:])
        entries.append(entry)
    return entries


def measures_markdown(results) -> list[str]:
    """The tables of :func:`measures_over_seeds` and each seed's ratios."""
    entries = results.get("measures") or []
    if not entries:
        return []
    extra = any("extra_force_rmse" in e for e in entries)
    lines = [
        "",
        "## Measures beside the worst cluster (test force errors, eV/Å)",
        "",
        "From `ase-flatten compare` of each seed's sets, random first; the clusters "
        "are random's (the same clustering as the flattened set's: same seed). "
        "*p99 / max per atom*: the 99th percentile and the maximum of the "
        "per-atom force-error norms |F_pred - F_ref| over all test atoms. "
        + ("*hotter*: the --extra-test trajectory, never in the pool. " * extra)
        + "Mean ± sd over seeds; *worst-cluster frames*: test frames in the worst "
        "cluster, each seed.",
        "",
        "| data | backend | strategy | seeds | test frames | overall | worst cluster "
        "| worst-cluster frames | p99 per atom | max per atom |"
        + " hotter frames | hotter overall | hotter p99 per atom |"
        * extra,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + " ---: | ---: | ---: |" * extra,
    ]

    def value(entry, key, digits=4):
        if key not in entry:
            return "n/a"
        mean, sd = entry[key]
        if len(entry["seeds"]) == 1 or (digits == 0 and sd == 0):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"

    for e in entries:
        cells = [
            e["data"], e["backend"], e["strategy"], str(len(e["seeds"])),
            value(e, "test_frames", 0), value(e, "force_rmse"),
            value(e, "max_cluster_force_rmse"),
            ", ".join(map(str, e["worst_cluster_frames"])),
            value(e, "atom_error_p99"), value(e, "atom_error_max"),
        ]  # fmt: skip
        if extra:
            cells += [value(e, "extra_test_frames", 0), value(e, "extra_force_rmse"),
                      value(e, "extra_atom_error_p99")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    ratios = [r for r in RATIOS if extra or r[2] == "test"]
    lines += [
        "",
        "Ratios to random: mean ± sd over seeds [bootstrap 95 % interval of the "
        "mean over seeds: the test frames drawn again, 1000 times, the same draw "
        "for every seed and both sets]. A resample's maximum is never above the "
        "maximum of all frames, so the intervals of *max per atom* are too "
        "narrow on the high side: read them as a lower bound on its uncertainty.",
        "",
        "| data | backend | strategy | " + " | ".join(r[3] for r in ratios) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in ratios) + " |",
    ]

    def ratio(entry, column):
        if column not in entry:
            return "n/a"
        r = entry[column]
        text = f"{r['mean']:.2f}"
        if len(entry["seeds"]) > 1:
            text += f" ± {r['sd']:.2f}"
        if "ci95" in r:
            text += f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
        return text

    for e in entries:
        cells = [e["data"], e["backend"], e["strategy"]]
        cells += [ratio(e, column) for column, *_ in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each seed: ratio to that seed's random set [paired bootstrap 95 % interval "
        "over the test frames].",
        "",
        "| data | backend | strategy | seed | " + " | ".join(r[3] for r in ratios)
        + " |",
        "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in ratios) + " |",
    ]  # fmt: skip
    for row in results["improvement"]:
        m = row.get("measures")
        if not m or row["strategy"] == "random":
            continue
        cells = [row["data"], row["backend"], row["strategy"], str(row["seed"])]
        for column, *_ in ratios:
            if column in m:
                r, low, high = m[column]
                cells.append(f"{r:.2f} [{low:.2f}, {high:.2f}]")
            else:
                cells.append("n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def spread(values, digits: int = 4) -> str:
    """Mean ± sample standard deviation over seeds."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def markdown(results, meta) -> str:
    lines = ["# Benchmark suite", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    lines += ["## Outlier detection: default models (test force RMSE, eV/Å)", ""]
    lines += ["| data | backend | frames | overall | worst cluster | worst / overall |"]
    lines += ["| --- | --- | ---: | ---: | ---: | ---: |"]
    for key, rows in _group(results["outlier"], ("data", "backend")).items():
        ratio = [r["max"] / r["overall"] for r in rows]
        lines.append(
            f"| {key[0]} | {key[1]} | {rows[0]['n']} | "
            f"{spread([r['overall'] for r in rows])} | "
            f"{spread([r['max'] for r in rows])} | {spread(ratio, 2)} |"
        )
    lines += [
        "",
        "## Improvement: equal-size training sets (test force RMSE, eV/Å)",
        "",
    ]
    lines += [
        "| data | backend | strategy | overall | worst cluster | worst-5 | "
        "worst / default's | overall / default's | overall, worst (kcal/(mol Å)) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    groups = _group(results["improvement"], ("data", "backend", "strategy"))
    for key, rows in groups.items():
        base = {r["seed"]: r for r in groups[(key[0], key[1], "random")]}
        worst = [r["max"] / base[r["seed"]]["max"] for r in rows]
        overall = [r["overall"] / base[r["seed"]]["overall"] for r in rows]
        kcal = (
            f"{np.mean([r['overall'] for r in rows]) / KCAL_MOL:.3f}, "
            f"{np.mean([r['max'] for r in rows]) / KCAL_MOL:.3f}"
        )
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {spread([r['overall'] for r in rows])}"
            f" | {spread([r['max'] for r in rows])} | "
            f"{spread([r['worst5'] for r in rows])} | {spread(worst, 2)} | "
            f"{spread(overall, 2)} | {kcal} |"
        )
    lines += goal_table(results["improvement"])
    lines += measures_markdown(results)
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
    lines += ["", "Default size that matches the flattened model's worst cluster:", ""]
    lines += ["| data | backend | flattened frames | matching default frames |"]
    lines += ["| --- | --- | ---: | ---: |"]
    for (data, backend), rows in _group(
        results["efficiency"], ("data", "backend")
    ).items():
        by_size = _group(rows, ("n_default",))
        flat = np.mean([r["max"] for r in by_size.pop(("flattened",))])
        sizes = sorted(k[0] for k in by_size)
        worst = [np.mean([r["max"] for r in by_size[(n,)]]) for n in sizes]
        match = matching_size(sizes, worst, flat)
        lines.append(f"| {data} | {backend} | {rows[0]['n']} | {match} |")
    return "\n".join(lines) + "\n"


def goal_table(rows) -> list[str]:
    """The goal for the paper's rules, FPS and every rule beyond them.

    Against the mean of the random seeds: worst cluster <= 0.5x, overall <= 1.0x,
    and the set's own worst cluster <= 1.5x its overall error. A rule "beats the
    paper" on a dataset and backend when its mean worst-cluster ratio is lower
    than the paper rules' and its mean overall ratio not higher.
    """
    groups = _group(rows, ("data", "backend", "strategy"))
    rules = sorted({k[2] for k in groups if k[2].startswith("flatten_")})
    if not rules:
        return []
    lines = [
        "",
        "## Selection rules against the goal",
        "",
        "Ratios to the mean of the random seeds; mean ± sd over seeds. Goal: worst "
        "<= 0.5, overall <= 1.0, worst / own overall <= 1.5. Against `flatten` (the "
        "paper's rules), a change of a mean ratio counts only when it is larger than "
        "the larger of the two standard deviations over seeds and than 0.02. "
        "*Beats paper*: one "
        "ratio lower by that much and neither higher by that much; *worse*: one "
        "higher by that much; otherwise no difference detectable.",
        "",
        "| data | backend | strategy | seeds | worst / random | overall / random | "
        "worst / own overall | goal met | beats paper |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    wins = {rule: [] for rule in rules}
    for key in sorted({k[:2] for k in groups}):
        random = groups.get((*key, "random"))
        paper = groups.get((*key, "flatten"))
        if not random or not paper:
            continue
        worst0 = np.mean([r["max"] for r in random])
        overall0 = np.mean([r["overall"] for r in random])
        paper_worst, paper_overall, _ = _ratios(paper, worst0, overall0)
        for strategy in ["flatten", "fps", *rules]:
            if (*key, strategy) not in groups:
                continue
            these = groups[(*key, strategy)]
            worst, overall, own = _ratios(these, worst0, overall0)
            met = (
                np.mean(worst) <= 0.5
                and np.mean(overall) <= 1.0
                and np.mean(own) <= 1.5
            )
            beats = ""
            if strategy in rules:
                # a change smaller than the seeds' spread (or 2 %) is not detectable
                gains = [
                    (np.mean(ref) - np.mean(mine), max(_sd(ref), _sd(mine), 0.02))
                    for ref, mine in ((paper_worst, worst), (paper_overall, overall))
                ]
                lost = any(gain < -noise for gain, noise in gains)
                gained = any(gain > noise for gain, noise in gains)
                wins[strategy].append((not lost and gained, not lost))
                beats = (
                    "worse"
                    if lost
                    else "**yes**"
                    if gained
                    else "no difference detectable"
                )
            lines.append(
                f"| {key[0]} | {key[1]} | {strategy} | {len(these)} | "
                f"{spread(worst, 2)} | {spread(overall, 2)} | {spread(own, 2)} | "
                f"{'yes' if met else 'no'} | {beats} |"
            )
    lines += [
        "",
        "| rule | beats the paper's rules in | not worse than them in |",
        "| --- | --- | --- |",
    ]
    for rule, won in wins.items():
        lines.append(
            f"| {rule} | {sum(w for w, _ in won)} of {len(won)} | "
            f"{sum(n for _, n in won)} of {len(won)} |"
        )
    return lines


def _ratios(rows, worst0, overall0):
    """Worst cluster and overall error against random's, and worst / own overall."""
    worst = [r["max"] / worst0 for r in rows]
    overall = [r["overall"] / overall0 for r in rows]
    own = [r["max"] / r["overall"] for r in rows]
    return worst, overall, own


def matching_size(sizes, worst, target) -> str:
    """First default size whose mean worst-cluster error reaches ``target``.

    Linear interpolation between the measured sizes; beyond them, a bound.
    """
    if worst[0] <= target:
        return f"<= {sizes[0]}"
    for i in range(1, len(sizes)):
        if worst[i] <= target:
            t = (worst[i - 1] - target) / (worst[i - 1] - worst[i])
            return f"~{sizes[i - 1] + t * (sizes[i] - sizes[i - 1]):.0f}"
    return f"> {sizes[-1]}"


def plot(results, out: Path) -> list[Path]:
    """Fig. 4, 5 and 7 analogues (seed of the first row; spread in the tables)."""
    paths = []
    outlier = _group(results["outlier"], ("data",))
    if not outlier:
        return paths
    fig, axes = _panels(len(outlier))
    for ax, ((data,), rows) in zip(axes, outlier.items(), strict=True):
        for backend, group in _group(rows, ("backend",)).items():
            r = group[0]
            c = np.sort([v for v in r["clusters"] if v >= 0]) / r["overall"]
            ax.plot(c, ".-", label=f"{backend[0]} (max {c[-1]:.2f}x)")
        ax.axhline(1, color="k", lw=0.8, ls="--")
        ax.set(title=data, xlabel="cluster (sorted)", ylabel="force RMSE / overall")
        ax.legend(fontsize=8)
    paths.append(_save(fig, out / "outlier.png"))

    improvement = _group(results["improvement"], ("data", "backend"))
    if improvement:
        fig, axes = _panels(len(improvement))
        for ax, ((data, backend), rows) in zip(axes, improvement.items(), strict=True):
            runs = {r["strategy"]: r for r in rows if r["seed"] == rows[0]["seed"]}
            default = np.array(runs["random"]["clusters"])
            order = [i for i in np.argsort(default) if default[i] >= 0]
            for strategy in ("random", "flatten"):
                c = np.array(runs[strategy]["clusters"])[order]
                ax.plot(c, ".-", label=strategy)
            ax.set(title=f"{data}, {backend}", xlabel="cluster (default's order)")
            ax.set_ylabel("test force RMSE (eV/Å)")
            ax.legend(fontsize=8)
        paths.append(_save(fig, out / "improvement.png"))

    efficiency = _group(results["efficiency"], ("data", "backend"))
    if efficiency:
        fig, axes = _panels(len(efficiency))
        for ax, ((data, backend), rows) in zip(axes, efficiency.items(), strict=True):
            by_size = _group(rows, ("n_default",))
            flat = [r["max"] for r in by_size.pop(("flattened",))]
            sizes = sorted(k[0] for k in by_size)
            worst = [[r["max"] for r in by_size[(n,)]] for n in sizes]
            ax.errorbar(sizes, np.mean(worst, 1), [_sd(w) for w in worst], marker="o",
                        label="default (random)")  # fmt: skip
            ax.axhspan(np.mean(flat) - _sd(flat), np.mean(flat) + _sd(flat),
                       color="C1", alpha=0.3)  # fmt: skip
            ax.axhline(np.mean(flat), color="C1", label=f"flattened, {rows[0]['n']}")
            ax.set(title=f"{data}, {backend}", xlabel="default training frames")
            ax.set_ylabel("worst-cluster force RMSE (eV/Å)")
            ax.legend(fontsize=8)
        paths.append(_save(fig, out / "efficiency.png"))
    return paths


def _sd(values) -> float:
    """Sample standard deviation over seeds, as in the tables (0 for one seed)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _panels(n: int):
    """A figure with ``n`` panels, at most four per row."""
    import matplotlib.pyplot as plt

    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _group(rows, keys):
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEMO_DATA)
    parser.add_argument("--size", choices=sorted(SIZES), default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backends", nargs="+", default=["sgdml", "schnet", "gap"])
    parser.add_argument(
        "--strategies",
        nargs="*",
        default=default_strategies(),
        choices=[*STRATEGIES, "none"],
        help="peers trained beside random and flattened (`none` or no name: only "
        "those two)",
    )
    parser.add_argument(
        "--rules",
        nargs="*",
        default=[],
        choices=sorted(RULES),
        help="selection rules beyond the paper's, each one more flattened set",
    )
    parser.add_argument(
        "--efficiency",
        nargs="*",
        help="backends for the data-efficiency runs (default: all of --backends)",
    )
    parser.add_argument(
        "--molecules", nargs="+", help="only these datasets (name prefixes)"
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: tabulate the finished runs (a seed's runs: all or none)",
    )
    parser.add_argument(
        "--improve-gap", action="store_true", help="also run the loop with GAP"
    )
    parser.add_argument(
        "--extra-test",
        metavar="FILE",
        help="labelled trajectory of the molecule never in the pool (e.g. hotter "
        "MD): every equal-size set's errors on it too (one molecule at a time)",
    )
    parser.add_argument(
        "-o", "--output", default=ROOT / "benchmarks" / "output" / "suite"
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS|local:N",
        help="run the training runs as tasks on the workers of this Dask scheduler "
        "(or N local worker processes), then make the tables here",
    )
    args = parser.parse_args()
    args.strategies = [s for s in args.strategies if s != "none"]
    data_dir = Path(args.data_dir)
    if data_dir.resolve() == DEMO_DATA:  # the demo data, made here when missing
        from ase_flatten.md_dataset import make_example_files

        make_example_files(DEMO_DATA, n_frames=3000, seed=0)
    elif not data_dir.is_dir():
        sys.exit(f"{data_dir}: no such folder")
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
        sys.exit(f"{data_dir}: no datasets (*.xyz.gz, *500K.extxyz)")
    if args.extra_test and len(args.data) > 1:
        sys.exit("--extra-test is one molecule's trajectory: choose it by --molecules")
    if args.extra_test and not Path(args.extra_test).is_file():
        sys.exit(f"--extra-test {args.extra_test}: no such file")
    start = time.perf_counter()
    if args.dask and not args.collect:
        run_planned_on_dask(args)
    results = run_suite(args)
    results["measures"] = measures_over_seeds(results["improvement"])
    import ase
    import sklearn

    sizes = SIZES[args.size]
    meta = {
        "size": f"{args.size}: flattened {sizes['init']} + {sizes['iterations']} x "
        f"{sizes['step']} frames, {sizes['n_fine']} fine clusters; "
        f"sGDML sigma 10, SchNet {sizes['epochs']} epochs, MACE l<=2, correlation 2, "
        "40 epochs; 10 % test split",
        "datasets": ", ".join(Path(d).name for d in args.data),
        "seeds": " ".join(map(str, args.seeds)),
        "machine": f"{platform.machine()}, 2 cores (OMP_NUM_THREADS=1)",
        "date": time.strftime("%Y-%m-%d"),
        "versions": f"python {platform.python_version()}, ase {ase.__version__}, "
        f"scikit-learn {sklearn.__version__}",
        "wall time": f"{time.perf_counter() - start:.0f} s for this command; "
        f"{np.nansum(list(WALLS.values())) / 3600:.2f} h summed over its "
        f"{len(WALLS)} runs",
    }
    if args.extra_test:
        meta["extra test"] = str(args.extra_test)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "suite.json", json.dumps({"meta": meta, **results}, indent=1))
    write_text(out / "suite.md", markdown(results, meta))
    print((out / "suite.md").read_text())
    for path in plot(results, out):
        print(f"plot: {path}")


if __name__ == "__main__":
    main()
