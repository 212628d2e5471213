import numpy as np
import pytest

from ase_flatten.sample_data import make_md_dataset, xtb_calculator


def test_labels_are_the_methods_energy_and_forces(xtb_dataset):
    """Stored labels equal a fresh GFN2-xTB calculation (no thermostat/constraint).

    Up to the SCF convergence: in MD tblite starts from the previous step's charges.
    """
    for i in (0, 77, 149):
        atoms = xtb_dataset.to_atoms(i)
        atoms.calc = xtb_calculator("GFN2-xTB")
        assert atoms.get_potential_energy() == pytest.approx(
            xtb_dataset.energies[i], abs=1e-6
        )
        np.testing.assert_allclose(atoms.get_forces(), xtb_dataset.forces[i], atol=2e-4)
    # an isolated molecule feels no net force
    assert np.abs(xtb_dataset.forces.sum(axis=1)).max() < 1e-6


def test_md_is_seeded_and_samples_500_K(xtb_dataset):
    again = make_md_dataset(
        "CH3CH2OH", n_frames=150, equilibration_fs=250, seed=0, progress=False
    )
    assert again.fingerprint() == xtb_dataset.fingerprint()
    other = make_md_dataset(
        "CH3CH2OH", n_frames=5, equilibration_fs=50, seed=1, progress=False
    )
    assert not np.allclose(other.positions[-1], xtb_dataset.positions[4])
    # equipartition: mean potential energy above the minimum ~ (3N-6)/2 kT
    kT = 500 * 8.617e-5
    rise = xtb_dataset.energies.mean() - xtb_dataset.energies.min()
    assert 0.3 * 10.5 * kT < rise < 2.0 * 10.5 * kT
