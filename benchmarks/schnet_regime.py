"""The regime scan: SchNet loss x training-set size against MD survival.

The paper's Fig. 8 contrast (the default model fails at 400 K, the flattened one
does not) needs a model that learned the energy surface but predicts forces poorly.
This trains default (random) SchNet models for every loss and size, measures their
test errors, and runs a short ``md-validate`` screen of each at 300 and 400 K. A
model "in the regime" has no failure at 300 K and failures at 400 K; that loss and
size is where ``benchmarks/md_survival.py`` then compares default and flattened
sets with many replicas.

    python benchmarks/schnet_regime.py ../shared/data/ethanol_xtb500K.xyz.gz \\
        --losses energy mixed --sizes 250 500 1000 --replicas 4 --time-ps 10 \\
        -o benchmarks/output/schnet_regime/ethanol

Every model and every screen is kept; the same command resumes. Writes
OUT/<loss>_<size>/ (model directory), OUT/md/<loss>_<size>/ (md-validate output)
and OUT/regime.md, OUT/regime.json (the table).
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

from ase_flatten.error_analysis import KCAL_MOL  # noqa: E402
from ase_flatten.files import write_json, write_text  # noqa: E402


def screen(model: Path, out: Path, args) -> float:
    """``md-validate`` of one model (resumed if interrupted); its wall time."""
    if (out / "comparison.json").exists():
        return float("nan")
    argv = [
        "--model", f"{model.name}={model}", "--start", args.data,
        "--temperatures", *args.temperatures, "--time-ps", args.time_ps,
        "--replicas", args.replicas, "--seed", args.seed, "--jobs", args.jobs,
        "-o", out, "--no-progress", "-q",
    ]  # fmt: skip
    if out.with_name(out.name + ".partial").exists():
        argv.append("--resume")
    argv = [str(a) for a in argv]
    print("$ md-validate " + " ".join(argv), flush=True)
    start = time.perf_counter()
    subprocess.run([str(BIN / "md-validate"), *argv], check=True)
    return time.perf_counter() - start


def test_errors(model: Path, data: str) -> dict:
    """Force and energy RMSE of a saved model on its own test split (eV/Å, eV)."""
    from ase_flatten import read_dataset
    from ase_flatten.error_analysis import model_errors
    from ase_flatten.models import load_model

    saved = load_model(model)
    errors = model_errors(
        saved.backend,
        read_dataset(data),
        saved.test_indices,
        saved.clusters.labels_,
        progress=False,
    )
    return {key: errors.overall[key] for key in ("force_rmse", "energy_rmse")}


def row(model: Path, md: Path, data: str) -> dict:
    """Test errors of the model and its failures per temperature."""
    comparison = json.loads((md / "comparison.json").read_text())
    result = test_errors(model, data)
    for temperature, block in comparison["temperatures"].items():
        stats = block["models"][model.name]
        result[f"{temperature}K"] = {
            "failures": stats["failures"],
            "replicas": stats["replicas"],
            "median_time_to_failure": stats["median_time_to_failure"],
        }
    return result


def table(rows: dict, args) -> str:
    temps = [f"{t}K" for t in args.temperatures]
    lines = [
        "| loss | frames | test force RMSE eV/Å (kcal/(mol Å)) | energy RMSE eV | "
        + " | ".join(f"failed at {t[:-1]} K (median time to failure)" for t in temps)
        + " | in the regime |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---" for _ in temps) + " | --- |",
    ]
    for name, r in rows.items():
        loss, size = name.rsplit("_", 1)
        cells = [
            f"{r[t]['failures']}/{r[t]['replicas']} ({r[t]['median_time_to_failure']})"
            for t in temps
        ]
        regime = r[temps[0]]["failures"] == 0 and r[temps[-1]]["failures"] > 0
        lines.append(
            f"| {loss} | {size} | {r['force_rmse']:.4f} "
            f"({r['force_rmse'] / KCAL_MOL:.2f}) | "
            f"{r['energy_rmse']:.4f} | "
            + " | ".join(cells)
            + f" | {'**yes**' if regime else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="labelled trajectory")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--losses", nargs="+", default=["energy", "mixed"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--time-ps", type=float, default=10.0)
    parser.add_argument("--temperatures", nargs="+", default=["300", "400"])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--collect",
        action="store_true",
        help="train and run nothing: tabulate the models already screened",
    )
    args = parser.parse_args()

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    rows, walls = {}, {}
    for loss in args.losses:
        for size in args.sizes:
            name = f"{loss}_{size}"
            model = out / name
            if args.collect and not (out / "md" / name / "comparison.json").exists():
                continue
            cli(model, "train", args.data, "--backend", "schnet",
                "-p", f"loss={loss}", "-p", f"max_epochs={args.epochs}",
                "--size", size, "--seed", args.seed)  # fmt: skip
            walls[f"train {name}"] = WALLS.get(model, float("nan"))
            walls[f"md {name}"] = screen(model, out / "md" / name, args)
            rows[name] = row(model, out / "md" / name, args.data)
            settings = {k: str(v) for k, v in vars(args).items()}
            write_json(out / "regime.json", {"settings": settings, "rows": rows})
    old = out / "walls.json"
    if old.exists():  # resumed: keep the wall times of the first run
        walls = {**walls, **{k: v for k, v in json.loads(old.read_text()).items()
                             if v == v}}  # fmt: skip
    write_json(old, walls)
    write_text(out / "regime.md", table(rows, args))
    print((out / "regime.md").read_text())


if __name__ == "__main__":
    main()
