"""The ase-flatten demo: the main job end to end, as far as it exists.

1. Make a small real dataset: 3,000 frames of ethanol from GFN2-xTB MD at 500 K
   (tblite, about 30 s, cached in examples/data/).
2. Stand in for a trained model with GFN1-xTB labels of the same frames: a real
   "model vs reference" pair whose errors differ between regions.
3. `ase-flatten cluster`: 10 geometry x 5 energy clusters.
4. `ase-flatten errors`: per-cluster force errors, the paper's Fig. 2, and the
   frames of the worst clusters.

Training default and flattened models and the MD stability comparison join this
demo as those commands land.
"""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from ase_flatten.sample_data import make_example_files

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
OUT = HERE / "output"
CLI = str(Path(sys.executable).parent / "ase-flatten")


def run(*argv) -> None:
    argv = [str(a) for a in argv]
    shown = " ".join(
        ["ase-flatten", *(os.path.relpath(a) if "/" in a else a for a in argv)]
    )
    print(f"\n$ {shown}", flush=True)
    subprocess.run([CLI, *argv], check=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    print("== 1-2. example data: ethanol, GFN2-xTB reference, GFN1-xTB 'model'")
    reference, predicted = make_example_files(DATA, n_frames=3000, seed=0)
    print(f"reference:   {os.path.relpath(reference)}")
    print(f"predictions: {os.path.relpath(predicted)}")

    print("\n== 3. cluster configurational space (Ward on geometry, KMeans on energy)")
    clusters = OUT / "clusters.npz"
    run("cluster", reference, "-o", clusters, "--overwrite", "-q")

    print("\n== 4. per-cluster force errors (outlier detection)")
    report = OUT / "errors"
    run(
        "errors",
        reference,
        "--predicted",
        predicted,
        "--clusters",
        clusters,
        "-o",
        report,
        "--write-worst",
        "3",
        "--align-energies",
        "--overwrite",
        "-q",
    )
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"report: {os.path.relpath(report / 'cluster_errors.csv')}")
    print(f"        {os.path.relpath(report / 'summary.json')}")
    print(f"plot:   {os.path.relpath(report / 'cluster_errors.png')}")
    print(f"worst:  {os.path.relpath(report / 'worst_clusters.extxyz')}")


if __name__ == "__main__":
    main()
