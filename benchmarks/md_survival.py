"""MD survival and reference comparison of a default and a flattened model.

Trains a default model (random frames) and a flattened one (``ase-flatten select``)
of the same size on one dataset, then runs ``md-validate`` on both at 300 K and
400 K with many replicas and GFN2-xTB's own MD as the reference. Every step is
resumable: finished models are kept, and md-validate continues with ``--resume``.

    python benchmarks/md_survival.py ../shared/data/ethanol_xtb500K.xyz.gz \\
        --replicas 8 --time-ps 5 -o benchmarks/output/md_survival/ethanol

Writes OUT/default, OUT/flattened (model directories; with --efficiency also
OUT/default_N, defaults of N frames), OUT/compare (`ase-flatten compare` of them:
per-cluster test errors, Fig. 5-7), OUT/md (md-validate's output: summary.csv,
survival.csv/png, comparison.json, reference.png) and OUT/walls.json (wall time of
each step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import BIN, WALLS, cli  # noqa: E402

from ase_flatten.files import write_json, write_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="labelled trajectory")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--backend", default="sgdml")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        help="backend parameter KEY=VALUE (repeat; default for sgdml: sigma=10)",
    )
    parser.add_argument("--init", type=int, default=100)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--reference-replicas", type=int, default=4)
    parser.add_argument("--time-ps", type=float, default=5.0)
    parser.add_argument("--temperatures", nargs="+", default=["300", "400"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-fine", type=int, help="fine clusters (default: 2 x step)")
    parser.add_argument(
        "--select-args",
        default="",
        help="more `ase-flatten select` flags, one string (e.g. '--allocation size')",
    )
    parser.add_argument(
        "--efficiency",
        type=float,
        nargs="*",
        default=[],
        help="also default models of these multiples of the size (Fig. 7), "
        "compared with the others by `ase-flatten compare` in OUT/compare",
    )
    args = parser.parse_args()

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    size = args.init + args.iterations * args.step
    if args.param is None:
        args.param = ["sigma=10"] if args.backend == "sgdml" else []
    params = [f"-p{p}" for p in args.param]
    common = ["--backend", args.backend, *params, "--seed", args.seed]
    cli(out / "default", "train", args.data, *common, "--size", size)
    cli(out / "flattened", "select", args.data, *common, "--init", args.init,
        "--step", args.step, "--iterations", args.iterations,
        "--n-fine", args.n_fine or 2 * args.step,
        *args.select_args.split())  # fmt: skip
    runs = [out / "default", out / "flattened"]
    for factor in args.efficiency:
        n = round(factor * size)
        runs.append(out / f"default_{n}")
        cli(runs[-1], "train", args.data, *common, "--size", n)
    if not (out / "compare" / "comparison.json").exists():  # Fig. 6 and 7
        subprocess.run(
            [str(BIN / "ase-flatten"), "compare", *map(str, runs), "-q",
             "-o", str(out / "compare"), "--overwrite"],
            check=True,
        )  # fmt: skip
    walls = {path.name: wall for path, wall in WALLS.items()}

    md = out / "md"
    xtb = json.dumps({"method": "GFN2-xTB", "verbosity": 0})
    argv = [
        "--model", f"default={out / 'default'}",
        "--model", f"flattened={out / 'flattened'}",
        "--start", args.data, "--temperatures", *args.temperatures,
        "--time-ps", args.time_ps, "--replicas", args.replicas,
        "--reference", "tblite.ase:TBLite", "--reference-kwargs", xtb,
        "--reference-replicas", args.reference_replicas, "--seed", args.seed,
        "--jobs", args.jobs, "-o", md, "--no-progress",
    ]  # fmt: skip
    if md.with_name(md.name + ".partial").exists():
        argv.append("--resume")
    if not (md / "comparison.json").exists():
        argv = [str(a) for a in argv]
        print("$ md-validate " + " ".join(argv), flush=True)
        start = time.perf_counter()
        subprocess.run([str(BIN / "md-validate"), *argv], check=True)
        walls["md-validate"] = round(time.perf_counter() - start, 1)
    old = out / "walls.json"
    if old.exists():
        walls = {**json.loads(old.read_text()), **walls}
    write_json(old, walls)
    print(json.dumps(walls, indent=1))
    write_text(out / "survival.md", survival_table(md / "comparison.json"))
    print((out / "survival.md").read_text())


def survival_table(comparison: Path) -> str:
    """Failures, log-rank p and distance to the reference per model and temperature."""
    data = json.loads(comparison.read_text())
    lines = [
        "| T (K) | model | failed | median time to failure | failures/ns (95 % CI) "
        "| log-rank p vs the other model | JS divergence to reference (bits) | "
        "potential energy - reference (eV, 95 % CI) |",
        "| ---: | --- | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for temperature, block in data["temperatures"].items():
        pair = next((p for p in block["pairs"] if "reference" not in p["models"]), None)
        reference = (block.get("reference") or {}).get("models", {})
        for name, stats in block["models"].items():
            low, high = stats["failures_per_ns_ci95"]
            p = "" if pair is None or name not in pair["models"] else pair["logrank_p"]
            ref = reference.get(name, {})
            shift = ref.get("potential_energy_eV_minus_reference")
            lines.append(
                f"| {temperature} | {name} | {stats['failures']}/{stats['replicas']} | "
                f"{stats['median_time_to_failure']} | {stats['failures_per_ns']:.3g} "
                f"({low:.3g}-{high:.3g}) | {_fmt(p)} | "
                f"{_fmt(ref.get('js_divergence'))} | "
                + (
                    ""
                    if shift is None
                    else f"{shift['mean']:+.3f} ({shift['ci95'][0]:+.3f} to "
                    f"{shift['ci95'][1]:+.3f})"
                )
                + " |"
            )
    verdicts = [
        p["verdict"]
        for block in data["temperatures"].values()
        for p in block["pairs"]
        if "reference" not in p["models"]
    ]
    return "\n".join(lines + [""] + [f"- {v}" for v in verdicts]) + "\n"


def _fmt(value) -> str:
    """A p-value or divergence: '' where none applies, 'n/a' where none was measured."""
    if value == "":
        return ""
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value < 0.01 else f"{value:.3f}"


if __name__ == "__main__":
    main()
