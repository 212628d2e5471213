"""The ase backend: the backend contract (EMT), and a saved model directory never
imports its factory by itself."""

import json

import numpy as np
import pytest

from ase_flatten.backends.ase import ASEBackend
from ase_flatten.exceptions import InputError
from ase_flatten.models import load_model, save_model
from ase_flatten.testing import BackendTests

FACTORY = "planted_calc:make"
EMT = "ase.calculators.emt:EMT"


class TestASEContract(BackendTests):
    """An ASE calculator (EMT) passes the contract; the data are EMT's own."""

    backend = "ase"
    params = {"factory": EMT, "kwargs": {}}
    load_kwargs = {"factory": EMT}
    max_force_rmse_share = 1e-12  # the calculator that labelled the frames
    max_energy_rmse = 1e-12
    gradient_atol = 1e-5
    bad_params = [
        ({"factory": "no colon"}, "ase: parameter factory must be a 'module:call"),
        ({"kwargs": [1]}, "ase: parameter kwargs must be a dictionary"),
    ]


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """An importable module whose import and factory each leave a marker file."""
    code = (
        "from pathlib import Path\n"
        f"Path({str(tmp_path / 'imported')!r}).touch()\n"
        "def make(**kwargs):\n"
        f"    Path({str(tmp_path / 'called')!r}).touch()\n"
        "    from ase.calculators.emt import EMT\n"
        "    return EMT(**kwargs)\n"
    )
    (tmp_path / "planted_calc.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "imported", tmp_path / "called"


@pytest.fixture
def model_dir(tmp_path, xtb_dataset):
    backend = ASEBackend(factory=FACTORY, kwargs={}).fit(xtb_dataset)
    return save_model(tmp_path / "m", backend, [], xtb_dataset)


def test_loading_never_imports_the_factory_named_in_the_directory(
    model_dir, planted, xtb_dataset
):
    imported, called = planted
    with pytest.raises(InputError, match=f"imported only when you name it.*{FACTORY}"):
        load_model(model_dir)
    with pytest.raises(InputError, match="saved with the calculator factory"):
        load_model(model_dir, factory="ase.calculators.emt:EMT")
    assert not imported.exists() and not called.exists()


def test_the_factory_named_by_the_user_is_used(model_dir, planted, xtb_dataset):
    imported, called = planted
    saved = load_model(model_dir, factory=FACTORY)
    energies, forces = saved.backend.predict(xtb_dataset, [0, 1], progress=False)
    assert imported.exists() and called.exists()
    assert np.isfinite(energies).all() and forces.shape == (2, 9, 3)


def test_a_factory_is_only_for_ase_models(model_dir, tmp_path):
    meta = json.loads((model_dir / "model.json").read_text())
    (model_dir / "model.json").write_text(json.dumps({**meta, "backend": "sgdml"}))
    with pytest.raises(InputError, match="factory= is for ase-backend models"):
        load_model(model_dir, factory=FACTORY)
