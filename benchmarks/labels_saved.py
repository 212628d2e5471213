"""Labels saved: flattening from an unlabelled pool against a labelled pool and random.

For every dataset and seed, three training sets of the suite's sizes (init 100 +
3 x 50, sGDML sigma 10) are built and scored on the same test split with the same
clustering (the paper's 10 x 5 clusters of the whole labelled dataset):

- ``labelled``: the paper's loop on the labelled pool (every pool label known);
- ``oracle``: the same loop treating the pool as unlabelled (``select --oracle``):
  labels paid for the initial set, ``--error-sample`` frames per coarse cluster
  (energy levels skipped) and the picks, counted as oracle calls; the test split
  is labelled once and counted apart;
- ``random``: random sets of the flattened size and of the oracle run's label
  count (what the same labels buy without the loop).

The oracle is the stored labels (``--oracle stored``: the dataset answers by frame
content, counted as calls, the same numbers GFN2-xTB gives) or tblite itself
(``--oracle tblite``).

    python benchmarks/labels_saved.py ../shared/data/*_xtb500K.xyz.gz --seeds 0 1 2 \\
        -o benchmarks/output/labels_saved

Writes OUT/results.json (one row per dataset, seed and set) and OUT/labels_saved.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ase_flatten.files import write_json, write_text

SIZES = {"init": 100, "step": 50, "iterations": 3, "n_fine": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--error-sample", type=int, default=3)
    parser.add_argument("--oracle", choices=("stored", "tblite"), default="stored")
    parser.add_argument(
        "--estimates",
        nargs="+",
        choices=("cluster", "committee"),
        default=["cluster", "committee"],
        help="error estimates for the frames without labels, one oracle run each",
    )
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    results_file = args.output / "results.json"
    rows = json.loads(results_file.read_text()) if results_file.exists() else []
    done = {(r["data"], r["seed"], r["set"]) for r in rows}
    for path in args.data:
        for seed in args.seeds:
            wanted = ["labelled"] + [_oracle_set(e) for e in args.estimates]
            if all((path, seed, s) in done for s in wanted):
                continue
            kept = [r for r in rows if (r["data"], r["seed"]) == (path, seed)]
            rows = [r for r in rows if (r["data"], r["seed"]) != (path, seed)]
            rows += one_case(path, seed, args, kept)
            write_json(results_file, rows)
    write_text(args.output / "labels_saved.md", table(rows))
    print((args.output / "labels_saved.md").read_text())


def _oracle_set(estimate: str) -> str:
    return "oracle" if estimate == "cluster" else f"oracle_{estimate}"


def one_case(path: str, seed: int, args, kept: list[dict]) -> list[dict]:
    """The sets of one dataset and seed; rows in ``kept`` are not run again."""
    from ase_flatten.backends import make_backend
    from ase_flatten.clustering import TwoStageClustering, cluster_features
    from ase_flatten.data import read_dataset
    from ase_flatten.descriptors import pairwise_distances
    from ase_flatten.oracle import LabelStore, Oracle
    from ase_flatten.pool import LabelledPool
    from ase_flatten.selection.flatten import SelectionConfig, run_selection
    from ase_flatten.selection.split import holdout_split

    data = read_dataset(path)
    test, pool_idx = holdout_split(len(data), 0.1, 0)
    X = pairwise_distances(data.positions)
    labels = (
        TwoStageClustering(random_state=seed)
        .fit(cluster_features(X, data.energies))
        .labels_
    )
    common = dict(backend="sgdml", params={"sigma": 10}, seed=seed, **SIZES)
    name = Path(path).name.split("_xtb")[0]
    out = args.output / name / f"seed{seed}"
    rows = list(kept)
    have = {r["set"] for r in kept}

    def score(kind, train_idx, backend, paid, seconds):
        from ase_flatten.error_analysis import model_errors

        errors = model_errors(backend, data, test, labels, progress=False)
        worst = int(np.nanargmax(errors.force_rmse))
        rows.append(
            {
                "data": path,
                "molecule": name,
                "seed": seed,
                "set": kind,
                "n_train": int(len(train_idx)),
                "labels": int(paid),
                "force_rmse": errors.overall["force_rmse"],
                "worst_cluster_rmse": float(errors.force_rmse[worst]),
                "worst_cluster_test_frames": int(errors.n_frames[worst]),
                "wall_s": round(seconds, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    def trained(train_idx):
        backend = make_backend("sgdml", random_state=seed, sigma=10)
        return backend.fit(data, train_idx, held_out=test)

    if "labelled" not in have:
        start = time.perf_counter()
        # the paper's loop: the whole labelled pool predicted every iteration
        labelled_config = SelectionConfig(**common, error_sample=None)
        result = run_selection(data, labelled_config, out / "labelled")
        flat = result.train_indices
        score("labelled", flat, trained(flat), len(flat), time.perf_counter() - start)
    n_flat = next(r["n_train"] for r in rows if r["set"] == "labelled")

    unlabelled = _unlabelled_copy(data)
    spec = (
        Oracle("ase_flatten.oracle:stored_labels", {"path": path})
        if args.oracle == "stored"
        else Oracle("tblite.ase:TBLite", {"method": "GFN2-xTB", "verbosity": 0})
    )
    for estimate in args.estimates:
        kind = _oracle_set(estimate)
        if kind in have:
            continue
        start = time.perf_counter()
        pool = LabelledPool(
            unlabelled,
            np.zeros(len(data), bool),
            oracle=spec,
            store=LabelStore(out / kind / "labels.jsonl"),
        )
        config = SelectionConfig(
            **common,
            n_energy=1,
            error_sample=args.error_sample,
            error_estimate=estimate,
        )
        result = run_selection(unlabelled, config, out / kind, labels=pool)
        paid = result.history[-1]["labels_paid"]
        paid_train = paid["in_store"] - len(test)  # the test split is counted apart
        chosen = result.train_indices
        seconds = time.perf_counter() - start
        score(kind, chosen, trained(chosen), paid_train, seconds)

    sizes = {("random_same_size", n_flat)}
    sizes |= {("random_same_labels", r["labels"]) for r in rows if r["set"] == "oracle"}
    sizes |= {
        (f"random_{r['labels']}", r["labels"])
        for r in rows
        if r["set"].startswith("oracle_")
    }
    for kind, n in sorted(sizes):
        if kind in {r["set"] for r in rows}:
            continue
        start = time.perf_counter()
        rng = np.random.default_rng([seed, 7, n])
        random_idx = np.sort(rng.choice(pool_idx, n, replace=False))
        backend = trained(random_idx)
        score(kind, random_idx, backend, n, time.perf_counter() - start)
    return rows


def _unlabelled_copy(data):
    """The dataset with NaN labels: the pool as an oracle run sees it."""
    from ase_flatten.data import Dataset

    copy = Dataset(
        data.numbers, data.positions, data.energies, data.forces, source=data.source
    )
    copy.energies = np.full_like(data.energies, np.nan)
    copy.forces = np.full_like(data.forces, np.nan)
    return copy


SET_NAMES = {
    "labelled": "labelled pool, the paper's loop",
    "oracle": "unlabelled pool, cluster estimate",
    "oracle_committee": "unlabelled pool, committee estimate",
    "random_same_size": "random, flattened size",
    "random_same_labels": "random, the cluster run's labels",
    "random_committee": "random, the committee run's labels",
}


def _set_name(row: dict) -> str:
    """``random_<n>`` rows are the random sets of the committee run's count."""
    kind = row["set"]
    return "random_committee" if kind.split("_")[-1].isdigit() else kind


def table(rows: list[dict]) -> str:
    """Mean ± sd over seeds per molecule and set, with the worst cluster against
    the labelled loop's and against random's at the same labels (paired by seed)."""
    lines = [
        "| molecule | set | labels (train) | worst cluster eV/Å | overall eV/Å "
        "| worst / labelled loop's | worst / random's, same labels | seeds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["molecule"], r["seed"], _set_name(r)): r for r in rows}
    partner = {"oracle": "random_same_labels", "oracle_committee": "random_committee"}
    for molecule in sorted({r["molecule"] for r in rows}):
        seeds = sorted({s for m, s, _ in by if m == molecule})
        for kind, name in SET_NAMES.items():
            group = [by[molecule, s, kind] for s in seeds if (molecule, s, kind) in by]
            if not group:
                continue
            lab = np.array([r["labels"] for r in group])
            worst = np.array([r["worst_cluster_rmse"] for r in group])
            overall = np.array([r["force_rmse"] for r in group])
            ratios = []
            for other in ("labelled", partner.get(kind)):
                pairs = [
                    (r["worst_cluster_rmse"], by[molecule, r["seed"], other])
                    for r in group
                    if (molecule, r["seed"], other) in by and kind != other
                ]
                ratio = [w / o["worst_cluster_rmse"] for w, o in pairs]
                ratios.append(
                    f"{np.mean(ratio):.2f} ± {np.std(ratio):.2f}" if ratio else ""
                )
            lines.append(
                f"| {molecule} | {name} | {lab.mean():.0f} ± {lab.std():.0f} | "
                f"{worst.mean():.4f} ± {worst.std():.4f} | "
                f"{overall.mean():.4f} ± {overall.std():.4f} | {ratios[0]} | "
                f"{ratios[1]} | {len(group)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
