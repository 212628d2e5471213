"""Shared fixtures: a small real GFN2-xTB MD dataset of ethanol, made once."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from ase_flatten.data import Dataset  # noqa: E402


@pytest.fixture(scope="session")
def xtb_dataset() -> Dataset:
    """150 frames of ethanol, GFN2-xTB Langevin MD at 500 K (about 3 s)."""
    from ase_flatten.md_dataset import make_md_dataset

    return make_md_dataset(
        "CH3CH2OH", n_frames=150, equilibration_fs=250, seed=0, progress=False
    )


@pytest.fixture(scope="session")
def gfn1_dataset(xtb_dataset) -> Dataset:
    """The same frames labelled with GFN1-xTB: a model with real, uneven errors."""
    from ase_flatten.md_dataset import relabel

    return relabel(xtb_dataset, "GFN1-xTB", progress=False)


@pytest.fixture(scope="session")
def xtb_file(tmp_path_factory, xtb_dataset):
    """The reference frames alone as an extxyz file (no GFN1 labels to compute)."""
    path = tmp_path_factory.mktemp("xtb_reference") / "ethanol_gfn2.extxyz"
    xtb_dataset.write(path)
    return path


@pytest.fixture(scope="session")
def xtb_files(tmp_path_factory, xtb_dataset, gfn1_dataset):
    """Paths of the reference and GFN1 'predictions' as extxyz files."""
    directory = tmp_path_factory.mktemp("xtb")
    reference = directory / "ethanol_gfn2.extxyz"
    predicted = directory / "ethanol_gfn1.extxyz"
    xtb_dataset.write(reference)
    gfn1_dataset.write(predicted)
    return reference, predicted


@pytest.fixture()
def unwritable(tmp_path):
    """A folder in which this process cannot create anything.

    A read-only folder for a normal user; root ignores permissions, so for root
    a sysfs folder (no files can be created there, whoever asks).
    """
    from pathlib import Path

    if os.geteuid() == 0:
        place = Path("/sys/kernel")
        if not place.is_dir():
            pytest.skip("running as root without /sys: no unwritable folder")
        yield place
        return
    place = tmp_path / "read-only"
    place.mkdir()
    place.chmod(0o555)
    yield place
    place.chmod(0o755)


@pytest.fixture(scope="session")
def butane():
    """Butane: 500 K data from anti, an independent anti MD and a gauche one (300 K);
    the distance and the QUESTS domain tests share it."""
    from ase.build import molecule

    from ase_flatten.md_dataset import make_md_dataset

    anti = molecule("trans-butane")
    gauche = anti.copy()
    end = [3] + [i for i in range(len(anti)) if 0 < anti.get_distance(i, 3) < 1.2]
    gauche.set_dihedral(0, 1, 2, 3, 65, indices=end)
    md = dict(equilibration_fs=250, progress=False)
    data = make_md_dataset(anti, n_frames=150, seed=0, **md)
    independent = make_md_dataset(anti, 60, temperature_K=300, seed=1, **md)
    other = make_md_dataset(gauche, 30, temperature_K=300, seed=2, **md)
    return data, independent, other
