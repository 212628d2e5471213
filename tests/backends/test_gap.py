"""GAP backend: real gap_fit runs on tiny models of the ethanol xTB fixture."""

import json
import logging
import shutil
import sys

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("quippy.potential")

from ase_flatten.backends import gap as gapmod  # noqa: E402
from ase_flatten.backends.gap import (  # noqa: E402
    GAPBackend,
    gap_fit_command,
    gap_seed,
    gap_string,
    quippy_potential,
    two_body_pairs,
)
from ase_flatten.exceptions import InputError  # noqa: E402
from ase_flatten.testing import BackendTests  # noqa: E402

# small enough for ~3 s fits on one thread
SMALL = {"n_max": 6, "l_max": 4, "n_sparse": 40, "two_body_n_sparse": 10}
TRAIN = np.arange(0, 140, 7)  # 20 frames spread over the trajectory
TEST = np.setdiff1d(np.arange(150), TRAIN)[::2]  # 65 other frames
ETHANOL_PAIRS = [(1, 1), (1, 6), (1, 8), (6, 6), (6, 8)]  # no O-O: one oxygen


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


# -- the gap_fit command line ---------------------------------------------------
def test_two_body_pairs_of_ethanol(xtb_dataset):
    numbers = xtb_dataset.numbers  # C C O H H H H H H
    assert two_body_pairs(numbers) == ETHANOL_PAIRS
    assert two_body_pairs(numbers, xtb_dataset.positions, 4.0) == ETHANOL_PAIRS
    # within 1.2 Å only bonded pairs are left: C-H and O-H
    assert two_body_pairs(numbers, xtb_dataset.positions, 1.2) == [(1, 6), (1, 8)]

    terms = gap_string(numbers, GAPBackend().params).split(" : ")
    two_body = [t for t in terms if t.startswith("distance_2b")]
    pairs = [
        tuple(int(w.split("=")[1]) for w in t.split() if w.startswith(("Z1=", "Z2=")))
        for t in two_body
    ]
    assert pairs == ETHANOL_PAIRS
    assert all("add_species=F" in t for t in two_body)
    soap = [t for t in terms if t.startswith("soap")]
    assert [t.split()[-2] for t in soap] == ["Z=1", "Z=6", "Z=8"]
    assert all("species_Z={{1 6 8}}" in t and "add_species=F" in t for t in soap)
    no_two_body = gap_string(numbers, GAPBackend(two_body=False).params)
    assert "distance_2b" not in no_two_body


def test_default_command_line_has_the_papers_soap(xtb_dataset):
    backend = GAPBackend(random_state=7)
    command = gap_fit_command("/x/gap_fit", xtb_dataset.numbers, backend.params, 7)
    assert command[0] == "/x/gap_fit"
    line = " ".join(command)
    assert line.count("n_max=12 l_max=6") == 3  # one SOAP term per element
    for option in (
        "at_file=train.xyz",
        "gp_file=gap.xml",
        "e0_method=average",
        "do_copy_at_file=F",
        "sparse_separate_file=T",
        "energy_parameter_name=ref_energy",
        "force_parameter_name=ref_forces",
        "default_sigma={0.001 0.01 0.0 0.0}",
        "rnd_seed=8",
        "cutoff=5 ",
        "zeta=2 ",
        "atom_sigma=0.35 ",
        "n_sparse=200 sparse_method=cur_points",
    ):
        assert option in line, option
    assert gap_seed(0) == 1 and gap_seed(2**31 - 2) == 1  # gap_fit rejects seed 0


def test_sparse_points_are_capped_by_the_training_atoms(xtb_dataset):
    params = GAPBackend(n_sparse=200, two_body_n_sparse=50).params
    text = gap_string(xtb_dataset.numbers, params, xtb_dataset.positions[:3])
    soap = {t.split()[-2]: t for t in text.split(" : ") if t.startswith("soap")}
    assert "n_sparse=18 " in soap["Z=1"]  # 3 frames x 6 H
    assert "n_sparse=6 " in soap["Z=6"]
    assert "n_sparse=3 " in soap["Z=8"]
    c_c = [t for t in text.split(" : ") if "Z1=6 Z2=6" in t][0]
    assert "n_sparse=3 " in c_c  # one C-C bond per frame


def test_defaults_are_json_and_validated():
    params = json.loads(json.dumps(GAPBackend.defaults))
    assert GAPBackend(**params).params == GAPBackend().params
    for bad in (
        {"n_max": 0},
        {"l_max": 2.5},
        {"cutoff": -1.0},
        {"cutoff": "5"},
        {"cutoff": 2.0, "cutoff_transition_width": 2.0},
        {"force_sigma": 0},
        {"delta": float("nan")},
        {"n_sparse": True},
        {"sparse_method": "kmeans"},
        {"two_body": "yes"},
        {"n_threads": 0},
        {"no_such_parameter": 1},
    ):
        with pytest.raises(InputError, match="parameter"):
            GAPBackend(**bad)


# -- the contract, fitting, predicting, saving and loading ------------------------
@pytest.fixture(scope="class")
def saved(fitted, tmp_path_factory):
    """The class's trained model, saved (``fitted`` is the contract's fixture)."""
    directory = tmp_path_factory.mktemp("gap") / "model"
    fitted.save(directory)
    return directory


@pytest.mark.slow
class TestGAP(BackendTests):
    """The backend contract, and what only GAP does."""

    backend = "gap"
    params = SMALL
    random_state = 3
    dataset_fixture = "xtb_dataset"
    train_idx = TRAIN
    val_idx = None
    test_idx = TEST
    max_force_rmse_share = 0.35
    max_energy_rmse = 0.5 * 0.125  # eV: half the spread of the test frames' energies
    batch_atol = 1e-8
    load_atol = 1e-9
    gradient_atol = 2e-4
    determinism_atol = 1e-9

    def test_same_random_state_same_model(self, fitted, dataset, caplog):
        with caplog.at_level(logging.INFO, logger="ase_flatten.backends.gap"):
            super().test_same_random_state_same_model(fitted, dataset)
        lines = [r.getMessage() for r in caplog.records if "fitted" in r.getMessage()]
        assert len(lines) == 1 and "20 frames" in lines[0], lines

    def test_save_and_load_give_the_same_numbers(
        self, fitted, saved, dataset, tmp_path
    ):
        """The contract's check, from a moved copy that is then removed."""
        files = sorted(p.name for p in saved.iterdir())
        assert "gap.xml" in files
        sparse = [f for f in files if f.startswith("gap.xml.sparseX.")]
        assert len(sparse) == 5 + 3  # five pair terms, three SOAP terms
        moved = tmp_path / "elsewhere"
        shutil.copytree(saved, moved)
        loaded = GAPBackend.load(moved, dataset.numbers, fitted.params)
        e1, f1 = fitted.predict(dataset, TEST[:10], progress=False)
        e2, f2 = loaded.predict(dataset, TEST[:10], progress=False)
        np.testing.assert_allclose(e2, e1, rtol=0, atol=1e-9)
        np.testing.assert_allclose(f2, f1, rtol=0, atol=1e-9)
        # the loaded model keeps its own copy: saving it again works after the
        # directory it came from is gone
        shutil.rmtree(moved)
        again = tmp_path / "again"
        loaded.save(again)
        assert sorted(p.name for p in again.iterdir()) == files

    def test_saving_over_a_model_removes_its_stale_sparse_files(self, saved, tmp_path):
        target = tmp_path / "model"
        shutil.copytree(saved, target)
        (target / "gap.xml.sparseX.GAP_old_1").write_text("old")
        loaded = GAPBackend.load(saved, [6, 6, 8, 1, 1, 1, 1, 1, 1], SMALL)
        loaded.save(target)
        assert not (target / "gap.xml.sparseX.GAP_old_1").exists()
        GAPBackend.load(target, [6, 6, 8, 1, 1, 1, 1, 1, 1], SMALL)

    def test_bare_quippy_potential_agrees(self, fitted, saved, dataset):
        potential = quippy_potential(saved)
        i = TEST[7]
        atoms = Atoms(numbers=dataset.numbers, positions=dataset.positions[i])
        atoms.calc = potential
        energy, forces = fitted.predict_positions(dataset.positions[[i, i + 1]])
        np.testing.assert_allclose(atoms.get_potential_energy(), energy[0], atol=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), forces[0], atol=1e-8)

    @pytest.mark.parametrize(
        "damage, reason",
        [
            (lambda d: shutil.rmtree(d), "no such file"),
            (lambda d: (d / "gap.xml").write_text("garbage, not XML"), "well-formed"),
            (lambda d: (d / "gap.xml").write_text("<a><b/></a>"), "GAP_params"),
            (lambda d: next(d.glob("gap.xml.sparseX.*")).unlink(), "missing sparse"),
            (lambda d: _corrupt(max(d.glob("gap.xml.sparseX.*"))), "md5"),
        ],
    )
    def test_load_of_a_bad_model_is_an_input_error(
        self, saved, tmp_path, damage, reason
    ):
        directory = tmp_path / "model"
        shutil.copytree(saved, directory)
        damage(directory)
        with pytest.raises(InputError, match=reason) as info:
            GAPBackend.load(directory, [6, 6, 8, 1, 1, 1, 1, 1, 1], SMALL)
        message = str(info.value)
        assert message.startswith(f"{directory / 'gap.xml'}: cannot load GAP model (")
        assert "\n" not in message

    def test_missing_quippy_names_the_extra(self, saved, monkeypatch):
        monkeypatch.setitem(sys.modules, "quippy.potential", None)
        with pytest.raises(InputError, match=r"ase-flatten\[gap\]"):
            quippy_potential(saved)


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


# -- failures of the fit -------------------------------------------------------------
@pytest.mark.slow
def test_failing_gap_fit_is_a_one_line_input_error(xtb_dataset, monkeypatch):
    monkeypatch.setattr(gapmod, "gap_string", lambda *a, **k: "soap n_max=x")
    with pytest.raises(InputError, match="gap_fit failed on 20 frames") as info:
        GAPBackend(**SMALL).fit(xtb_dataset, TRAIN)
    assert "\n" not in str(info.value)
    assert "soap" in str(info.value)  # QUIP's reason, not a traceback header


def test_gap_fit_without_a_model_file_fails(xtb_dataset, monkeypatch, tmp_path):
    fake = tmp_path / "gap_fit"
    fake.write_text("#!/bin/sh\necho 'SYSTEM ABORT: out of luck'\necho 'STOP 1'\n")
    fake.chmod(0o755)  # exits 0 and writes nothing, as gap_fit sometimes does
    monkeypatch.setattr(gapmod, "find_gap_fit", lambda: str(fake))
    with pytest.raises(InputError, match="gap_fit failed on 20 frames: out of luck$"):
        GAPBackend(**SMALL).fit(xtb_dataset, TRAIN)


def test_missing_gap_fit_names_the_extra(xtb_dataset, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match=r"pip install 'ase-flatten\[gap\]'"):
        gapmod.find_gap_fit()
    with pytest.raises(InputError, match=r"ase-flatten\[gap\]"):
        GAPBackend(**SMALL).fit(xtb_dataset, TRAIN)
