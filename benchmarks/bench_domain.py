"""Applicability domain: frames flagged with the old and the calibrated threshold.

For each molecule of the shared GFN2-xTB data (500 K, 20,000 frames, 2.5 fs apart)
and two calibration sets (the first 3,000 frames, the demo's size, and the first
half), the fraction of frames flagged outside the domain of

- a later block of the same trajectory (from 2.5 ps after the calibration set's
  end, every 5th frame): independent MD at the data's temperature;
- a fresh GFN2-xTB Langevin MD at 300 K from the data's first frame (400 frames,
  seed 7): independent MD below the data's temperature;
- with ``--conformer``, salicylic acid only: a 300 K MD of the conformer with the
  phenol O-H turned by 180 degrees (away from the carbonyl), not in the data;

with the old threshold (``TwoStageClustering.domain_threshold``: the 99.5th
percentile of leave-one-out nearest-neighbour distances of the Ward subset) and the
calibrated one (:class:`ase_flatten.domain.ApplicabilityDomain`, default settings),
plus the calibrated domain's fit time and cost per structure, and the threshold
against the exclusion window.

usage: python benchmarks/bench_domain.py [--molecules ethanol uracil toluene]
       [--conformer] [--data-dir ../shared/data] [-o benchmarks/output/domain.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"


def old_flagged(clusters, test) -> tuple[float, float]:
    """The old threshold and the fraction of ``test`` beyond it."""
    from ase_flatten.clustering import cluster_features

    threshold = clusters.domain_threshold()
    X = cluster_features(clusters.describe(test.positions), test.energies)
    _, distance = clusters.predict(X, return_distance=True)
    return threshold, float(np.mean(distance > threshold))


def cost_per_call(domain, positions) -> float:
    """Mean ms of one ``distance`` call on one structure."""
    for frame in positions[:10]:
        domain.distance(frame)
    start = time.perf_counter()
    for frame in positions:
        domain.distance(frame)
    return (time.perf_counter() - start) / len(positions) * 1e3


def rotated_phenol_conformer(atoms):
    """Salicylic acid with the phenol O-H turned by 180 degrees."""
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    nl.update(atoms)
    symbols = atoms.get_chemical_symbols()

    def neighbours(i, symbol):
        return [j for j in nl.get_neighbors(i)[0] if symbols[j] == symbol]

    acid_c = next(
        i for i, s in enumerate(symbols) if s == "C" and len(neighbours(i, "O")) == 2
    )
    phenol_o = next(
        i
        for i, s in enumerate(symbols)
        if s == "O" and acid_c not in neighbours(i, "C")
    )
    ring_c = neighbours(phenol_o, "C")[0]
    hydrogen = neighbours(phenol_o, "H")[0]
    other = neighbours(ring_c, "C")[0]
    turned = atoms.copy()
    angle = atoms.get_dihedral(other, ring_c, phenol_o, hydrogen) + 180
    turned.set_dihedral(other, ring_c, phenol_o, hydrogen, angle, indices=[hydrogen])
    return turned


def bench_molecule(name, data_dir, conformer) -> list[str]:
    from ase import Atoms

    from ase_flatten.clustering import cluster_dataset
    from ase_flatten.data import read_dataset
    from ase_flatten.domain import ApplicabilityDomain, DomainSettings
    from ase_flatten.md_dataset import make_md_dataset

    data = read_dataset(Path(data_dir) / f"{name}_xtb500K.xyz.gz")
    n = len(data)
    start = Atoms(data.numbers, data.positions[0])
    tests = {
        "later block, 500 K": data.subset(np.arange(n // 2 + 1000, n, 5)),
        "xTB MD, 300 K": make_md_dataset(
            start, n_frames=400, temperature_K=300, seed=7, progress=False
        ),
    }
    if conformer:
        tests["other conformer, 300 K"] = make_md_dataset(
            rotated_phenol_conformer(start),
            n_frames=300,
            temperature_K=300,
            equilibration_fs=250,
            seed=3,
            progress=False,
        )
    rows = []
    for label, size in (("first 3,000", 3000), ("first half", n // 2)):
        calibration = data.subset(np.arange(size))
        clusters = cluster_dataset(calibration)
        t0 = time.perf_counter()
        domain = ApplicabilityDomain().fit(data.numbers, calibration.positions)
        fit = time.perf_counter() - t0
        windows = []
        for k in (0, 1, 4, 10, 40):
            other = ApplicabilityDomain(DomainSettings(exclude_frames=k))
            windows.append(
                f"{other.fit(data.numbers, calibration.positions).threshold_:.3f}"
            )
        for test_name, test in tests.items():
            threshold, old = old_flagged(clusters, test)
            new = float(np.mean(domain.outside(test.positions)))
            cost = cost_per_call(domain, test.positions[:200])
            rows.append(
                f"| {name} | {label} | {test_name} ({len(test)}) | {threshold:.3f} | "
                f"{old:.1%} | {domain.threshold_:.3f} | {new:.1%} | "
                f"{len(domain.permutations_)} | {fit:.1f} s | {cost:.2f} ms | "
                f"{' / '.join(windows)} |"
            )
            print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--molecules", nargs="+", default=["ethanol", "uracil", "toluene"]
    )
    parser.add_argument("--conformer", action="store_true", help="salicylic acid")
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument(
        "-o", "--output", default=str(ROOT / "benchmarks/output/domain.md")
    )
    args = parser.parse_args(argv)
    from ase_flatten.files import write_text

    header = [
        f"`{' '.join(['python', *sys.argv])}`, {time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}",
        "",
        "| molecule | calibrated on | test MD (frames) | old threshold (Å) | old "
        "flagged | new threshold (Å) | new flagged | permutations | fit | per call "
        "| threshold at K = 0 / 1 / 4 / 10 / 40 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    molecules = list(args.molecules)
    if args.conformer and "salicylic_acid" not in molecules:
        molecules.append("salicylic_acid")
    rows = []
    for name in molecules:
        rows += bench_molecule(
            name, args.data_dir, args.conformer and name == "salicylic_acid"
        )
    write_text(args.output, "\n".join(header + rows) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    from ase_flatten.exceptions import InputError

    try:
        sys.exit(main())
    except InputError as exc:  # one line, as the ase-flatten commands do
        sys.exit(f"error: {exc}")
