"""The applicability domain on real GFN2-xTB MD: independent MD inside, conformers out.

Measured on these fixtures (see BENCHMARKS.md for the shared data): with the old
threshold (leave-one-out nearest neighbour of the Ward subset, i.e. the next MD frame)
an independent 300 K MD of ethanol is flagged on ~98 % of its frames, and one of
butane on 100 %; the time-separated, permutation-aware threshold flags 0 % of both
and 100 % of butane's gauche conformer (the data is anti only).
"""

import json
import logging

import numpy as np
import pytest
from ase.build import molecule

from ase_flatten.clustering import cluster_dataset, cluster_features
from ase_flatten.descriptors import pairwise_distances
from ase_flatten.domain import (
    ApplicabilityDomain,
    DomainSettings,
    atom_permutations,
    column_permutations,
    hydrogen_groups,
)
from ase_flatten.exceptions import InputError
from ase_flatten.md_dataset import make_md_dataset


@pytest.fixture(scope="module")
def ethanol_300K():
    """An independent 100-frame ethanol MD at 300 K (the data: 500 K, seed 0)."""
    return make_md_dataset(
        "CH3CH2OH",
        n_frames=100,
        temperature_K=300,
        equilibration_fs=250,
        seed=1,
        progress=False,
    )


def test_equivalent_hydrogens_of_ethanol():
    atoms = molecule("CH3CH2OH")  # C(H3) C(H2) O H(O) H H(CH2) H H H(CH3)
    groups = hydrogen_groups(atoms.numbers, atoms.positions)
    assert [g.tolist() for g in groups] == [[6, 7, 8], [4, 5]]
    perms, total = atom_permutations(len(atoms), groups, cap=64)
    assert (len(perms), total) == (12, 12)
    np.testing.assert_array_equal(perms[0], np.arange(9))
    assert len({tuple(p) for p in perms}) == 12
    capped, total = atom_permutations(len(atoms), groups, cap=6)
    assert (len(capped), total) == (6, 12)  # the CH2's 2 would exceed the cap
    # a column gather is the descriptor of the permuted structure
    X = pairwise_distances(atoms.positions[None])
    for perm, cols in zip(perms, column_permutations(perms), strict=True):
        expected = pairwise_distances(atoms.positions[perm][None])
        np.testing.assert_allclose(X[:, cols], expected)


def test_rotated_methyl_is_the_same_geometry(xtb_dataset):
    domain = ApplicabilityDomain().fit(xtb_dataset.numbers, xtb_dataset.positions)
    frame = xtb_dataset.positions[10]
    swapped = frame.copy()
    swapped[[6, 7, 8]] = frame[[7, 8, 6]]  # the methyl turned by 120 degrees
    assert domain.distance(swapped)[0] < 1e-6
    plain = ApplicabilityDomain(DomainSettings(permute_hydrogens=False))
    plain.fit(xtb_dataset.numbers, xtb_dataset.positions)
    assert plain.distance(swapped)[0] > 1.0


@pytest.mark.slow
def test_independent_md_stays_inside(xtb_dataset, ethanol_300K):
    domain = ApplicabilityDomain().fit(xtb_dataset.numbers, xtb_dataset.positions)
    assert domain.outside(ethanol_300K.positions).mean() <= 0.05
    # the old threshold measured time correlation: it flags most of the same MD
    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=3)
    X = clusters.describe(ethanol_300K.positions)
    X = cluster_features(X, ethanol_300K.energies)
    _, old = clusters.predict(X, return_distance=True)
    assert (old > clusters.domain_threshold()).mean() > 0.5
    # skipping time neighbours is what raises the threshold
    adjacent = ApplicabilityDomain(DomainSettings(exclude_frames=0))
    adjacent.fit(xtb_dataset.numbers, xtb_dataset.positions)
    assert domain.threshold_ > 1.5 * adjacent.threshold_


@pytest.mark.slow
def test_unseen_conformer_is_outside(butane, caplog):
    data, independent, gauche = butane
    with caplog.at_level(logging.WARNING, logger="ase_flatten.domain"):
        domain = ApplicabilityDomain().fit(data.numbers, data.positions)
    # 2 methyls and 2 CH2: 6 * 2 * 2 * 6 = 144 permutations, capped at 64
    assert (len(domain.permutations_), domain.n_permutations_total) == (24, 144)
    assert "24 of 144 permutations" in caplog.text
    assert domain.outside(independent.positions).mean() <= 0.05
    assert domain.outside(gauche.positions).mean() >= 0.9


def test_save_and_load(tmp_path, xtb_dataset):
    settings = DomainSettings(exclude_frames=5, max_permutations=6, percentile=99.0)
    domain = ApplicabilityDomain(settings).fit(
        xtb_dataset.numbers, xtb_dataset.positions
    )
    domain.save(tmp_path / "domain.npz")
    loaded = ApplicabilityDomain.load(tmp_path / "domain.npz")
    assert loaded.settings == settings
    assert loaded.threshold_ == domain.threshold_
    probe = xtb_dataset.positions[:20] * 1.02
    np.testing.assert_allclose(loaded.distance(probe), domain.distance(probe))
    assert json.dumps(loaded.summary())  # JSON-ready for model.json

    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(InputError, match="junk.npz: not a domain file"):
        ApplicabilityDomain.load(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="fitted on 9 atoms, got 3"):
        domain.distance(np.zeros((1, 3, 3)))


def test_model_saved_before_the_domain_still_loads(tmp_path, caplog, xtb_dataset):
    """An older model directory (no domain.npz) keeps its stored threshold."""
    from ase_flatten.backends import make_backend
    from ase_flatten.calculator import FlattenedCalculator
    from ase_flatten.models import load_model, save_model

    train = np.arange(0, 150, 10)
    backend = make_backend("sgdml", sigma=20).fit(xtb_dataset, train)
    clusters = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=2)
    path = save_model(tmp_path / "m", backend, train, xtb_dataset, clusters=clusters)
    assert load_model(path).domain is not None
    (path / "domain.npz").unlink()
    meta = json.loads((path / "model.json").read_text())
    meta.pop("domain")
    meta["domain_threshold"] = clusters.domain_threshold()
    (path / "model.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="ase_flatten.models"):
        saved = load_model(path)
    assert "saved without a calibrated domain" in caplog.text
    assert saved.domain is None
    assert saved.domain_threshold == pytest.approx(clusters.domain_threshold())
    atoms = xtb_dataset.to_atoms(3)
    atoms.calc = FlattenedCalculator(saved, domain=True)
    atoms.get_potential_energy()
    assert atoms.calc.results["domain_distance"] < 1e-6
    assert atoms.calc.results["outside_domain"] is False


def test_short_data_skips_fewer_neighbours(caplog, xtb_dataset):
    with caplog.at_level(logging.WARNING, logger="ase_flatten.domain"):
        domain = ApplicabilityDomain().fit(
            xtb_dataset.numbers, xtb_dataset.positions[:12]
        )
    assert "skipping within 5" in caplog.text
    assert np.isfinite(domain.calibration_distances_).all()
    with pytest.raises(InputError, match="at least 2 frames"):
        ApplicabilityDomain().fit(xtb_dataset.numbers, xtb_dataset.positions[:1])


class _Recording(ApplicabilityDomain):
    """Records the BLAS threads each nearest-neighbour search runs on."""

    threads: list = []

    def _nearest(self, queries, times=None):
        from threadpoolctl import threadpool_info

        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        self.threads = [*self.threads, max(blas)]
        return super()._nearest(queries, times)


@pytest.mark.slow
def test_one_structure_runs_blas_on_one_thread(xtb_dataset, ethanol_300K):
    """A calculator's single-structure look-up skips BLAS threads (on a busy
    machine they made it cost 5-25 ms instead of 0.5); same distances as a
    direct search over every reference frame and permutation."""
    from threadpoolctl import threadpool_info, threadpool_limits

    domain = _Recording().fit(xtb_dataset.numbers, xtb_dataset.positions)
    with threadpool_limits(2, user_api="blas"):
        before = [
            p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"
        ]
        if max(before) < 2:
            pytest.skip("BLAS cannot run on two threads here")
        domain.threads = []
        one = np.array([domain.distance(p)[0] for p in ethanol_300K.positions[:10]])
        assert domain.threads == [1] * 10
        batch = domain.distance(ethanol_300K.positions)  # a batch keeps its threads
        assert domain.threads[-1] == 2
        after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert after == before  # restored
    np.testing.assert_allclose(one, batch[:10], rtol=0, atol=1e-12)
    X = pairwise_distances(ethanol_300K.positions[:10])
    R = domain.reference_descriptors_
    direct = np.full(10, np.inf)
    for cols in domain._columns():
        d = np.linalg.norm(X[:, cols][:, None, :] - R[None], axis=2).min(axis=1)
        direct = np.minimum(direct, d)
    np.testing.assert_allclose(one, direct, rtol=0, atol=1e-12)
