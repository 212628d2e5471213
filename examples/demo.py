"""The ase-flatten demo: the main job end to end, as far as it exists.

1. Make a small real dataset: 3,000 frames of ethanol from GFN2-xTB MD at 500 K
   (tblite, about 30 s, cached in examples/data/).
2. `ase-flatten cluster`: 10 geometry x 5 energy clusters (the paper's).
3. `ase-flatten train`: the paper's "default model", sGDML on 300 random frames;
   10 % of the frames are held out as the test split.
4. `ase-flatten errors --model`: its force errors per cluster (outlier detection,
   the paper's Fig. 2) and the frames of the worst clusters.
5. `ase-flatten select`: a flattened training set of the same size (100 random
   frames + 4 iterations x 50 frames from the worst fine clusters).
6. `ase-flatten compare`: default vs flattened on the test split (Table I, Fig. 5).
7. `ase-flatten explore`: MD with the default model at 500 K and 700 K (beyond
   the data's 500 K MD), the frames where it fails or leaves its data labelled by
   GFN2-xTB (the oracle) and added, the model retrained (2 rounds, at most 20
   labels).
8. `md-validate`: NVT MD with the three models at 300 K and 400 K, 0.5 fs steps, 1 ps,
   4 replicas each in parallel (the paper's Fig. 8), through ASE, and the same with
   GFN2-xTB itself (the reference method, 2 replicas); the verdict: failures with
   a log-rank test, and each model's distance to the reference's MD.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ase_flatten.md_dataset import make_example_files

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
OUT = HERE / "output"


def run(*argv, tool: str = "ase-flatten") -> None:
    """Show a command as a user would type it, then run it."""
    argv = [str(a) for a in argv]
    shown = [os.path.relpath(a) if "/" in a else a for a in argv]
    print("\n$ " + " ".join([tool, *shown]), flush=True)
    subprocess.run([str(Path(sys.executable).parent / tool), *argv], check=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    print("== 1. example data: ethanol, GFN2-xTB MD at 500 K")
    reference, _ = make_example_files(DATA, n_frames=3000, seed=0)
    print(f"dataset: {os.path.relpath(reference)}")

    print("\n== 2. cluster configurational space (Ward on geometry, KMeans on energy)")
    clusters = OUT / "clusters.npz"
    run("cluster", reference, "-o", clusters, "--overwrite", "-q")

    print("\n== 3. train the default model: sGDML on 300 random frames")
    sgdml = ["--backend", "sgdml", "-p", "sigma=20", "--seed", "0"]
    model = OUT / "default_sgdml"
    run("train", reference, *sgdml, "--size", "300", "-o", model, "--overwrite")

    print("\n== 4. its force errors per cluster (outlier detection)")
    report = OUT / "errors"
    run("errors", reference, "--model", model, "--clusters", clusters, "-o", report,
        "--write-worst", "3", "--overwrite", "-q")  # fmt: skip

    print("\n== 5. flattened training set of the same size")
    flat = OUT / "flattened_sgdml"
    if flat.exists():
        shutil.rmtree(flat)
    run("select", reference, *sgdml, "--init", "100", "--step", "50",
        "--iterations", "4", "--n-fine", "100", "-o", flat, "-q")  # fmt: skip

    print("\n== 6. default vs flattened on the test split")
    comparison = OUT / "comparison"
    run("compare", model, flat, "-o", comparison, "--overwrite", "-q")

    print("\n== 7. explore beyond the data: MD at 500-700 K, GFN2-xTB labels")
    explored = OUT / "explored_sgdml"
    xtb = json.dumps({"method": "GFN2-xTB", "verbosity": 0})
    run("explore", model, "--oracle", "tblite.ase:TBLite", "--oracle-kwargs", xtb,
        "--temperatures", "500", "700", "--replicas", "2", "--time-ps", "0.5",
        "--per-round", "10", "--label-budget", "20", "--max-rounds", "2",
        "--jobs", "2", "-o", explored, "--overwrite", "-q")  # fmt: skip

    print("\n== 8. MD stability at 300 K and 400 K (NVT, 0.5 fs, 1 ps, 4 replicas)")
    md = OUT / "md"
    run("--model", f"default={model}", "--model", f"flattened={flat}",
        "--model", f"explored={explored}",
        "--start", reference, "--time-ps", "1", "--replicas", "4",
        "--reference", "tblite.ase:TBLite", "--reference-kwargs", xtb,
        "--reference-replicas", "2", "-o", md, "--overwrite", "--no-progress", "-q",
        tool="md-validate")  # fmt: skip

    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"model:  {os.path.relpath(model)}  (FlattenedCalculator loads it)")
    print(f"report: {os.path.relpath(report / 'cluster_errors.csv')}")
    print(f"        {os.path.relpath(report / 'summary.json')}")
    print(f"plot:   {os.path.relpath(report / 'cluster_errors.png')}")
    print(f"worst:  {os.path.relpath(report / 'worst_clusters.extxyz')}")
    print(f"flattened run: {os.path.relpath(flat)} (history.json, error_curves.png)")
    print(f"explored:   {os.path.relpath(explored)} (history.json, explored.extxyz)")
    print(f"comparison: {os.path.relpath(comparison / 'comparison.csv')}")
    print(f"            {os.path.relpath(comparison / 'cluster_comparison.png')}")
    print(f"MD:         {os.path.relpath(md / 'summary.csv')}")
    print(f"            {os.path.relpath(md / 'energy_vs_time.png')}")
    print(f"            {os.path.relpath(md / 'survival.png')}")
    print(f"            {os.path.relpath(md / 'reference.png')}")
    print_md_verdict(md / "comparison.json")


def print_md_verdict(path: Path) -> None:
    """The MD verdict: failures and log-rank p per temperature, distance to xTB."""
    print("\nMD verdict (log-rank test at 0.05; JS divergence of the interatomic")
    print("distance distributions against GFN2-xTB's own MD, in bits):")
    for temperature, entry in json.loads(path.read_text())["temperatures"].items():
        for pair in entry["pairs"]:
            print(pair["verdict"])
        reference = entry["reference"]
        distances = ", ".join(
            f"{name} {bits(model['js_divergence'])}"
            for name, model in reference["models"].items()
        )
        itself = bits(reference["reference"]["self_js_divergence"])
        print(
            f"{temperature} K: JS divergence to GFN2-xTB MD: {distances} "
            f"(GFN2-xTB vs itself {itself})"
        )


def bits(value) -> str:
    """A divergence for printing; None (no stable frames) as n/a."""
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
