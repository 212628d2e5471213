"""The newer peer strategies, run for real at tiny size: GGFPS, QUESTS MSC and
query by committee (sGDML committees) on real GFN2-xTB ethanol frames."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from ase_flatten.descriptors import pairwise_distances
from ase_flatten.exceptions import InputError
from ase_flatten.selection import split
from ase_flatten.selection.baselines import (
    PeerSettings,
    gradient_guided_fps,
    select_frames,
)
from ase_flatten.selection.committee import (
    committee_round,
    force_deviation,
    round_sizes,
)
from tests.test_cli import assert_one_line_error, run_cli

needs_quests = pytest.mark.skipif(
    importlib.util.find_spec("quests") is None,
    reason="the quests strategy needs QUESTS (the extra 'quests')",
)


def _assert_valid(chosen, n, pool, test):
    assert len(chosen) == n and len(np.unique(chosen)) == n
    assert np.isin(chosen, pool).all() and not np.isin(chosen, test).any()


def _min_spacing(X, idx):
    from scipy.spatial.distance import pdist

    return pdist(X[idx]).min()


# -- GGFPS ------------------------------------------------------------------------


def test_ggfps_by_hand():
    """Four points on a line: the force norm outweighs a shorter distance."""
    X = np.array([[0.0], [1.0], [3.0], [10.0]])
    g = np.array([1.0, 100.0, 1.0, 1.0])  # force norm per frame
    forces = np.zeros((4, 1, 3))
    forces[:, 0, 0] = g
    # the first frame is drawn with probability g / sum(g): 100/103 frame 1
    order = gradient_guided_fps(X, forces, 4, seed=0, beta=1.0)
    assert order[0] == 1
    # from 1: scores g * d = 1*1, -, 1*2, 1*9 -> 3, then 0 (1*1) vs 2 (1*2) -> 2
    np.testing.assert_array_equal(order, [1, 3, 2, 0])
    # weighted: frame 0 strong, frame 3 weak: 0 is taken before the farther 3
    g = np.array([1.0, 1.0, 50.0, 1.0])
    forces[:, 0, 0] = g
    order = gradient_guided_fps(X, forces, 2, seed=0, beta=1.0)
    assert order[0] == 2  # drawn with probability 50/53
    forces[:, 0, 0] = [20.0, 1.0, 50.0, 1.0]
    # from 2: scores 20*3 = 60 for frame 0 against 1*7 for frame 3
    assert gradient_guided_fps(X, forces, 2, seed=0, beta=1.0)[1] == 0
    assert gradient_guided_fps(X, forces, 2, seed=0, beta=0.0)[1] == 3  # plain FPS


def test_ggfps_picks_strong_force_frames_deterministically(xtb_dataset):
    test, pool = split.holdout_split(len(xtb_dataset), 0.1, 0)
    first = select_frames("ggfps", xtb_dataset, pool, 20, seed=0)
    np.testing.assert_array_equal(
        first, select_frames("ggfps", xtb_dataset, pool, 20, seed=0)
    )
    other = select_frames("ggfps", xtb_dataset, pool, 20, seed=3)
    for chosen in (first, other):
        _assert_valid(chosen, 20, pool, test)
    g = np.linalg.norm(xtb_dataset.forces.reshape(len(xtb_dataset), -1), axis=1)
    plain = select_frames(
        "ggfps", xtb_dataset, pool, 20, seed=0, settings=PeerSettings(ggfps_beta=0.0)
    )
    # the force weight shifts the picks towards strong forces, above FPS' and the pool's
    assert np.median(g[first]) > np.median(g[plain])
    assert np.median(g[first]) > np.median(g[pool])


# -- QUESTS -------------------------------------------------------------------------


def test_quests_without_the_library_names_the_extra(xtb_dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "quests.compression", None)  # import fails
    with pytest.raises(InputError, match=r"pip install 'ase-flatten\[quests\]'"):
        select_frames("quests", xtb_dataset, np.arange(100), 10)


@pytest.mark.slow
@needs_quests
def test_quests_msc_on_100_frames(xtb_dataset):
    from ase_flatten import quests

    test, pool = split.holdout_split(100, 0.1, 0)
    first = select_frames("quests", xtb_dataset, pool, 15, seed=0)
    _assert_valid(first, 15, pool, test)
    np.testing.assert_array_equal(
        first, select_frames("quests", xtb_dataset, pool, 15, seed=0)
    )
    # k for a molecule: every other atom (QUESTS' 32 exceeds ethanol's 8)
    assert quests.neighbours(9) == 8 and quests.neighbours(42) == 32
    desc = quests.environment_descriptors(
        xtb_dataset.numbers, xtb_dataset.positions[:100]
    )
    assert desc[0].shape == (9, 2 * 8 - 1)
    # the data-driven bandwidth: the median nearest-environment distance across frames
    h = quests.molecule_bandwidth(desc)
    X = np.concatenate(desc)
    frame = np.repeat(np.arange(100), 9)
    d = np.linalg.norm(X[:, None] - X[None], axis=-1)
    d[frame[:, None] == frame[None]] = np.inf
    assert h == pytest.approx(np.median(d.min(axis=1)))
    assert 0.005 < h < 0.2
    # MSC spreads its picks: farther apart than random picks of the same pool
    P = pairwise_distances(xtb_dataset.positions)
    random = [
        _min_spacing(P, select_frames("random", xtb_dataset, pool, 15, seed=s))
        for s in range(5)
    ]
    assert _min_spacing(P, first) > np.median(random)
    # a given bandwidth is used as given
    wide = select_frames(
        "quests", xtb_dataset, pool, 15, settings=PeerSettings(bandwidth=1.0)
    )
    _assert_valid(wide, 15, pool, test)


@needs_quests
def test_quests_prethins_a_large_pool(xtb_dataset, monkeypatch):
    from ase_flatten import quests

    monkeypatch.setattr(quests, "MSC_MAX_FRAMES", 40)
    pool = np.arange(120)
    a = quests.msc_select(xtb_dataset.numbers, xtb_dataset.positions[pool], 10, seed=0)
    b = quests.msc_select(xtb_dataset.numbers, xtb_dataset.positions[pool], 10, seed=1)
    assert len(np.unique(a)) == 10 and a.max() < 120
    assert not np.array_equal(np.sort(a), np.sort(b))  # the seed draws the 40


@pytest.mark.parametrize("bandwidth", [0.0, -0.1, float("nan")])
def test_nonpositive_bandwidth_is_refused(bandwidth):
    with pytest.raises(InputError, match="QUESTS bandwidth must be positive, got band"):
        PeerSettings(bandwidth=bandwidth)  # a Python caller reads the parameter


# -- committee ----------------------------------------------------------------------


def _sgdml(seed):
    from ase_flatten.backends import make_backend

    return make_backend("sgdml", random_state=seed, sigma=20)


def test_force_deviation_by_hand():
    forces = np.zeros((2, 3, 2, 3))  # 2 models, 3 frames, 2 atoms
    forces[0, 1, 1] = [1.0, 0.0, 0.0]  # frame 1, atom 1: models differ by 1 eV/Å
    forces[1, 1, 1] = [-1.0, 0.0, 0.0]
    forces[:, 2, 0] = [0.0, 3.0, 0.0]  # frame 2: they agree
    np.testing.assert_allclose(force_deviation(forces), [0.0, 1.0, 0.0])


def test_round_sizes():
    assert round_sizes(100, PeerSettings()) == [50, 25, 25]
    assert round_sizes(25, PeerSettings(committee_steps=3)) == [12, 5, 4, 4]
    assert sum(round_sizes(3, PeerSettings(committee_steps=5))) == 3


@pytest.mark.parametrize("size", [0, 1, -2])
def test_a_committee_of_one_is_refused(size):
    with pytest.raises(InputError, match="query by committee needs --committee 2"):
        PeerSettings(committee=size)


@pytest.mark.slow
def test_committee_picks_frames_of_high_disagreement(xtb_dataset):
    test, pool = split.holdout_split(len(xtb_dataset), 0.1, 0)
    rng = np.random.default_rng(0)
    chosen = rng.choice(pool, 12, replace=False)
    candidates = np.setdiff1d(pool, chosen)
    settings = PeerSettings(committee=3)
    picks, deviation = committee_round(
        xtb_dataset, chosen, candidates, 6, _sgdml, settings, rng, test
    )
    assert len(np.unique(picks)) == 6 and np.isin(picks, candidates).all()
    assert deviation.shape == (len(candidates),) and (deviation > 0).all()
    ranks = np.argsort(np.argsort(-deviation))  # 0: the largest disagreement
    picked = ranks[np.searchsorted(candidates, picks)]
    assert picked[0] == 0  # the largest disagreement first
    assert picked.max() < 3 * 6  # all among the 18 highest
    picked_dev = deviation[np.searchsorted(candidates, picks)]
    assert np.median(picked_dev) > 2 * np.median(deviation)


@pytest.mark.slow
def test_committee_strategy_sizes_and_seed(xtb_dataset):
    test, pool = split.holdout_split(len(xtb_dataset), 0.1, 0)
    settings = PeerSettings(committee=2, committee_steps=2)
    first = select_frames(
        "committee", xtb_dataset, pool, 20, 0, settings=settings, make_backend=_sgdml
    )
    again = select_frames(
        "committee", xtb_dataset, pool, 20, 0, settings=settings, make_backend=_sgdml
    )
    other = select_frames(
        "committee", xtb_dataset, pool, 20, 1, settings=settings, make_backend=_sgdml
    )
    np.testing.assert_array_equal(first, again)
    _assert_valid(first, 20, pool, test)
    _assert_valid(other, 20, pool, test)
    assert not np.array_equal(first, other)
    with pytest.raises(InputError, match="needs a backend"):
        select_frames("committee", xtb_dataset, pool, 20)


@pytest.mark.slow
def test_train_with_peer_strategies(tmp_path, capsys, xtb_files):
    reference, _ = xtb_files
    sgdml = ["--backend", "sgdml", "-p", "sigma=20", "--size", "16"]
    status, out, err = run_cli(
        capsys, "train", reference, *sgdml, "--strategy", "committee",
        "--committee", "2", "--committee-steps", "1", "-o", tmp_path / "qbc",
    )  # fmt: skip
    assert status == 0, err
    assert "trained sgdml on 16 committee frames" in out
    meta = json.loads((tmp_path / "qbc" / "model.json").read_text())
    assert meta["strategy_settings"]["committee"] == 2
    assert meta["strategy_settings"]["committee_steps"] == 1
    test = np.load(tmp_path / "qbc" / "test_indices.npy")
    idx = np.load(tmp_path / "qbc" / "train_indices.npy")
    assert len(np.unique(idx)) == 16 and not np.isin(idx, test).any()
    status, out, err = run_cli(
        capsys, "train", reference, *sgdml, "--strategy", "ggfps",
        "-o", tmp_path / "gg",
    )  # fmt: skip
    assert status == 0, err
    assert json.loads((tmp_path / "gg" / "model.json").read_text())["strategy"] == (
        "ggfps"
    )


@pytest.mark.slow
def test_bad_peer_settings_on_the_command_line(tmp_path, capsys, xtb_files):
    reference, _ = xtb_files
    base = ["train", reference, "--backend", "sgdml", "--size", "10"]
    cases = [
        (["--strategy", "committee", "--committee", "1"], "a committee of 1 model"),
        (
            ["--strategy", "quests", "--quests-bandwidth", "0"],
            "got --quests-bandwidth 0",
        ),
        (["--strategy", "quests", "--quests-bandwidth", "-1"], "bandwidth must be"),
        (["--strategy", "committee", "--committee", "x"], "not an integer"),
    ]
    for extra, message in cases:
        status, _, err = run_cli(capsys, *base, *extra, "-o", tmp_path / "m")
        assert_one_line_error(status, err, message)
    assert not (tmp_path / "m").exists()
