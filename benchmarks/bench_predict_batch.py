"""Pool prediction of the torch backends: frames per second against the batch size.

``Backend.predict`` sends ``batch_size`` frames to the model per call (SchNet 256,
MACE 64 by default); batch size 1 is frame-by-frame prediction. For each backend
a small model is trained on ethanol for a few epochs (the speed does not depend
on how well it is trained), then the same frames are predicted at every batch
size. Per batch size: frames/s by wall and by CPU time (this process, one torch
thread) and the largest deviation of energies and forces from the default batch
size's.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_predict_batch.py \\
        /work/shared/data/ethanol_xtb500K.xyz.gz

Writes RESULTS/predict_batch.json and RESULTS/predict_batch.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: small models, the suite's settings with few epochs
MODELS = {
    "schnet": {"max_epochs": 3},
    "mace": {"max_ell": 2, "correlation": 2, "max_epochs": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--backends", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 256, 1024]
    )
    parser.add_argument("--frames", type=int, default=2048)
    parser.add_argument("--frames-one", type=int, default=256, help="at batch size 1")
    parser.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks/results/predict_batch"
    )
    args = parser.parse_args()
    import torch

    from ase_flatten.backends import make_backend
    from ase_flatten.data import read_dataset
    from ase_flatten.files import write_json, write_text

    torch.set_num_threads(1)
    data = read_dataset(args.data, index=f"0:{2000 + args.frames}")
    train, valid = np.arange(0, 200, 2), np.arange(1, 100, 2)
    frames = np.arange(2000, 2000 + args.frames)
    rows = []
    for name in args.backends:
        backend = make_backend(name, random_state=0, **MODELS[name])
        backend.fit(data, train, valid)
        default = type(backend).batch_size
        e_ref, f_ref = backend.predict(data, frames, progress=False)
        for size in args.batch_sizes:
            idx = frames[: args.frames_one] if size == 1 else frames
            load = os.getloadavg()[0]
            wall, cpu = time.perf_counter(), time.process_time()
            e, f = backend.predict(data, idx, batch_size=size, progress=False)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows.append(
                {
                    "backend": name,
                    "batch_size": size,
                    "default": size == default,
                    "frames": int(len(idx)),
                    "frames_per_s_wall": len(idx) / wall,
                    "frames_per_s_cpu": len(idx) / cpu,
                    "max_dev_energy_eV": float(np.abs(e - e_ref[: len(idx)]).max()),
                    "max_dev_force_eV_A": float(np.abs(f - f_ref[: len(idx)]).max()),
                    "load": round(load, 2),
                    "load_end": round(os.getloadavg()[0], 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "predict_batch.json", rows)
    write_text(args.results / "predict_batch.md", table(rows))
    print(table(rows))


def table(rows: list[dict]) -> str:
    lines = [
        "| backend | batch size | frames | frames/s (CPU) | frames/s (wall) "
        "| max deviation E (eV) | max deviation F (eV/Å) | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mark = " (default)" if r["default"] else ""
        lines.append(
            f"| {r['backend']} | {r['batch_size']}{mark} | {r['frames']} | "
            f"{r['frames_per_s_cpu']:,.0f} | {r['frames_per_s_wall']:,.0f} | "
            f"{r['max_dev_energy_eV']:.1e} | {r['max_dev_force_eV_A']:.1e} | "
            f"{r['load']:.1f}-{r['load_end']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
