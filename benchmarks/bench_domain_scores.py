"""Applicability-domain scores compared: the descriptor distance against QUESTS dH.

For each molecule of the shared GFN2-xTB data (500 K, 20,000 frames, 2.5 fs apart)
and each seed, an sGDML model is trained on ``--size`` random frames of the first
3,000 frames (the demo's size). Both domains of :mod:`ase_flatten.domain`, with their
default settings, are fitted on the same reference frames: the 3,000 frames (what
``ase-flatten train`` saves with a model) and, second, the model's training frames
alone (neighbours of the same frame only skipped, ``exclude_frames = 0``). On the
same test frames each domain reports the share flagged outside and how well its
score ranks the frames of highest true force error:

- ``500 K test``: a later block of the same trajectory (from 2.5 ps after the
  first half, every 10th frame): independent MD at the data's temperature;
- ``xTB MD 300 K``: a fresh GFN2-xTB Langevin MD at 300 K from the data's first
  frame (400 frames, seed 7), as ``bench_domain.py`` runs it;
- ``model MD 300 K``: the sGDML model's own Langevin MD at 300 K from the data's
  first frame (0.5 fs steps, 500 fs equilibration, 400 frames 5 steps apart),
  labelled afterwards with GFN2-xTB (tblite);
- ``other conformer``: salicylic acid only, a 300 K GFN2-xTB MD of the conformer
  with the phenol O-H turned by 180 degrees (not in the data; 300 frames).

True error: each frame's force RMSE (eV/Å) of the model against the GFN2-xTB
forces. AUROC: ``sklearn.metrics.roc_auc_score`` of each score for the frames whose
error is in the top 10 % of the pooled test frames (all cases together) and of the
500 K test block alone, with a bootstrap 95 % interval over frames (1,000
resamples, seeded).

usage: OMP_NUM_THREADS=1 python benchmarks/bench_domain_scores.py
       [--molecules ethanol salicylic_acid] [--seeds 0 1 2] [--size 250]
       [--data-dir ../shared/data] [-o benchmarks/output/domain_scores]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
CALIBRATION = 3000  #: the first frames the model and the pool domain come from
TOP = 0.10  #: the top share of true errors AUROC ranks
KINDS = ("distance", "quests")


def model_md(backend, start, seed: int, n_frames: int = 400):
    """The model's own 300 K Langevin MD; positions (F, N, 3), stops at a blow-up."""
    from ase import units
    from ase.calculators.calculator import Calculator, all_changes
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.velocitydistribution import thermalize_momenta as thermalize

    class Model(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=None, changes=all_changes):
            super().calculate(atoms, properties, changes)
            e, f = backend.predict_positions(self.atoms.positions[None])
            self.results = {"energy": float(e[0]), "forces": f[0]}

    atoms = start.copy()
    atoms.calc = Model()
    rng = np.random.default_rng(seed)
    thermalize(atoms, 300, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(
        atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, rng=rng
    )
    dyn.run(1000)
    frames = []
    for _ in range(n_frames):
        dyn.run(5)
        d = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
        if d.min() < 0.5 or d.max() > 20:  # md_validation's failure rule
            break
        frames.append(atoms.positions.copy())
    return np.array(frames)


def xtb_forces(numbers, positions) -> np.ndarray:
    """GFN2-xTB forces (eV/Å) of each frame."""
    from ase import Atoms

    from ase_flatten.md_dataset import xtb_calculator

    calc = xtb_calculator()
    out = []
    for p in positions:
        atoms = Atoms(numbers, p)
        atoms.calc = calc
        out.append(atoms.get_forces())
    return np.array(out)


def frame_rmse(backend, positions, forces) -> np.ndarray:
    """Per-frame force RMSE (eV/Å) of the model against ``forces``."""
    size = backend.batch_size
    pred = np.concatenate(
        [
            backend.predict_positions(positions[i : i + size])[1]
            for i in range(0, len(positions), size)
        ]
    )
    return np.sqrt(((pred - forces) ** 2).mean(axis=(1, 2)))


def auroc(error, score, seed: int = 0, n_boot: int = 1000):
    """AUROC of ``score`` for the top :data:`TOP` of ``error``, with a bootstrap
    95 % interval over frames."""
    from sklearn.metrics import roc_auc_score

    positive = error >= np.quantile(error, 1 - TOP)
    value = float(roc_auc_score(positive, score))
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        i = rng.integers(0, len(error), len(error))
        if positive[i].any() and not positive[i].all():
            boot.append(roc_auc_score(positive[i], score[i]))
    low, high = np.percentile(boot, [2.5, 97.5])
    return value, float(low), float(high)


def auroc_difference(error, first, second, seed: int = 0, n_boot: int = 1000):
    """AUROC of ``second`` minus that of ``first`` on the same frames, with a
    paired bootstrap 95 % interval over frames."""
    from sklearn.metrics import roc_auc_score

    positive = error >= np.quantile(error, 1 - TOP)
    value = float(roc_auc_score(positive, second) - roc_auc_score(positive, first))
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        i = rng.integers(0, len(error), len(error))
        if positive[i].any() and not positive[i].all():
            boot.append(
                roc_auc_score(positive[i], second[i])
                - roc_auc_score(positive[i], first[i])
            )
    low, high = np.percentile(boot, [2.5, 97.5])
    return value, float(low), float(high)


def fit_domain(kind, numbers, positions, exclude_frames=None):
    from ase_flatten.domain import make_domain

    domain = make_domain(kind)
    if exclude_frames is not None:
        domain.settings.exclude_frames = exclude_frames
    start = time.perf_counter()
    domain.fit(numbers, positions)
    return domain, time.perf_counter() - start


def bench_molecule(name, data_dir, seeds, size) -> list[dict]:
    from ase import Atoms
    from bench_domain import rotated_phenol_conformer

    from ase_flatten.backends import backend_class
    from ase_flatten.data import read_dataset
    from ase_flatten.md_dataset import make_md_dataset

    data = read_dataset(Path(data_dir) / f"{name}_xtb500K.xyz.gz")
    n = len(data)
    start = Atoms(data.numbers, data.positions[0])
    t0 = time.perf_counter()
    cases = {"500 K test": data.subset(np.arange(n // 2 + 1000, n, 10))}
    xtb300 = make_md_dataset(
        start, n_frames=400, temperature_K=300, seed=7, progress=False
    )
    cases["xTB MD 300 K"] = xtb300
    if name == "salicylic_acid":
        cases["other conformer"] = make_md_dataset(
            rotated_phenol_conformer(start),
            n_frames=300,
            temperature_K=300,
            equilibration_fs=250,
            seed=3,
            progress=False,
        )
    print(f"{name}: reference MD in {time.perf_counter() - t0:.0f} s", flush=True)
    pool = data.positions[:CALIBRATION]
    pool_domains = {k: fit_domain(k, data.numbers, pool) for k in KINDS}
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        train = np.sort(rng.choice(CALIBRATION, size, replace=False))
        backend = backend_class("sgdml")(random_state=seed)
        backend.fit(data, train, held_out=np.arange(CALIBRATION, n))
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        md = model_md(backend, start, seed)
        md_forces = xtb_forces(data.numbers, md)
        md_s = time.perf_counter() - t0
        positions = {k: v.positions for k, v in cases.items()}
        forces = {k: v.forces for k, v in cases.items()}
        positions["model MD 300 K"], forces["model MD 300 K"] = md, md_forces
        errors = {k: frame_rmse(backend, positions[k], forces[k]) for k in positions}
        references = {
            "first 3,000": pool_domains,
            f"{size} training frames": {
                k: fit_domain(k, data.numbers, data.positions[train], 0) for k in KINDS
            },
        }
        order = list(positions)
        err_all = np.concatenate([errors[k] for k in order])
        for ref_name, domains in references.items():
            both = {}
            for kind, (domain, fit_seconds) in domains.items():
                t0 = time.perf_counter()
                scores = {k: domain.distance(p) for k, p in positions.items()}
                score_s = time.perf_counter() - t0
                score_all = np.concatenate([scores[k] for k in order])
                both[kind] = (score_all, scores["500 K test"])
                row = {
                    "molecule": name,
                    "seed": seed,
                    "reference": ref_name,
                    "domain": kind,
                    "threshold": domain.threshold_,
                    "units": domain.units,
                    "fit_s": round(fit_seconds, 2),
                    "score_ms_per_frame": round(score_s / len(score_all) * 1e3, 3),
                    "model_fit_s": round(fit_s, 1),
                    "model_md_s": round(md_s, 1),
                    "frames": {k: int(len(positions[k])) for k in order},
                    "flagged": {
                        k: float(np.mean(scores[k] > domain.threshold_)) for k in order
                    },
                    "force_rmse": {
                        k: float(np.sqrt(np.mean(errors[k] ** 2))) for k in order
                    },
                    "auroc_all": auroc(err_all, score_all, seed),
                    "auroc_500K": auroc(
                        errors["500 K test"], scores["500 K test"], seed
                    ),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            row = {
                "molecule": name,
                "seed": seed,
                "reference": ref_name,
                "domain": "quests - distance",
                "auroc_all": auroc_difference(
                    err_all, both["distance"][0], both["quests"][0], seed
                ),
                "auroc_500K": auroc_difference(
                    errors["500 K test"], both["distance"][1], both["quests"][1], seed
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def pct(values) -> str:
    values = np.asarray(values) * 100
    if values.max() - values.min() < 0.05:
        return f"{values.mean():.1f} %"
    return f"{values.mean():.1f} % ({values.min():.1f}-{values.max():.1f})"


def table(rows) -> list[str]:
    cases = ["500 K test", "xTB MD 300 K", "model MD 300 K", "other conformer"]
    lines = [
        "| molecule | reference | domain | threshold | "
        + " | ".join(f"{c} flagged" for c in cases)
        + " | AUROC, all cases | AUROC, 500 K test | fit | per frame |",
        "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in cases) + " | --- "
        "| --- | ---: | ---: |",
    ]
    groups, differences = {}, []
    for r in rows:
        if r["domain"] == "quests - distance":
            differences.append(r)
            continue
        groups.setdefault((r["molecule"], r["reference"], r["domain"]), []).append(r)
    for (mol, ref, kind), rs in groups.items():
        flagged = [
            pct([r["flagged"][c] for r in rs]) if c in rs[0]["flagged"] else "-"
            for c in cases
        ]

        def area(key, rs=rs):
            values = np.array([r[key][0] for r in rs])
            low = min(r[key][1] for r in rs)
            high = max(r[key][2] for r in rs)
            return (
                f"{values.mean():.2f} (seeds {values.min():.2f}-{values.max():.2f}; "
                f"{low:.2f}-{high:.2f})"
            )

        thresholds = np.array([r["threshold"] for r in rs])
        unit = "Å" if rs[0]["units"] == "Å" else "nats"
        lines.append(
            f"| {mol} | {ref} | {kind} | {thresholds.mean():.3g} {unit} | "
            + " | ".join(flagged)
            + f" | {area('auroc_all')} | {area('auroc_500K')} | "
            f"{np.mean([r['fit_s'] for r in rs]):.1f} s | "
            f"{np.mean([r['score_ms_per_frame'] for r in rs]):.2f} ms |"
        )
    if differences:
        lines += [
            "",
            "AUROC of QUESTS minus AUROC of the distance, on the same frames, per seed "
            "(paired bootstrap 95 % interval over frames):",
            "",
            "| molecule | reference | seed | all cases | 500 K test |",
            "| --- | --- | ---: | --- | --- |",
        ]
        for r in differences:
            cells = [
                f"{r[k][0]:+.3f} ({r[k][1]:+.3f} to {r[k][2]:+.3f})"
                for k in ("auroc_all", "auroc_500K")
            ]
            lines.append(
                f"| {r['molecule']} | {r['reference']} | {r['seed']} | "
                + " | ".join(cells)
                + " |"
            )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", nargs="+", default=["ethanol", "salicylic_acid"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=250)
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument(
        "-o", "--output", default=str(ROOT / "benchmarks/output/domain_scores")
    )
    args = parser.parse_args(argv)
    from ase_flatten.files import write_json, write_text

    out = Path(args.output)
    t0 = time.perf_counter()
    rows = []
    for name in args.molecules:
        rows += bench_molecule(name, args.data_dir, args.seeds, args.size)
        write_json(out / "rows.json", rows)
    header = [
        f"`{' '.join(['python', *sys.argv])}`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, {time.perf_counter() - t0:.0f} s",
        "",
        "Flagged: mean over seeds (range over seeds); AUROC: mean over seeds (range "
        "over seeds; lowest and highest end of the seeds' bootstrap 95 % intervals "
        "over frames). Fit and per-frame score times on a shared 2-core machine.",
        "",
    ]
    write_text(out / "domain_scores.md", "\n".join(header + table(rows)) + "\n")
    print(f"wrote {out / 'domain_scores.md'}")
    return 0


if __name__ == "__main__":
    from ase_flatten.exceptions import InputError

    try:
        sys.exit(main())
    except InputError as exc:  # one line, as the ase-flatten commands do
        sys.exit(f"error: {exc}")
