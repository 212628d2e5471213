"""The Python API end to end: train, measure, compare, run as an ASE calculator.

What the command lines do, from a notebook or a script:

1. a small real dataset: ethanol, GFN2-xTB MD at 500 K (tblite, made on the spot);
2. :func:`~ase_flatten.training.train_model`: two sGDML models on the same number
   of frames, chosen at random and energy-stratified, with the same test split;
3. :func:`~ase_flatten.reports.error_report`: the random model's force errors
   per cluster (the paper's Fig. 2);
4. :func:`~ase_flatten.comparison.compare_models`: both on the test split, with
   bootstrap intervals and paired ratios;
5. :class:`~ase_flatten.calculator.FlattenedCalculator`: the model as an ASE
   calculator, with its error map (which cluster, the error measured there).

Run: ``python examples/python_api.py [OUTPUT]`` (about a minute; the sizes are
small, the numbers illustrate the API, not the method).
"""

import sys
from pathlib import Path

from ase_flatten import (
    FlattenedCalculator,
    compare_models,
    error_report,
    read_dataset,
    train_model,
)
from ase_flatten.clustering_options import ClusteringSettings
from ase_flatten.md_dataset import make_md_dataset


def main(output="examples/output/python_api", n_frames=300, size=60) -> dict:
    """Run the example in ``output``; returns what it printed, as numbers."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "ethanol_gfn2_500K.extxyz"
    if not data.exists():  # ethanol, GFN2-xTB Langevin MD at 500 K
        make_md_dataset("CH3CH2OH", n_frames=n_frames, seed=0).write(data)

    clustering = ClusteringSettings(n_geometry=4, n_energy=2)  # small data
    common = dict(
        backend="sgdml", size=size, params={"sigma": 20}, seed=0, clustering=clustering
    )
    random = train_model(data, out / "random", overwrite=True, **common)
    energy = train_model(
        data, out / "energy", strategy="energy", overwrite=True, **common
    )
    print(
        f"random: test force RMSE {random.overall_force_rmse:.4f} eV/Å "
        f"on {len(random.test_indices)} frames"
    )

    report = error_report(
        data, out / "errors", model=random.path, clustering=clustering, overwrite=True
    )
    summary = report.summary
    print(
        f"errors: worst cluster {summary['max_cluster']} at "
        f"{summary['max_ratio']:.2f}x the overall force RMSE; "
        f"{report.left_out['count']} training frames left out"
    )

    comparison = compare_models(
        [random.path, energy.path], out / "comparison", overwrite=True
    )
    for row in comparison.rows:  # ratios: paired bootstrap over the test frames
        low, high = row["force_rmse_ratio_low"], row["force_rmse_ratio_high"]
        verdict = "no difference detectable" if low <= 1 <= high else "differs"
        print(
            f"compare: {row['run']:7s} force RMSE {row['force_rmse']:.4f} eV/Å, "
            f"{row['force_rmse_ratio']:.2f}x the first run [95 % CI {low:.2f}, "
            f"{high:.2f}] on {row['test_frames']} test frames: {verdict}"
        )

    atoms = read_dataset(data).to_atoms(0)  # a frame, as ase.Atoms
    atoms.calc = FlattenedCalculator(random.path, domain=True)
    forces = atoms.get_forces()
    where = atoms.calc.results
    print(
        f"calculator: |F| max {abs(forces).max():.3f} eV/Å, cluster "
        f"{where['cluster']}, expected force error "
        f"{where['cluster_force_rmse']:.4f} eV/Å"
    )
    return {
        "test_force_rmse": random.overall_force_rmse,
        "max_ratio": summary["max_ratio"],
        "rows": comparison.rows,
        "forces": forces,
    }


if __name__ == "__main__":
    main(*sys.argv[1:2])
