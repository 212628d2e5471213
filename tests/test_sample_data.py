import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from ase_flatten.data import read_dataset
from ase_flatten.sample_data import make_md_dataset, xtb_calculator
from md_validation.failure import check_structure

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def test_example_script_runs_md_from_the_shipped_peptide(tmp_path):
    """examples/make_dataset.py takes a structure file: the 42-atom Ac-Ala3-NHMe."""
    peptide = read(EXAMPLES / "molecules" / "ace_ala3_nme.xyz")
    assert peptide.get_chemical_formula() == "C12H22N4O4"
    assert check_structure(peptide.numbers, peptide.positions) is None
    out = tmp_path / "peptide.extxyz"
    subprocess.run(
        [sys.executable, str(EXAMPLES / "make_dataset.py"),
         str(EXAMPLES / "molecules" / "ace_ala3_nme.xyz"),
         "-n", "3", "--stride", "2", "--equilibration", "2", "-o", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    frames = read_dataset(out)
    assert len(frames) == 3 and frames.positions.shape == (3, 42, 3)
    # frames are 2 steps (1 fs) apart: moved, but the molecule is intact
    assert 0 < np.abs(frames.positions[1] - frames.positions[0]).max() < 0.1
    assert check_structure(frames.numbers, frames.positions[2]) is None
    assert np.abs(frames.forces.sum(axis=1)).max() < 1e-6


@pytest.mark.parametrize(
    "molecule, message",
    [
        ("NotAMolecule", "not a molecule ase.build.molecule knows"),
        (None, "not a readable"),
    ],
)
def test_example_script_bad_molecule_is_one_line(tmp_path, molecule, message):
    if molecule is None:
        molecule = tmp_path / "broken.xyz"
        molecule.write_text("garbage\n")
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "make_dataset.py"),
            str(molecule),
            "-o",
            str(tmp_path / "o.xyz"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.xyz").exists()
