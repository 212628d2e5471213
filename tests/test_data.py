import gzip
import shutil

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from ase_flatten.data import Dataset, dataset_from_frames, read_dataset
from ase_flatten.exceptions import InputError
from tests.helpers import random_dataset


def assert_same(a: Dataset, b: Dataset, atol=1e-7):
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=atol)
    np.testing.assert_allclose(a.energies, b.energies, atol=atol)
    np.testing.assert_allclose(a.forces, b.forces, atol=atol)


def labelled_frames(dataset):
    frames = []
    for i in range(len(dataset)):
        atoms = Atoms(numbers=dataset.numbers, positions=dataset.positions[i])
        atoms.calc = SinglePointCalculator(
            atoms, energy=dataset.energies[i], forces=dataset.forces[i]
        )
        frames.append(atoms)
    return frames


def test_extxyz_roundtrip(tmp_path):
    dataset = random_dataset()
    path = tmp_path / "frames.extxyz"
    dataset.write(path)
    back = read_dataset(path)
    assert len(back) == 60 and back.n_atoms == 5
    assert_same(dataset, back)
    assert back.source == str(path)


def test_gzipped_xyz_read_in_memory_equals_plain(tmp_path):
    dataset = random_dataset(n_frames=40)
    plain = tmp_path / "frames.xyz"
    dataset.write(plain)
    gz = tmp_path / "frames.xyz.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert_same(read_dataset(gz), read_dataset(plain))


def test_traj_and_index(tmp_path):
    dataset = random_dataset(n_frames=20)
    path = tmp_path / "frames.traj"
    ase.io.write(path, labelled_frames(dataset))
    back = read_dataset(path, index="::2")
    assert len(back) == 10
    assert_same(dataset.subset(np.arange(0, 20, 2)), back, atol=1e-12)


def test_energy_and_forces_keys(tmp_path):
    dataset = random_dataset(n_frames=5)
    frames = []
    for i in range(5):
        atoms = Atoms(numbers=dataset.numbers, positions=dataset.positions[i])
        atoms.info["REF_energy"] = dataset.energies[i]
        atoms.arrays["REF_forces"] = dataset.forces[i]
        frames.append(atoms)
    path = tmp_path / "mace_style.extxyz"
    ase.io.write(path, frames)
    back = read_dataset(path, energy_key="REF_energy", forces_key="REF_forces")
    assert_same(dataset, back)
    with pytest.raises(InputError, match=r"mace_style.extxyz: frame 0 has no energy"):
        read_dataset(path)


def test_labels_survive_another_calculator():
    dataset = random_dataset(n_frames=3)
    frames = labelled_frames(dataset)
    copied = dataset_from_frames(frames)
    frames[0].calc = LennardJones()
    assert frames[0].get_potential_energy() != pytest.approx(dataset.energies[0])
    np.testing.assert_array_equal(copied.energies, dataset.energies)
    atoms = copied.to_atoms(0)
    atoms.calc = LennardJones()
    atoms.get_forces()
    assert atoms.info["ref_energy"] == dataset.energies[0]
    np.testing.assert_array_equal(atoms.arrays["ref_forces"], dataset.forces[0])


def sgdml_npz(path, dataset, e_unit="kcal/mol", r_unit="Ang", e_scale=None):
    e_factor = units.kcal / units.mol if e_scale is None else e_scale
    r_factor = units.Bohr if r_unit == "bohr" else 1.0
    arrays = dict(
        R=dataset.positions / r_factor,
        z=dataset.numbers,
        E=(dataset.energies / e_factor)[:, None],
        F=dataset.forces / (e_factor / r_factor),
    )
    if e_unit is not None:
        arrays.update(e_unit=np.array(e_unit), r_unit=np.array(r_unit))
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "e_unit, r_unit, scale",
    [
        ("kcal/mol", "Ang", units.kcal / units.mol),
        ("Ha", "bohr", units.Hartree),
        ("eV", "Ang", 1.0),
        (None, "Ang", units.kcal / units.mol),  # no unit fields: sGDML convention
    ],
)
def test_sgdml_npz_units(tmp_path, e_unit, r_unit, scale):
    dataset = random_dataset(n_frames=8)
    path = tmp_path / "data.npz"
    sgdml_npz(path, dataset, e_unit, r_unit, scale)
    assert_same(dataset, read_dataset(path), atol=1e-9)


def test_rmd17_npz(tmp_path):
    dataset = random_dataset(n_frames=8)
    kcal = units.kcal / units.mol
    np.savez(
        tmp_path / "rmd17.npz",
        coords=dataset.positions,
        nuclear_charges=dataset.numbers,
        energies=dataset.energies / kcal,
        forces=dataset.forces / kcal,
    )
    assert_same(dataset, read_dataset(tmp_path / "rmd17.npz"), atol=1e-9)


def test_npz_through_ase_io_entry_point(tmp_path):
    dataset = random_dataset(n_frames=6)
    path = tmp_path / "data.npz"
    sgdml_npz(path, dataset)
    for kwargs in ({"format": "sgdml-npz"}, {}):
        frames = ase.io.read(path, ":", **kwargs)
        assert len(frames) == 6
        np.testing.assert_allclose(frames[2].positions, dataset.positions[2])
        assert frames[2].get_potential_energy() == pytest.approx(dataset.energies[2])
        np.testing.assert_allclose(frames[2].get_forces(), dataset.forces[2])
    last = ase.io.read(path, format="sgdml-npz")
    np.testing.assert_allclose(last.positions, dataset.positions[-1])


def test_subset_and_fingerprint():
    dataset = random_dataset()
    sub = dataset.subset([5, 2])
    np.testing.assert_array_equal(sub.energies, dataset.energies[[5, 2]])
    assert dataset.fingerprint() == random_dataset().fingerprint()
    assert sub.fingerprint() != dataset.fingerprint()
    assert dataset.formula == Atoms(numbers=dataset.numbers).get_chemical_formula()


# -- bad input: one InputError naming the file and the problem -----------------


def write_frames(path, frames):
    ase.io.write(path, frames, format="extxyz")
    return path


def test_missing_and_empty_and_unreadable(tmp_path):
    with pytest.raises(InputError, match=r"nothere.xyz: no such file"):
        read_dataset(tmp_path / "nothere.xyz")
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(InputError, match=r"empty.xyz: empty file"):
        read_dataset(tmp_path / "empty.xyz")
    (tmp_path / "junk.xyz").write_text("this is not\na trajectory\n")
    with pytest.raises(InputError, match=r"junk.xyz: cannot read"):
        read_dataset(tmp_path / "junk.xyz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"junk.npz: cannot read as sGDML/MD17 npz"):
        read_dataset(tmp_path / "junk.npz")
    with pytest.raises(InputError, match=r"is a directory"):
        read_dataset(tmp_path)


def test_missing_labels(tmp_path):
    dataset = random_dataset(n_frames=4)
    frames = labelled_frames(dataset)
    frames[2].calc = SinglePointCalculator(frames[2], energy=1.0)
    path = write_frames(tmp_path / "noforces.extxyz", frames)
    with pytest.raises(InputError, match=r"noforces.extxyz: frame 2 has no forces"):
        read_dataset(path)
    frames = labelled_frames(dataset)
    frames[1].calc = None
    path = write_frames(tmp_path / "bare.extxyz", frames)
    with pytest.raises(InputError, match=r"bare.extxyz: frame 1 has no energy"):
        read_dataset(path)
    np.savez(tmp_path / "nof.npz", R=dataset.positions, z=dataset.numbers, E=[0.0] * 4)
    with pytest.raises(InputError, match=r"nof.npz: no forces"):
        read_dataset(tmp_path / "nof.npz")


def test_mixed_molecules(tmp_path):
    frames = labelled_frames(random_dataset(n_frames=3, n_atoms=5))
    other = labelled_frames(random_dataset(n_frames=1, n_atoms=6, seed=1))
    path = write_frames(tmp_path / "mixed.extxyz", frames + other)
    with pytest.raises(InputError, match=r"mixed.extxyz: frame 3 .* 6 atoms"):
        read_dataset(path)
    swapped = labelled_frames(random_dataset(n_frames=2, n_atoms=5))
    for atoms, numbers in zip(swapped, ([8, 6, 1, 1, 1], [6, 8, 1, 1, 1]), strict=True):
        atoms.numbers = numbers
    path = write_frames(tmp_path / "order.extxyz", swapped)
    with pytest.raises(InputError, match=r"order.extxyz: frame 1 .* same order"):
        read_dataset(path)


@pytest.mark.parametrize("field", ["positions", "energies", "forces"])
def test_non_finite_values(tmp_path, field):
    dataset = random_dataset(n_frames=5)
    getattr(dataset, field).reshape(5, -1)[3, 0] = np.nan
    frames = labelled_frames(dataset)
    path = write_frames(tmp_path / "nan.extxyz", frames)
    with pytest.raises(
        InputError, match=rf"nan.extxyz: frame 3 has non-finite {field}"
    ):
        read_dataset(path)


def test_unknown_npz_unit(tmp_path):
    dataset = random_dataset(n_frames=3)
    sgdml_npz(tmp_path / "u.npz", dataset, e_unit="furlongs")
    with pytest.raises(InputError, match=r"u.npz: .*unknown e_unit 'furlongs'"):
        read_dataset(tmp_path / "u.npz")


def test_shape_checks():
    with pytest.raises(InputError, match="forces have shape"):
        Dataset([1, 1], np.zeros((3, 2, 3)), np.zeros(3), np.zeros((3, 3, 3)), "x")
    with pytest.raises(InputError, match="x: no frames"):
        Dataset([1], np.zeros((0, 1, 3)), np.zeros(0), np.zeros((0, 1, 3)), "x")


@pytest.mark.slow
def test_kcal_mol_forces_in_an_extxyz_are_flagged(tmp_path, xtb_dataset, caplog):
    kcal = units.kcal / units.mol
    in_ev, in_kcal = tmp_path / "ev.extxyz", tmp_path / "kcal.extxyz"
    xtb_dataset.write(in_ev)
    converted = Dataset(
        xtb_dataset.numbers,
        xtb_dataset.positions,
        xtb_dataset.energies / kcal,
        xtb_dataset.forces / kcal,
    )
    converted.write(in_kcal)
    with caplog.at_level("WARNING", logger="ase_flatten.data"):
        read_dataset(in_ev)
        assert not caplog.records  # RMS 1.2 eV/Å: fine
        read_dataset(in_kcal)
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and message.startswith(f"{in_kcal}: the RMS force")
    assert "implausible for eV/Å" in message and "e_unit='kcal/mol'" in message
    rms = float(message.split("component is ")[1].split(",")[0])
    assert rms == pytest.approx(23.06 * np.sqrt(np.mean(xtb_dataset.forces**2)), 0.01)
    # the fix the message names: the same numbers as an npz with e_unit
    caplog.clear()
    npz = tmp_path / "kcal.npz"
    sgdml_npz(npz, xtb_dataset, "kcal/mol", "Ang", kcal)
    with caplog.at_level("WARNING", logger="ase_flatten.data"):
        assert_same(xtb_dataset, read_dataset(npz), atol=1e-6)
    assert not caplog.records


# -- ASE's file@selection syntax -----------------------------------------------------


def write_as(path, dataset):
    """``dataset`` in the format of ``path``'s suffix."""
    name = str(path)
    if name.endswith(".npz"):
        sgdml_npz(path, dataset, "eV", "Ang", 1.0)
    elif name.endswith(".xyz.gz"):
        dataset.write(path.with_suffix(""))
        with open(path.with_suffix(""), "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        ase.io.write(path, labelled_frames(dataset))


@pytest.mark.parametrize(
    "name, selection, frames",
    [
        ("frames.extxyz", "0:7", range(7)),
        ("frames.extxyz", "-5:", range(15, 20)),
        ("frames.extxyz", "3", [3]),
        ("frames.xyz.gz", "2:12:5", [2, 7]),
        ("frames.xyz.gz", "-3:", [17, 18, 19]),
        ("frames.traj", "::4", range(0, 20, 4)),
        ("frames.npz", "5:9", range(5, 9)),
        ("frames.npz", "-1", [19]),
        ("frames.db", "id<8", range(7)),  # ASE database ids start at 1
        ("frames.db", "-4:", range(16, 20)),
    ],
)
def test_at_selection(tmp_path, name, selection, frames):
    dataset = random_dataset(n_frames=20)
    path = tmp_path / name
    write_as(path, dataset)
    whole = read_dataset(path)
    part = read_dataset(f"{path}@{selection}")
    expected = whole.subset(list(frames))
    assert_same(expected, part, atol=0)
    # what datasets, models and clusters record: the selection, not the whole file
    assert part.source == f"{path}@{selection}"
    assert part.fingerprint() == expected.fingerprint() != whole.fingerprint()


def test_index_argument_records_the_selection_too(tmp_path):
    dataset = random_dataset(n_frames=20)
    dataset.write(tmp_path / "frames.extxyz")
    by_index = read_dataset(tmp_path / "frames.extxyz", index="0:7")
    by_name = read_dataset(f"{tmp_path / 'frames.extxyz'}@0:7")
    assert by_index.source == by_name.source
    assert by_index.fingerprint() == by_name.fingerprint()
    assert read_dataset(tmp_path / "frames.extxyz", index=":").source == str(
        tmp_path / "frames.extxyz"
    )


def test_bad_selections(tmp_path):
    dataset = random_dataset(n_frames=20)
    write_as(tmp_path / "frames.extxyz", dataset)
    write_as(tmp_path / "frames.db", dataset)
    write_as(tmp_path / "frames.npz", dataset)
    path = tmp_path / "frames.extxyz"
    cases = [
        (f"{path}@0:5", "0:3", r"@0:5: frames selected twice, by @0:5 and by index"),
        (f"{path}@id<5", None, r"'id<5' is not a frame index or slice"),
        (f"{tmp_path / 'frames.npz'}@id<5", None, r"'id<5' is not a frame index"),
        (f"{tmp_path / 'frames.db'}@::2", None, r"read in steps of 1"),
        (f"{path}@", None, r"frames.extxyz@: nothing after @"),
        (f"{path}@30:", None, r"frames.extxyz@30:: no frames"),
        (f"{tmp_path / 'frames.npz'}@20", None, r"frame 20 of 20 does not exist"),
        (f"{tmp_path / 'frames.db'}@id>100", None, r"frames.db@id>100: no frames"),
        (f"{tmp_path / 'none.extxyz'}@0:5", None, r"none.extxyz: no such file"),
    ]
    for name, index, message in cases:
        with pytest.raises(InputError, match=message):
            read_dataset(name, index=index)


def test_a_file_named_with_an_at_sign_is_read_whole(tmp_path):
    dataset = random_dataset(n_frames=6)
    path = tmp_path / "run@2.extxyz"
    dataset.write(path)
    back = read_dataset(path)
    assert len(back) == 6 and back.source == str(path)
    assert len(read_dataset(f"{path}@1:3")) == 2
