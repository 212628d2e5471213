"""What `FlattenedCalculator(DIR, domain=True)` adds to one call, against the model.

For each molecule of the shared GFN2-xTB data: the first 5,000 frames are the
model's data (clusters, domain: 5,000 reference frames), an sGDML model is trained
on ``--train`` of them (random, seed 0, sigma 10), and 300 frames from later in the
trajectory (frames 12,000-12,299: new structures, as in MD) are evaluated one call
at a time: the backend's own one-frame prediction (the model's call), a plain
FlattenedCalculator call, one with ``domain=True``, the extras alone
(``SavedModel.locate``: cluster, its error, domain distance) and the
domain distance alone. Median of 5 passes, ms per call.

Run it as the machine runs user code (BLAS with its default threads) and with
OMP_NUM_THREADS=1; PYTHONPATH selects the ase-flatten checkout to measure.

usage: python benchmarks/bench_domain_call.py [--molecules ethanol toluene]
       [--train 200] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"


def per_call(function, frames, passes: int = 5) -> float:
    """Median over ``passes`` of the mean ms of ``function(frame)``."""
    for frame in frames[:10]:
        function(frame)
    runs = []
    for _ in range(passes):
        start = time.perf_counter()
        for frame in frames:
            function(frame)
        runs.append((time.perf_counter() - start) / len(frames))
    return float(np.median(runs)) * 1e3


def bench(path: Path, n_train: int) -> dict:
    from ase import Atoms

    from ase_flatten import FlattenedCalculator
    from ase_flatten.backends import make_backend
    from ase_flatten.clustering import cluster_dataset
    from ase_flatten.data import read_dataset
    from ase_flatten.models import load_model, save_model

    data = read_dataset(path, index="0:5000")
    new = read_dataset(path, index="12000:12300")
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(len(data), n_train, replace=False))
    backend = make_backend("sgdml", sigma=10).fit(data, train)
    with tempfile.TemporaryDirectory() as tmp:
        directory = save_model(
            Path(tmp) / "m", backend, train, data, clusters=cluster_dataset(data)
        )
        saved = load_model(directory)
        plain = FlattenedCalculator(saved)
        extras = FlattenedCalculator(saved, domain=True)

        def call(calc):
            def run(positions):
                atoms = Atoms(numbers=data.numbers, positions=positions)
                atoms.calc = calc
                atoms.get_potential_energy()
                atoms.get_forces()

            return run

        energies = saved.backend.predict_positions(new.positions)[0]
        times = {
            "model": per_call(
                lambda p: saved.backend.predict_positions(p[None]), new.positions
            ),
            "plain": per_call(call(plain), new.positions),
            "domain": per_call(call(extras), new.positions),
            "distance": per_call(lambda p: saved.domain.distance(p), new.positions),
        }
        k = iter(range(len(new.positions) * 100))

        def report(positions):  # what domain=True adds: cluster, error, distance
            i = next(k) % len(energies)
            saved.locate(positions, [energies[i]])

        times["report"] = per_call(report, new.positions)
    return {"molecule": data.formula, "atoms": data.n_atoms, **times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", nargs="+", default=["ethanol", "toluene"])
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    args = parser.parse_args()
    import ase_flatten

    print(
        f"ase-flatten from {Path(ase_flatten.__file__).parent}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print("| molecule | model call | plain call | domain=True call | extras | "
          "extras / model | extras alone | distance alone |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.molecules:
        r = bench(Path(args.data_dir) / f"{name}_xtb500K.xyz.gz", args.train)
        added = r["domain"] - r["plain"]
        print(
            f"| {r['molecule']} ({r['atoms']} atoms) | {r['model']:.3f} ms | "
            f"{r['plain']:.3f} ms | {r['domain']:.3f} ms | {added:.3f} ms | "
            f"{added / r['model']:.0%} | {r['report']:.3f} ms | "
            f"{r['distance']:.3f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main()
