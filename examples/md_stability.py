"""MD stability of a default (random) and a flattened sGDML model of ethanol.

Trains both models with the ``ase-flatten`` command line, then runs
``md-validate`` at 300 and 400 K (ASE engine, Langevin, 0.5 fs) from the data's
frame 0, and says where the results are::

    python examples/md_stability.py [DATA] [-o OUT] [--size 200] [--time-ps 5]

Small sGDML models of small molecules rarely fail (docs/measured_facts.md); the
summary's energy, drift and out-of-domain columns are where the two differ.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def sh(*argv) -> None:
    """Run a command, echoing it; stop on failure."""
    argv = [str(a) for a in argv]
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data",
        nargs="?",
        default=str(
            Path(__file__).resolve().parents[1].parent
            / "shared/data/ethanol_xtb500K.xyz.gz"
        ),
    )
    parser.add_argument("-o", "--output", default="examples/output/md_stability")
    parser.add_argument("--size", type=int, default=200, help="training frames")
    parser.add_argument("--index", default=":", help="frames of DATA to use")
    parser.add_argument("--time-ps", type=float, default=5.0)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()

    out = Path(args.output)
    default, flat = out / "default", out / "flattened"
    common = [args.data, "--index", args.index, "-p", "sigma=10"]
    if not (default / "model.json").exists():
        sh(BIN / "ase-flatten", "train", *common, "--backend", "sgdml",
           "--size", args.size, "-o", default)  # fmt: skip
    if not (flat / "model.json").exists():
        init = max(10, args.size // 2)
        per_iteration = max(1, (args.size - init) // args.iterations)
        sh(BIN / "ase-flatten", "select", *common, "--init", init,
           "--step", per_iteration, "--iterations", args.iterations,
           "-o", flat)  # fmt: skip
    sh(BIN / "md-validate", "--model", f"default={default}",
       "--model", f"flattened={flat}", "--temperatures", "300", "400",
       "--time-ps", args.time_ps, "--replicas", args.replicas, "--engine", "ase",
       "--start", args.data, "-o", out / "md", "--overwrite")  # fmt: skip
    print(f"results: {out / 'md' / 'summary.csv'}, {out / 'md' / 'energy_vs_time.png'}")


if __name__ == "__main__":
    main()
