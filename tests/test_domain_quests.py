"""The QUESTS applicability domain (``--domain quests``) on real GFN2-xTB MD.

Its score is QUESTS' dH of a structure's most novel atomic environment against
the data's environments; its threshold is calibrated on time-separated frames, as
the distance domain's is. The comparison with the distance domain on the shared
data is in BENCHMARKS.md ("Two domain scores compared").
"""

import importlib.util
import json
import sys

import numpy as np
import pytest

from ase_flatten.domain import (
    ApplicabilityDomain,
    QuestsDomain,
    QuestsDomainSettings,
    load_domain,
    make_domain,
)
from ase_flatten.exceptions import InputError
from tests.test_cli import assert_one_line_error, run_cli

needs_quests = pytest.mark.skipif(
    importlib.util.find_spec("quests") is None,
    reason="the quests domain needs QUESTS (the extra 'quests')",
)


@pytest.mark.slow  # QUESTS' kernel sum compiles with numba: 20 s
@needs_quests
def test_novelty_is_quests_delta_entropy():
    from quests.entropy import delta_entropy

    from ase_flatten.quests import novelty

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 15))
    queries = np.concatenate([reference[:5] + 0.05, rng.normal(size=(5, 15)) + 3])
    h = 0.8
    expected = delta_entropy(queries, reference, h=h)
    np.testing.assert_allclose(novelty(queries, reference, h), expected, rtol=1e-9)
    # far from everything: large and finite where QUESTS' -log(0) is inf
    far = novelty(reference[:1] + 100, reference, h)
    assert np.isfinite(far).all() and far[0] > 1e3
    # skipped reference environments are left out of the sum
    skip_all_but_first = np.ones((1, 300), bool)
    skip_all_but_first[0, 0] = False
    one = novelty(queries[:1], reference, h, lambda a, b: skip_all_but_first)
    d2 = np.sum((queries[0] - reference[0]) ** 2)
    assert one[0] == pytest.approx(d2 / (2 * h**2))


@needs_quests
def test_quests_domain_fit_save_load(tmp_path, xtb_dataset):
    from ase_flatten import quests

    settings = QuestsDomainSettings(exclude_frames=5, max_reference=100)
    domain = QuestsDomain(settings).fit(xtb_dataset.numbers, xtb_dataset.positions)
    assert len(domain.reference_indices_) == 100
    assert domain.reference_descriptors_.shape == (100 * 9, 15)  # k = 8 for ethanol
    X = quests.frame_descriptors(xtb_dataset.numbers, xtb_dataset.positions[:3])
    np.testing.assert_allclose(
        X.reshape(-1, 15),
        np.concatenate(
            quests.environment_descriptors(
                xtb_dataset.numbers, xtb_dataset.positions[:3]
            )
        ),
    )
    # the threshold: the 99.5th percentile of the held-out calibration scores
    assert domain.threshold_ == pytest.approx(
        np.percentile(domain.calibration_distances_, 99.5)
    )
    # a reference frame is covered by itself: far below its held-out score
    inside = domain.distance(xtb_dataset.positions[domain.reference_indices_[:20]])
    assert (inside < domain.calibration_distances_[:20]).all()
    # a frame stretched by 15 % is new everywhere
    assert domain.outside(xtb_dataset.positions[:5] * 1.15).all()

    domain.save(tmp_path / "domain.npz")
    loaded = load_domain(tmp_path / "domain.npz")
    assert isinstance(loaded, QuestsDomain) and loaded.settings == settings
    probe = xtb_dataset.positions[:10] * 1.02
    np.testing.assert_allclose(loaded.distance(probe), domain.distance(probe))
    assert loaded.threshold_ == domain.threshold_
    assert json.dumps(loaded.summary())  # JSON-ready for model.json
    # a distance-domain file still loads as one (no kind recorded)
    plain = ApplicabilityDomain().fit(xtb_dataset.numbers, xtb_dataset.positions)
    plain.save(tmp_path / "plain.npz")
    assert isinstance(load_domain(tmp_path / "plain.npz"), ApplicabilityDomain)
    with pytest.raises(InputError, match="fitted on 9 atoms"):
        domain.distance(np.zeros((1, 3, 3)))
    with pytest.raises(InputError, match="bandwidth must be positive, got 0"):
        QuestsDomain(QuestsDomainSettings(bandwidth=0.0))
    with pytest.raises(InputError, match="unknown domain 'knn'"):
        make_domain("knn")


def test_missing_quests_names_the_extra(monkeypatch, capsys, tmp_path, xtb_file):
    monkeypatch.setitem(sys.modules, "quests.compression", None)  # import fails
    with pytest.raises(InputError, match=r"pip install 'ase-flatten\[quests\]'"):
        make_domain("quests")
    status, _, err = run_cli(
        capsys, "train", xtb_file, "--backend", "sgdml", "--size", 20,
        "--domain", "quests",
        "-o", tmp_path / "m",
    )  # fmt: skip
    assert_one_line_error(status, err, "--domain quests needs QUESTS", "[quests]")
    assert not (tmp_path / "m").exists()  # before any work


@needs_quests
def test_model_saved_with_the_quests_domain(tmp_path, xtb_dataset):
    from ase_flatten.backends import make_backend
    from ase_flatten.calculator import FlattenedCalculator
    from ase_flatten.clustering import cluster_dataset
    from ase_flatten.models import load_model, save_model

    train = np.arange(0, 150, 10)
    backend = make_backend("sgdml", sigma=20).fit(xtb_dataset, train)
    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=2)
    path = save_model(
        tmp_path / "m", backend, train, xtb_dataset, clusters=clusters, domain="quests"
    )
    meta = json.loads((path / "model.json").read_text())
    assert meta["domain"]["kind"] == "quests"
    saved = load_model(path)
    assert isinstance(saved.domain, QuestsDomain)
    where = saved.locate(np.concatenate([xtb_dataset.positions[:3], [
        xtb_dataset.positions[0] * 1.15]]))  # fmt: skip
    assert where.outside_domain.tolist() == [False, False, False, True]
    assert where.domain_distance[3] > saved.domain.threshold_
    atoms = xtb_dataset.to_atoms(3)
    atoms.calc = FlattenedCalculator(saved, domain=True)
    atoms.get_potential_energy()
    assert atoms.calc.results["outside_domain"] is False
    assert atoms.calc.results["domain_distance"] == pytest.approx(
        saved.domain.distance(xtb_dataset.positions[3])[0]
    )


@pytest.mark.slow
@needs_quests
def test_quests_domain_on_butane(butane):
    """Anti-only 500 K data: an independent anti MD inside, gauche outside."""
    data, independent, other = butane
    domain = QuestsDomain().fit(data.numbers, data.positions)
    assert domain.outside(independent.positions).mean() <= 0.05
    assert domain.outside(other.positions).mean() >= 0.9


@needs_quests
def test_train_with_domain_quests(tmp_path, capsys, xtb_file):
    from ase_flatten.data import read_dataset
    from ase_flatten.models import load_model

    status, _, err = run_cli(
        capsys, "train", xtb_file, "--backend", "sgdml", "-p", "sigma=20",
        "--size", 20, "--n-geometry", 3, "--n-energy", 2, "--domain", "quests",
        "-o", tmp_path / "m",
    )  # fmt: skip
    assert status == 0, err
    saved = load_model(tmp_path / "m")
    assert saved.domain.kind == "quests"
    # the data it was calibrated on lies inside, a stretched frame outside
    data = read_dataset(xtb_file).positions
    assert saved.locate(data).outside_domain.mean() <= 0.05
    assert saved.locate(data[0] * 1.15).outside_domain.all()
