import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import CalculatorError, get_calculator_class
from ase.md.verlet import VelocityVerlet

from ase_flatten import FlattenedCalculator
from ase_flatten.backends import make_backend
from ase_flatten.clustering import cluster_dataset
from ase_flatten.descriptors import pairwise_distances
from ase_flatten.errors import cluster_errors
from ase_flatten.models import save_model

TRAIN = np.arange(0, 150, 5)


@pytest.fixture(scope="module")
def sgdml_dir(tmp_path_factory, xtb_dataset):
    backend = make_backend("sgdml", sigma=20).fit(xtb_dataset, TRAIN)
    return save_model(
        tmp_path_factory.mktemp("m") / "sgdml", backend, TRAIN, xtb_dataset
    )


@pytest.fixture(scope="module")
def domain_dir(tmp_path_factory, xtb_dataset, sgdml_dir):
    calc = FlattenedCalculator(sgdml_dir)
    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=2)
    energies, forces = calc.backend.predict(xtb_dataset)
    errors = cluster_errors(xtb_dataset, energies, forces, clusters.labels_)
    path = tmp_path_factory.mktemp("m") / "with_clusters"
    save_model(
        path, calc.backend, TRAIN, xtb_dataset, clusters=clusters, cluster_errors=errors
    )
    return path, clusters, errors


def test_energy_and_forces_like_the_backend(sgdml_dir, xtb_dataset):
    calc = FlattenedCalculator(str(sgdml_dir))
    atoms = xtb_dataset.to_atoms(7)
    atoms.calc = calc
    results = atoms.get_properties(["energy", "forces", "free_energy"])
    assert isinstance(results["energy"], float)
    assert results["forces"].shape == (9, 3)
    e, f = calc.backend.predict(xtb_dataset, [7])
    assert results["energy"] == pytest.approx(e[0], abs=1e-12)
    np.testing.assert_allclose(results["forces"], f[0], atol=1e-12)
    assert results["free_energy"] == results["energy"]
    assert set(calc.results) == {"energy", "free_energy", "forces"}  # no clusters


def test_forces_are_minus_the_energy_gradient(sgdml_dir, xtb_dataset):
    atoms = xtb_dataset.to_atoms(11)
    atoms.calc = FlattenedCalculator(sgdml_dir)
    forces = atoms.get_forces()
    h = 1e-4
    numeric = np.zeros_like(forces)
    for i in range(len(atoms)):
        for k in range(3):
            for sign in (1, -1):
                displaced = atoms.copy()
                displaced.calc = atoms.calc
                displaced.positions[i, k] += sign * h
                numeric[i, k] -= sign * displaced.get_potential_energy() / (2 * h)
    np.testing.assert_allclose(forces, numeric, atol=1e-5 * np.abs(forces).max() + 1e-6)


def test_runs_ase_md(sgdml_dir, xtb_dataset):
    atoms = xtb_dataset.to_atoms(0)
    atoms.calc = FlattenedCalculator(sgdml_dir)
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(scale=0.1, size=(9, 3)))
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(20)
    assert np.isfinite(atoms.positions).all()
    assert abs(atoms.get_total_energy() - e0) < 0.01  # eV, NVE over 10 fs


def test_registered_with_ase(sgdml_dir, xtb_dataset):
    import ase_flatten.plugin

    cls = get_calculator_class("flattened")
    assert cls is FlattenedCalculator
    atoms = xtb_dataset.to_atoms(3)
    atoms.calc = cls(sgdml_dir)
    assert np.isfinite(atoms.get_potential_energy())
    (plugin,) = ase_flatten.plugin.__ase_plugins__
    assert plugin.name == "flattened" and plugin.implementation is FlattenedCalculator


def test_plugin_listed_by_ase_entry_points():
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group="ase.plugins")}
    assert "ase_flatten.plugin" in names


def test_cluster_and_domain_extras(domain_dir, xtb_dataset):
    path, clusters, errors = domain_dir
    assert FlattenedCalculator(path).domain is False  # plain calls stay plain
    calc = FlattenedCalculator(path, domain=True)
    atoms = xtb_dataset.to_atoms(42)
    atoms.calc = calc
    atoms.get_forces()
    cluster = calc.results["cluster"]
    X = pairwise_distances(xtb_dataset.positions[[42]])
    expected = clusters.predict(X, [calc.results["energy"]])[0]
    assert cluster == expected
    assert calc.results["cluster_force_rmse"] == pytest.approx(
        errors.force_rmse[cluster]
    )
    assert calc.results["outside_domain"] is False
    assert calc.results["domain_distance"] < 1e-6  # a frame of the data itself
    stretched = atoms.copy()
    stretched.positions *= 1.4  # every bond 40% longer: no such frame in the data
    stretched.calc = calc
    stretched.get_potential_energy()
    assert calc.results["outside_domain"] is True
    assert calc.results["domain_distance"] > 1.0


def test_domain_requires_clusters(sgdml_dir):
    with pytest.raises(CalculatorError, match="needs a model saved with its cluster"):
        FlattenedCalculator(sgdml_dir, domain=True)


def test_wrong_molecule(sgdml_dir):
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.calc = FlattenedCalculator(sgdml_dir)
    with pytest.raises(CalculatorError, match="trained on another molecule"):
        atoms.get_potential_energy()


def test_domain_uses_the_clusters_descriptor(tmp_path, xtb_dataset, sgdml_dir):
    """Clusters built on inverse distances are looked up with inverse distances."""
    from ase_flatten.models import load_model

    backend = load_model(sgdml_dir).backend
    clusters = cluster_dataset(xtb_dataset, "inverse", n_geometry=3, n_energy=2)
    path = save_model(tmp_path / "inv", backend, TRAIN, xtb_dataset, clusters=clusters)
    calc = FlattenedCalculator(path, domain=True)
    assert calc.model.clusters.descriptor == "inverse"
    atoms = xtb_dataset.to_atoms(42)
    atoms.calc = calc
    atoms.get_potential_energy()
    X = pairwise_distances(xtb_dataset.positions[[42]], "inverse")
    assert calc.results["cluster"] == clusters.predict(X, [calc.results["energy"]])[0]
    assert calc.results["domain_distance"] < 1e-6
