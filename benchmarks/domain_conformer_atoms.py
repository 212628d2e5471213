"""Why QUESTS dH misses part of salicylic acid's turned-phenol conformer.

Fits the QUESTS domain (1,000 reference frames, 300 calibration frames) on the first
3,000 frames of the shared 500 K data, runs a 60-frame 300 K GFN2-xTB MD of the
conformer with the phenol O-H turned by 180 degrees (``bench_domain.py``'s), and
prints the share flagged, each atom's median dH, which atom is the most novel, and
for every 12th frame the nearest reference environment of its most novel atom.

usage: OMP_NUM_THREADS=1 python benchmarks/domain_conformer_atoms.py
       [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    from ase import Atoms
    from bench_domain import rotated_phenol_conformer

    from ase_flatten import quests
    from ase_flatten.data import read_dataset
    from ase_flatten.domain import QuestsDomain, QuestsDomainSettings
    from ase_flatten.md_dataset import make_md_dataset

    data = read_dataset(Path(args.data_dir) / "salicylic_acid_xtb500K.xyz.gz")
    start = Atoms(data.numbers, data.positions[0])
    symbols = start.get_chemical_symbols()
    conformer = make_md_dataset(
        rotated_phenol_conformer(start),
        n_frames=60,
        temperature_K=300,
        equilibration_fs=250,
        seed=3,
        progress=False,
    )
    settings = QuestsDomainSettings(max_reference=1000, max_calibration=300)
    domain = QuestsDomain(settings).fit(data.numbers, data.positions[:3000])
    S = domain.atom_scores(conformer.positions)  # (60, 16)
    print(
        f"threshold {domain.threshold_:.2f} nats, bandwidth {domain.bandwidth_:.3f} "
        f"1/Å, flagged {np.mean(S.max(axis=1) > domain.threshold_):.1%}"
    )
    median = np.median(S, axis=0)
    print("median dH per atom:", [f"{s}{i} {m:.2f}" for i, (s, m) in enumerate(
        zip(symbols, median, strict=True))])  # fmt: skip
    top = np.bincount(S.argmax(axis=1), minlength=len(symbols)) / len(S)
    print("share of frames each atom is the most novel:", np.round(top, 2))
    X = quests.frame_descriptors(data.numbers, conformer.positions)
    owner = np.tile(np.arange(len(symbols)), len(domain.reference_indices_))
    for f in range(0, len(S), 12):
        a = int(S[f].argmax())
        d = np.linalg.norm(domain.reference_descriptors_ - X[f, a], axis=1)
        j = int(d.argmin())
        print(
            f"frame {f}: atom {a} ({symbols[a]}) dH {S[f, a]:.2f}, nearest reference "
            f"environment: atom {owner[j]} ({symbols[owner[j]]}) at {d[j]:.3f} 1/Å"
        )


if __name__ == "__main__":
    main()
