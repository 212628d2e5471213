"""MD survival of an explored model against stored default and flattened runs.

Trains a small default model (``--initial`` random frames), explores it with
GFN2-xTB (tblite) as the oracle until ``--initial`` + ``--budget`` labels are spent
or it survives, then runs ``md-validate`` on the explored model with the protocol
of stored runs (``--against``: an md-validate output folder of the same dataset,
temperatures, time, replicas and seed) and compares failures with a log-rank test
per temperature. Every step is resumable: run the same command again.

    python benchmarks/explore_survival.py ../shared/data/ethanol_xtb500K.xyz.gz \\
        --backend schnet -p loss=energy -p max_epochs=150 --initial 150 --budget 100 \\
        --against benchmarks/results/md_schnet_energy250_ethanol \\
        -o benchmarks/output/explore_survival/ethanol_schnet_energy250

Writes OUT/initial (the start model), OUT/explored (``ase-flatten explore``),
OUT/md (``md-validate``), OUT/survival.md (the table) and OUT/walls.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from ase_flatten.files import write_json, write_text

BIN = Path(sys.executable).parent
XTB = json.dumps({"method": "GFN2-xTB", "verbosity": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--backend", default="schnet")
    parser.add_argument("-p", "--param", action="append", default=[])
    parser.add_argument("--initial", type=int, default=150)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=25)
    parser.add_argument("--explore-replicas", type=int, default=4)
    parser.add_argument("--explore-time-ps", type=float, default=2.0)
    parser.add_argument("--against", type=Path, required=True)
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--time-ps", type=float, default=10.0)
    parser.add_argument("--temperatures", nargs="+", default=["300", "400"])
    parser.add_argument(
        "--md-temperatures",
        nargs="+",
        help="temperatures of the survival runs (default: --temperatures)",
    )
    parser.add_argument(
        "--reference-replicas",
        type=int,
        default=0,
        help="GFN2-xTB MD replicas per temperature beside the survival runs (0: none);"
        " their distance distribution is the noise floor of the model's",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.data).is_file():  # before any training or MD starts
        sys.exit(f"{args.data}: no such file")
    summary = args.against / "summary.csv"
    if not summary.is_file():
        sys.exit(f"--against {args.against}: no summary.csv (an md-validate output)")
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    walls_file = out / "walls.json"
    walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}
    params = [x for p in args.param for x in ("-p", p)]
    args.md_temperatures = args.md_temperatures or args.temperatures

    def step(name, tool, argv, done):
        if done.exists():
            return
        print(f"$ {tool} " + " ".join(map(str, argv)), flush=True)
        start = time.perf_counter()
        subprocess.run([str(BIN / tool), *map(str, argv)], check=True)
        walls[name] = round(time.perf_counter() - start, 1)
        write_json(walls_file, walls)

    step(
        "train",
        "ase-flatten",
        ["train", args.data, "--backend", args.backend, *params, "--size",
         args.initial, "--seed", args.seed, "-o", out / "initial"],
        out / "initial" / "model.json",
    )  # fmt: skip
    step(
        "explore",
        "ase-flatten",
        ["explore", out / "initial", "--oracle", "tblite.ase:TBLite",
         "--oracle-kwargs", XTB, "--temperatures", *args.temperatures,
         "--replicas", args.explore_replicas, "--time-ps", args.explore_time_ps,
         "--per-round", args.per_round, "--label-budget", args.budget,
         "--max-rounds", -(-args.budget // args.per_round) + 1,
         "--seed", args.seed, "--jobs", args.jobs, "-o", out / "explored",
         "--resume"],
        out / "explored" / "model.json",
    )  # fmt: skip
    step(
        "md-validate",
        "md-validate",
        ["--model", f"explored={out / 'explored'}", "--start", args.data,
         "--temperatures", *args.md_temperatures, "--time-ps", args.time_ps,
         "--replicas", args.replicas, "--seed", args.seed, "--jobs", args.jobs,
         "-o", out / "md", "--no-progress", "-q", *reference_args(args),
         *(["--resume"] if (out / "md.partial").exists() else [])],
        out / "md" / "summary.csv",
    )  # fmt: skip
    write_text(out / "survival.md", survival_table(out, args))
    print((out / "survival.md").read_text())


def reference_args(args) -> list[str]:
    """md-validate's options for GFN2-xTB's own MD (none without replicas)."""
    if args.reference_replicas <= 0:
        return []
    return ["--reference", "tblite.ase:TBLite", "--reference-kwargs", XTB,
            "--reference-replicas", str(args.reference_replicas)]  # fmt: skip


def distance_lines(out: Path) -> list[str]:
    """JS divergence of the explored model's distances to GFN2-xTB's, over its floor."""
    comparison = json.loads((out / "md" / "comparison.json").read_text())
    lines = []
    for temperature, block in comparison["temperatures"].items():
        reference = block.get("reference")
        if not reference:
            continue
        floor = reference["reference"]["self_js_divergence"]
        for model, measures in reference["models"].items():
            js = measures["js_divergence"]
            ratio = js / floor
            lines.append(
                f"| {temperature} | {model} | {js:.4f} | {floor:.4f} | {ratio:.1f} |"
            )
    if not lines:
        return []
    header = [
        "",
        "| T (K) | model | JS divergence to GFN2-xTB (bits) | GFN2-xTB vs itself"
        " | ratio |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    return header + lines


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def survival_table(out: Path, args) -> str:
    """Failures per model and temperature; log-rank p of explored vs each other."""
    from lifelines.statistics import logrank_test

    rows = _rows(out / "md" / "summary.csv") + _rows(args.against / "summary.csv")
    history = json.loads((out / "explored" / "history.json").read_text())
    labels = args.initial + sum(e["labels"]["calls"] for e in history)
    lines = [
        f"explored: {args.initial} initial + "
        f"{labels - args.initial} oracle calls = {labels} labels, "
        f"{len(history)} rounds",
        "",
        "| T (K) | model | failed | log-rank p (explored vs this) |",
        "| ---: | --- | ---: | ---: |",
    ]
    for temperature in args.md_temperatures:
        by_model = {}
        for row in rows:
            if float(row["temperature_K"]) != float(temperature):
                continue
            if row["model"].lower() in ("gfn2-xtb", "reference"):
                continue
            failed = row["failed"] == "True"
            time_ps = float(row["time_to_failure_ps"] or row["simulated_ps"])
            by_model.setdefault(row["model"], []).append((time_ps, failed))
        mine = by_model.get("explored", [])
        for model, runs in sorted(by_model.items()):
            p = ""
            if model != "explored" and mine:
                test = logrank_test(
                    [t for t, _ in mine],
                    [t for t, _ in runs],
                    [f for _, f in mine],
                    [f for _, f in runs],
                )
                p = f"{test.p_value:.3g}"
            n_failed = sum(f for _, f in runs)
            lines.append(f"| {temperature} | {model} | {n_failed}/{len(runs)} | {p} |")
    lines += distance_lines(out)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
