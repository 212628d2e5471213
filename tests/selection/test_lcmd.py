"""The lcmd peer strategy: bmdal-reg's LCMD on SchNet's last-layer features."""

import importlib.util
import sys

import numpy as np
import pytest

from ase_flatten.exceptions import InputError
from ase_flatten.selection import split
from ase_flatten.selection.baselines import PeerSettings, select_frames
from tests.test_cli import assert_one_line_error, run_cli

needs_bmdal = pytest.mark.skipif(
    importlib.util.find_spec("bmdal_reg") is None,
    reason="the lcmd strategy needs bmdal-reg (the extra 'lcmd')",
)
TINY = {"n_atom_basis": 16, "n_interactions": 2, "n_rbf": 10, "max_epochs": 3}


@needs_bmdal
def test_lcmd_picks_the_farthest_of_the_largest_cluster():
    from ase_flatten.bmdal import lcmd_select

    rng = np.random.default_rng(0)
    train = np.zeros((1, 4))
    pool = rng.normal(size=(50, 4))
    picks = lcmd_select(train, pool, 5)
    assert len(np.unique(picks)) == 5 and picks.max() < 50
    # one cluster (around the one training point): its farthest member first
    assert picks[0] == np.argmax(np.linalg.norm(pool, axis=1))
    # the second: the farthest member of the larger of the two clusters now
    centres = np.stack([train[0], pool[picks[0]]])
    owner = np.argmin(np.linalg.norm(pool[:, None] - centres[None], axis=-1), axis=1)
    d = np.linalg.norm(pool - centres[owner], axis=1) ** 2
    sums = np.bincount(owner, weights=d, minlength=2)
    members = np.flatnonzero(owner == np.argmax(sums))
    assert picks[1] == members[np.argmax(d[members])]
    np.testing.assert_array_equal(picks, lcmd_select(train, pool, 5))  # no chance


def test_lcmd_without_bmdal_names_the_extra(monkeypatch, capsys, tmp_path, xtb_file):
    monkeypatch.setitem(sys.modules, "bmdal_reg.bmdal.algorithms", None)
    status, _, err = run_cli(
        capsys, "train", xtb_file, "--backend", "schnet", "--size", 20,
        "--strategy", "lcmd", "-o", tmp_path / "m",
    )  # fmt: skip
    assert_one_line_error(status, err, "pip install 'ase-flatten[lcmd]'")
    assert not (tmp_path / "m").exists()


@needs_bmdal
def test_lcmd_needs_last_layer_features(capsys, tmp_path, xtb_file):
    status, _, err = run_cli(
        capsys, "train", xtb_file, "--backend", "sgdml", "--size", 20,
        "--strategy", "lcmd", "-o", tmp_path / "m",
    )  # fmt: skip
    assert_one_line_error(status, err, "last-layer features", "sgdml backend")


@pytest.mark.slow
@needs_bmdal
def test_lcmd_with_schnet(xtb_dataset):
    from ase_flatten.backends.schnet import SchNetBackend

    # the features: the energy is linear in them, per structure
    backend = SchNetBackend(random_state=0, **TINY).fit(xtb_dataset, np.arange(30))
    features = backend.last_layer_features(xtb_dataset.positions[:40])
    assert features.shape == (40, 8)  # the readout's hidden layer: 16 / 2
    last = backend.model_.output_modules[0].outnet[-1]
    weight = last.weight.detach().numpy().astype(float)[0]
    bias = float(last.bias.detach().numpy()[0])
    energies = backend.predict_positions(xtb_dataset.positions[:40])[0]
    rest = energies - (features @ weight + 9 * bias)
    np.testing.assert_allclose(rest, rest[0], atol=1e-3)  # the energy offset

    test, pool = split.holdout_split(100, 0.1, 0)
    settings = PeerSettings(committee_steps=2)
    chosen = select_frames(
        "lcmd",
        xtb_dataset,
        pool,
        20,
        seed=0,
        settings=settings,
        make_backend=lambda seed: SchNetBackend(random_state=seed, **TINY),
    )
    assert len(chosen) == 20 and len(np.unique(chosen)) == 20
    assert np.isin(chosen, pool).all() and not np.isin(chosen, test).any()
    with pytest.raises(InputError, match="at least 3 frames"):
        select_frames(
            "lcmd",
            xtb_dataset,
            pool,
            2,
            make_backend=lambda seed: SchNetBackend(random_state=seed, **TINY),
        )
