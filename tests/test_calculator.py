import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import (
    CalculationFailed,
    CalculatorError,
    CalculatorSetupError,
    PropertyNotImplementedError,
    get_calculator_class,
)
from ase.calculators.calculator import InputError as AseInputError
from ase.md.verlet import VelocityVerlet

from ase_flatten import FlattenedCalculator
from ase_flatten.atom_order import (
    AtomOrderCheck,
    hydrogen_partners,
    reference_partners,
)
from ase_flatten.backends import make_backend
from ase_flatten.calculator import DOMAIN_PROPERTIES
from ase_flatten.clustering import cluster_dataset, cluster_features
from ase_flatten.descriptors import pairwise_distances
from ase_flatten.error_analysis import cluster_errors
from ase_flatten.models import Location, load_model, model_content_hash, save_model

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cluster_and_domain_extras(domain_dir, xtb_dataset):
    path, clusters, errors = domain_dir
    assert FlattenedCalculator(path).domain is False  # plain calls stay plain
    calc = FlattenedCalculator(path, domain=True)
    atoms = xtb_dataset.to_atoms(42)
    atoms.calc = calc
    atoms.get_forces()
    cluster = calc.results["cluster"]
    X = pairwise_distances(xtb_dataset.positions[[42]])
    expected = clusters.predict(cluster_features(X, [calc.results["energy"]]))[0]
    assert cluster == expected
    assert calc.results["cluster_force_rmse"] == pytest.approx(
        errors.force_rmse[cluster]
    )
    assert calc.results["outside_domain"] is False
    assert calc.results["domain_distance"] < 1e-6  # a frame of the data itself
    # the model's own locate, for one structure: the same numbers
    assert DOMAIN_PROPERTIES == Location.REPORTED
    where = load_model(path).locate(atoms.positions, [calc.results["energy"]])
    assert {key: calc.results[key] for key in DOMAIN_PROPERTIES} == where.row(0)
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


@pytest.mark.slow
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
    assert (
        calc.results["cluster"]
        == clusters.predict(cluster_features(X, [calc.results["energy"]]))[0]
    )
    assert calc.results["domain_distance"] < 1e-6


# -- parameters, ASE's way ------------------------------------------------------
def test_parameters_record_the_model_and_unknown_ones_raise(sgdml_dir, xtb_dataset):
    calc = FlattenedCalculator(sgdml_dir)
    digest = model_content_hash(sgdml_dir)
    assert calc.parameters == {
        "model": str(sgdml_dir.resolve()),
        "domain": False,
        "model_sha256": digest,
    }
    assert calc.todict() == {"model": str(sgdml_dir.resolve()), "model_sha256": digest}
    same = FlattenedCalculator(**calc.todict())
    atoms = xtb_dataset.to_atoms(5)
    assert same.get_potential_energy(atoms) == calc.get_potential_energy(atoms)
    with pytest.raises(AseInputError, match="has no parameter 'domian'"):
        FlattenedCalculator(sgdml_dir, domian=True)
    with pytest.raises(AseInputError, match="has no parameter 'sigma'"):
        calc.set(sigma=3)
    with pytest.raises(CalculatorSetupError, match="needs a model saved with its"):
        calc.set(domain=True)
    assert calc.parameters["domain"] is False  # unchanged by the refused set


def test_ase_db_records_which_model(tmp_path, domain_dir, xtb_dataset):
    import ase.db

    path, _, _ = domain_dir
    atoms = xtb_dataset.to_atoms(9)
    atoms.calc = FlattenedCalculator(path, domain=True)
    atoms.get_potential_energy()
    with ase.db.connect(tmp_path / "results.db") as db:
        db.write(atoms, key_value_pairs=atoms.info)
    row = ase.db.connect(tmp_path / "results.db").get(1)
    assert row.calculator == "flattened"  # the name ASE's plugin registry knows
    assert get_calculator_class(row.calculator) is FlattenedCalculator
    assert row.calculator_parameters == {
        "model": str(path.resolve()),
        "domain": True,
        "model_sha256": model_content_hash(path),
    }
    again = get_calculator_class(row.calculator)(**row.calculator_parameters)
    assert again.get_potential_energy(xtb_dataset.to_atoms(9)) == pytest.approx(
        row.energy
    )
    assert row.cluster == atoms.calc.results["cluster"]
    assert row.outside_domain is False


def test_domain_extras_are_properties_and_survive_extxyz(
    tmp_path, domain_dir, xtb_dataset
):
    import ase.io

    path, _, _ = domain_dir
    plain = FlattenedCalculator(path)
    assert "outside_domain" not in plain.implemented_properties
    assert "outside_domain" not in FlattenedCalculator.implemented_properties
    calc = FlattenedCalculator(path, domain=True)
    assert set(DOMAIN_PROPERTIES) <= set(calc.implemented_properties)
    assert "outside_domain" not in FlattenedCalculator.implemented_properties
    atoms = xtb_dataset.to_atoms(42)
    assert calc.get_property("outside_domain", atoms) is False
    assert calc.get_property("cluster", atoms) == atoms.info["cluster"]
    assert {k: atoms.info[k] for k in DOMAIN_PROPERTIES} == {
        k: calc.results[k] for k in DOMAIN_PROPERTIES
    }
    atoms.calc = calc
    ase.io.write(tmp_path / "out.extxyz", atoms)
    back = ase.io.read(tmp_path / "out.extxyz")
    for key in DOMAIN_PROPERTIES:
        assert back.info[key] == pytest.approx(calc.results[key], rel=1e-12), key
    assert back.get_potential_energy() == pytest.approx(calc.results["energy"])
    with pytest.raises(PropertyNotImplementedError):
        plain.get_property("outside_domain", atoms)


# -- structures the model cannot describe ----------------------------------------
def test_periodic_cell_is_refused(sgdml_dir, xtb_dataset):
    calc = FlattenedCalculator(sgdml_dir)
    atoms = xtb_dataset.to_atoms(3)
    atoms.cell = [6.0, 6.0, 6.0]
    reference = calc.get_potential_energy(atoms)  # a cell without pbc is fine
    atoms.pbc = True
    with pytest.raises(CalculatorSetupError, match="periodic boundary conditions"):
        calc.get_potential_energy(atoms)
    atoms.positions[4] += atoms.cell[0]  # one H moved by a lattice vector
    atoms.pbc = False
    with pytest.raises(CalculatorSetupError, match="hydrogen 4 sits next to"):
        calc.get_potential_energy(atoms)  # not a 60 eV shift
    atoms.positions[4] -= atoms.cell[0]
    # x + 6 - 6 is x to 1 ulp: the same energy up to rounding
    assert calc.get_potential_energy(atoms) == pytest.approx(reference, abs=1e-8)


def hydroxyl_swapped(xtb_dataset, frame):
    """Ethanol with the hydroxyl H and a methyl H exchanged in the atom list."""
    numbers = xtb_dataset.numbers
    partners = hydrogen_partners(numbers, xtb_dataset.positions[[frame]])[0]
    hydrogens = np.flatnonzero(numbers == 1)
    hydroxyl = hydrogens[numbers[partners] == 8][0]
    methyl = hydrogens[numbers[partners] == 6][0]
    atoms = xtb_dataset.to_atoms(frame)
    order = np.arange(len(atoms))
    order[[hydroxyl, methyl]] = order[[methyl, hydroxyl]]
    return atoms[order], hydroxyl, methyl


def test_another_atom_order_is_refused(sgdml_dir, xtb_dataset):
    calc = FlattenedCalculator(sgdml_dir)
    swapped, hydroxyl, methyl = hydroxyl_swapped(xtb_dataset, 20)
    raw, _ = calc.backend.predict_positions(swapped.positions[None])
    assert abs(raw[0] - calc.get_potential_energy(xtb_dataset.to_atoms(20))) > 1.0
    with pytest.raises(CalculatorSetupError) as info:
        calc.get_potential_energy(swapped)
    message = str(info.value)
    assert hydroxyl < methyl  # the first hydrogen named is the hydroxyl one
    assert f"hydrogen {hydroxyl} sits next to C" in message
    assert "in the model's data only next to O2" in message
    assert "another order" in message and "\n" not in message
    # every frame of the data itself passes
    for i in range(0, len(xtb_dataset), 10):
        assert np.isfinite(calc.get_potential_energy(xtb_dataset.to_atoms(i)))


def test_proton_transfer_seen_in_the_data_is_allowed():
    numbers = np.array([8, 1, 8])
    positions = np.array(
        [
            [[0.0, 0, 0], [1.0, 0, 0], [2.5, 0, 0]],
            [[0.0, 0, 0], [1.6, 0, 0], [2.5, 0, 0]],
        ]
    )
    reference = reference_partners(numbers, positions)
    assert reference == {"1": [0, 2]}
    assert AtomOrderCheck(numbers, reference).problem(positions[1]) is None
    only_first = AtomOrderCheck(numbers, reference_partners(numbers, positions[:1]))
    assert "hydrogen 1 sits next to O2" in only_first.problem(positions[1])


@pytest.mark.parametrize("fault", ["nan", "overlap"])
def test_nan_or_overlapping_atoms_raise(sgdml_dir, xtb_dataset, fault):
    atoms = xtb_dataset.to_atoms(8)
    atoms.calc = FlattenedCalculator(sgdml_dir)
    if fault == "nan":
        atoms.positions[2, 1] = np.nan
        match = "atom 2 has a non-finite position"
    else:
        atoms.positions[5] = atoms.positions[0]
        match = r"atoms 0 and 5 are 0.000 Å apart \(< 0.3 Å\)"
    with pytest.raises(CalculationFailed, match=match):
        atoms.get_potential_energy()


def test_model_without_reference_partners_warns_once(tmp_path, sgdml_dir, caplog):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(sgdml_dir, old)
    meta = json.loads((old / "model.json").read_text())
    assert set(meta.pop("hydrogen_partners")) == {"3", "4", "5", "6", "7", "8"}
    (old / "model.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="ase_flatten.calculator"):
        calc = FlattenedCalculator(old)
    (record,) = caplog.records
    assert "the atom order is not checked" in record.getMessage()
    assert calc._order is None
