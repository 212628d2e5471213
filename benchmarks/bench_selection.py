"""Flattened vs peer training sets of equal size, sGDML on ethanol.

Runs, through the command line, one flattened set (``--init`` + ``--iterations`` x
``--step``) and the random, energy, fps and cur strategies at the same final size,
all with the same test split and kernel width, then ``ase-flatten compare``.
Also reports how an iteration's time splits into training, prediction and the
selection logic (steps 3-5).

usage: python benchmarks/bench_selection.py [--data FILE] [--init 100 --step 100
       --iterations 4] [--sigma 10] [-o benchmarks/output/selection]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ethanol_xtb500K.xyz.gz"
CLI = str(Path(sys.executable).parent / "ase-flatten")


def run(*argv) -> float:
    argv = [str(a) for a in argv]
    print("$ ase-flatten " + " ".join(argv), flush=True)
    start = time.perf_counter()
    subprocess.run([CLI, *argv, "-q"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--init", type=int, default=100)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--sigma", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategies", nargs="+", default=["random", "energy", "fps", "cur"]
    )
    parser.add_argument(
        "-o", "--output", default=ROOT / "benchmarks" / "output" / "selection"
    )
    args = parser.parse_args()

    out = Path(args.output)
    if out.exists():
        shutil.rmtree(out)
    size = args.init + args.iterations * args.step
    common = [
        "--backend",
        "sgdml",
        "-p",
        f"sigma={args.sigma}",
        "--seed",
        str(args.seed),
    ]
    walls = {}
    walls["flatten"] = run(
        "select", args.data, *common, "--init", args.init, "--step", args.step,
        "--iterations", args.iterations, "--error-sample", 0,  # the whole pool
        "-o", out / "flatten",
    )  # fmt: skip
    for strategy in args.strategies:
        walls[strategy] = run(
            "train", args.data, *common, "--size", size, "--strategy", strategy,
            "-o", out / strategy,
        )  # fmt: skip
    runs = [out / s for s in args.strategies] + [out / "flatten"]
    run("compare", *runs, "-o", out / "comparison")

    history = json.loads((out / "flatten" / "history.json").read_text())
    split = [h["timings"] for h in history if h["iteration"] != "final"]
    for t in split:
        t["select_share"] = t["select"] / (t["train"] + t["predict"] + t["select"])
    summary = {"size": size, "wall_s": walls, "iterations": split}
    (out / "timings.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print((out / "comparison" / "comparison.csv").read_text())


if __name__ == "__main__":
    main()
