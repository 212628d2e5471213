"""FlattenedCalculator over each real backend: load a saved model, run ASE MD."""

import numpy as np
import pytest
from ase import units
from ase.md.verlet import VelocityVerlet

from ase_flatten import FlattenedCalculator
from ase_flatten.backends import make_backend
from ase_flatten.models import save_model

pytestmark = pytest.mark.slow  # MD with every trained backend

TRAIN = np.arange(0, 150, 6)  # 25 frames
TINY = {
    "sgdml": {"sigma": 20},
    "schnet": {"n_atom_basis": 16, "n_interactions": 2, "n_rbf": 10, "max_epochs": 5},
    "gap": {"n_max": 4, "l_max": 3, "n_sparse": 30, "two_body": False},
    "mace": {"num_channels": 8, "max_ell": 2, "correlation": 2, "max_epochs": 3},
}


@pytest.mark.parametrize("name", ["sgdml", "schnet", "gap", "mace"])
def test_saved_model_drives_ase_md(name, xtb_dataset, tmp_path):
    backend = make_backend(name, **TINY[name]).fit(xtb_dataset, TRAIN)
    path = save_model(tmp_path / name, backend, TRAIN, xtb_dataset)
    calc = FlattenedCalculator(path)
    assert calc.backend.name == name

    atoms = xtb_dataset.to_atoms(100)
    atoms.calc = calc
    results = atoms.get_properties(["energy", "forces"])
    energies, forces = backend.predict(xtb_dataset, [100])
    assert isinstance(results["energy"], float)
    assert results["energy"] == pytest.approx(energies[0], abs=1e-5)
    np.testing.assert_allclose(results["forces"], forces[0], atol=1e-5)

    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.normal(scale=0.05, size=(9, 3)))
    start = atoms.positions.copy()
    total = []
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.attach(lambda: total.append(atoms.get_total_energy()), interval=1)
    dyn.run(10)
    assert len(total) == 11 and np.isfinite(total).all()
    assert not np.allclose(atoms.positions, start)
    assert np.ptp(total) < 0.05  # eV over 5 fs of NVE: the forces drive the motion
