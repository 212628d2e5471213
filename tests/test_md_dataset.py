import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

import ase_flatten.md_dataset as md_dataset
from ase_flatten.data import read_dataset
from ase_flatten.exceptions import InputError
from ase_flatten.md_dataset import (
    MDProtocol,
    make_md_dataset,
    write_md_dataset,
    xtb_calculator,
)
from md_validation.failure import check_structure

pytestmark = pytest.mark.slow  # GFN2-xTB MD (tblite)

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


TINY = MDProtocol(stride=2, equilibration_fs=5)  # ethanol, 6 frames: under 1 s


def _interrupt_after_first_chunk(monkeypatch):
    """Make write_md_dataset stop like Ctrl-C right after its first checkpoint."""
    save = md_dataset._save_checkpoint

    def save_and_stop(*args):
        save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(md_dataset, "_save_checkpoint", save_and_stop)


@pytest.fixture()
def reference_file(tmp_path):
    """The 6 tiny frames of make_md_dataset, written in one go."""
    path = tmp_path / "reference.extxyz"
    make_md_dataset("CH3CH2OH", 6, stride=2, equilibration_fs=5, progress=False).write(
        path
    )
    return path


def test_write_md_dataset_resumes_to_the_same_frames(
    tmp_path, monkeypatch, caplog, reference_file
):
    """Chunked, and interrupted then resumed: byte for byte make_md_dataset's frames.

    The resumed part starts its SCFs from the checkpointed wavefunction: without
    it the forces differ after the first resumed step (checked by hand).
    """
    whole = tmp_path / "whole.extxyz"
    with caplog.at_level(logging.INFO, logger="ase_flatten.md_dataset"):
        write_md_dataset(whole, "CH3CH2OH", 6, TINY, chunk_size=3, progress=False)
    assert whole.read_bytes() == reference_file.read_bytes()
    assert "3/6 frames" in caplog.text and "frames/min" in caplog.text
    assert not whole.with_name("whole.extxyz.partial").exists()

    out = tmp_path / "resumed.extxyz"
    work = tmp_path / "resumed.extxyz.partial"
    with monkeypatch.context() as patch:
        _interrupt_after_first_chunk(patch)
        with pytest.raises(KeyboardInterrupt):
            write_md_dataset(out, "CH3CH2OH", 6, TINY, chunk_size=3, progress=False)
    assert not out.exists()
    checkpoint = json.loads((work / "checkpoint.json").read_text())
    assert checkpoint["frames_done"] == 3 and checkpoint["chunks"] == [
        "chunk_00000.extxyz"
    ]
    assert len(read_dataset(work / "chunk_00000.extxyz")) == 3
    with pytest.raises(InputError, match="pass --resume to continue it"):
        write_md_dataset(out, "CH3CH2OH", 6, TINY, chunk_size=3, progress=False)
    with pytest.raises(InputError, match=r"other settings \(seed\)"):
        write_md_dataset(
            out, "CH3CH2OH", 6, MDProtocol(stride=2, equilibration_fs=5, seed=1),
            resume=True, progress=False,
        )  # fmt: skip
    write_md_dataset(out, "CH3CH2OH", 6, TINY, chunk_size=3, resume=True)
    assert out.read_bytes() == reference_file.read_bytes()
    assert not work.exists()
    frames = read_dataset(out)
    assert len(frames) == 6
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        write_md_dataset(out, "CH3CH2OH", 6, TINY, progress=False)


#: A fresh process that starts the tiny run and stops like Ctrl-C after its first
#: chunk. Interrupted run, resumed run and reference all run in fresh processes, as
#: they do for users: a test process that has loaded other libraries may compute
#: the last digit differently.
_INTERRUPTED = """
import sys
from ase_flatten import md_dataset

save = md_dataset._save_checkpoint
def save_and_stop(*args):
    save(*args)
    raise KeyboardInterrupt
md_dataset._save_checkpoint = save_and_stop
protocol = md_dataset.MDProtocol(stride=2, equilibration_fs=5)
try:
    md_dataset.write_md_dataset(sys.argv[1], "CH3CH2OH", 6, protocol, chunk_size=3)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_example_script_resumes_and_refuses_other_settings(tmp_path):
    """make_dataset.py --resume continues a run; other settings: one line, exit 2."""
    out = tmp_path / "ethanol.extxyz"
    stopped = subprocess.run([sys.executable, "-c", _INTERRUPTED, str(out)])
    assert stopped.returncode == 130 and not out.exists()
    script = [
        sys.executable, str(EXAMPLES / "make_dataset.py"), "CH3CH2OH", "-n", "6",
        "--stride", "2", "--equilibration", "5",
    ]  # fmt: skip
    command = [*script, "-o", str(out), "--resume"]
    refused = subprocess.run(
        [*command, "--temperature", "300"], capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert "other settings (temperature_K)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not out.exists()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and "6/6 frames" in done.stderr
    reference = tmp_path / "reference.extxyz"
    made = subprocess.run([*script, "-o", str(reference)], capture_output=True)
    assert made.returncode == 0, made.stderr
    assert out.read_bytes() == reference.read_bytes()
