"""Range: a model of the 500 K data explored at a hotter temperature.

Trains a default model (``--size`` random frames of DATA, sGDML sigma 10), makes
an independent GFN2-xTB trajectory at ``--temperature`` (examples/make_dataset.py,
started from a frame of DATA, never in the pool), explores the model at that
temperature with GFN2-xTB labels (``--budget`` at most), and reports for the start
and the explored model the force RMSE on the hot trajectory and on DATA's test
split (500 K), per seed. Every step is resumable: run the same command again.

    python benchmarks/explore_range.py ../shared/data/ethanol_xtb500K.xyz.gz \\
        --seeds 0 1 2 -o benchmarks/output/explore_range/ethanol

Beside the start model, a model of as many random 500 K frames as the explored one
was trained on (OUT/seedN/random_<labels>) is the yardstick at the same labels.

Writes OUT/hot.extxyz, OUT/seedN/{default,explored,random_<labels>},
OUT/range.json and OUT/range.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ase_flatten.files import write_json, write_text

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
XTB = json.dumps({"method": "GFN2-xTB", "verbosity": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--size", type=int, default=250)
    parser.add_argument("--temperature", type=float, default=800.0)
    parser.add_argument("--hot-frames", type=int, default=500)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument(
        "--stop-outside",
        type=float,
        default=0.05,
        help="explore's stop rule: a round without failures and at most this share"
        " outside the domain (0 labels high-error frames even then)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.data).is_file():  # before any training or MD starts
        sys.exit(f"{args.data}: no such file")
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    hot = out / "hot.extxyz"
    if not hot.exists():
        start = out / "start.xyz"
        subprocess.run(
            [sys.executable, "-c",
             "import sys; from ase_flatten.data import read_frames; import ase.io; "
             "ase.io.write(sys.argv[2], read_frames(sys.argv[1], 0))",
             args.data, str(start)],
            check=True,
        )  # fmt: skip
        _run(
            sys.executable, ROOT / "examples" / "make_dataset.py", start,
            "-n", args.hot_frames, "--stride", 20, "--temperature", args.temperature,
            "--equilibration", 1000, "--seed", 1234, "-o", hot, "--resume",
        )  # fmt: skip
    rows = []
    for seed in args.seeds:
        folder = out / f"seed{seed}"
        default, explored = folder / "default", folder / "explored"
        if not (default / "model.json").exists():
            _run(
                BIN / "ase-flatten", "train", args.data, "--backend", "sgdml",
                "-p", "sigma=10", "--size", args.size, "--seed", seed, "-o", default,
            )  # fmt: skip
        if not (explored / "model.json").exists():
            _run(
                BIN / "ase-flatten", "explore", default, "--oracle",
                "tblite.ase:TBLite", "--oracle-kwargs", XTB, "--temperatures",
                args.temperature, "--replicas", 4, "--time-ps", 2,
                "--per-round", args.per_round, "--label-budget", args.budget,
                "--max-rounds", -(-args.budget // args.per_round) + 1,
                "--stop-outside", args.stop_outside, "--seed", seed,
                "--jobs", args.jobs, "-o", explored, "--resume",
            )  # fmt: skip
        history = json.loads((explored / "history.json").read_text())
        row = {"seed": seed, "labels": sum(e["labels"]["calls"] for e in history)}
        # the yardstick at the same label count: random frames of the 500 K pool
        same = folder / f"random_{args.size + row['labels']}"
        if not (same / "model.json").exists():
            _run(
                BIN / "ase-flatten", "train", args.data, "--backend", "sgdml",
                "-p", "sigma=10", "--size", args.size + row["labels"],
                "--seed", seed, "-o", same,
            )  # fmt: skip
        models = (("default", default), ("explored", explored), ("same", same))
        for name, model in models:
            row[f"{name}_hot_rmse"] = _rmse(model, hot)
            row[f"{name}_500K_rmse"] = _test_rmse(model, args.data, default)
        # MD, labels and training of every round, as the history recorded them
        # (the same on a rerun that finds the exploration done)
        timings = [sum(e.get("timings", {}).values()) for e in history]
        row["explore_s"] = round(sum(timings), 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_json(out / "range.json", rows)
    write_text(out / "range.md", _table(rows, args))
    print((out / "range.md").read_text())


def _run(*argv) -> None:
    argv = [str(a) for a in argv]
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def _rmse(model: Path, path) -> float:
    """Force RMSE (eV/Å) of a saved model on every frame of a file."""
    from ase_flatten.data import read_dataset
    from ase_flatten.models import load_model

    data = read_dataset(str(path))
    _, forces = load_model(model).backend.predict(data, progress=False)
    return float(np.sqrt(np.mean((forces - data.forces) ** 2)))


def _test_rmse(model: Path, data_path: str, default: Path) -> float:
    """Force RMSE on the default model's test split of the 500 K data."""
    from ase_flatten.data import read_dataset
    from ase_flatten.models import load_indices, load_model

    data = read_dataset(data_path)
    test = load_indices(default / "test_indices.npy")
    _, forces = load_model(model).backend.predict(data, test, progress=False)
    return float(np.sqrt(np.mean((forces - data.forces[test]) ** 2)))


def _table(rows: list[dict], args) -> str:
    def ms(key):
        values = np.array([r[key] for r in rows])
        return f"{values.mean():.4f} ± {values.std():.4f}"

    def ratio(key, to):
        values = np.array([r[f"explored_{key}"] / r[f"{to}_{key}"] for r in rows])
        return f"{values.mean():.3f} ± {values.std():.3f}"

    labels = np.array([r["labels"] for r in rows])
    return "\n".join(
        [
            f"{len(rows)} seeds, {args.size} frames, explored at "
            f"{args.temperature:g} K with {labels.mean():.0f} ± {labels.std():.0f} "
            f"labels (mean ± sd over seeds; --stop-outside {args.stop_outside:g})",
            "",
            "| model | force RMSE hot trajectory eV/Å | force RMSE 500 K test eV/Å |",
            "| --- | ---: | ---: |",
            f"| default | {ms('default_hot_rmse')} | {ms('default_500K_rmse')} |",
            f"| explored | {ms('explored_hot_rmse')} | {ms('explored_500K_rmse')} |",
            f"| random, the explored model's labels | {ms('same_hot_rmse')} | "
            f"{ms('same_500K_rmse')} |",
            f"| explored / default | {ratio('hot_rmse', 'default')} | "
            f"{ratio('500K_rmse', 'default')} |",
            f"| explored / random, same labels | {ratio('hot_rmse', 'same')} | "
            f"{ratio('500K_rmse', 'same')} |",
            "",
        ]
    )


if __name__ == "__main__":
    main()
