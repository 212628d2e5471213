import csv
import io

import numpy as np
import pytest
from ase import units

from ase_flatten.error_analysis import (
    KCAL_MOL,
    cluster_errors,
    predict_with_calculator,
    read_predictions,
)
from ase_flatten.exceptions import InputError
from ase_flatten.md_dataset import xtb_calculator
from tests.helpers import random_dataset


@pytest.fixture
def case():
    """Reference, predictions with cluster-dependent noise, and labels."""
    reference = random_dataset(n_frames=90, n_atoms=4)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=90)
    labels[:6] = np.arange(6)  # every cluster non-empty
    scale = 0.05 * (1 + labels)  # cluster 5 is the worst
    forces = (
        reference.forces
        + rng.normal(size=reference.forces.shape) * scale[:, None, None]
    )
    energies = reference.energies + 0.3 + rng.normal(size=90) * scale
    return reference, energies, forces, labels


def test_per_cluster_metrics_match_direct_computation(case):
    reference, energies, forces, labels = case
    errors = cluster_errors(reference, energies, forces, labels)
    for c in range(6):
        mask = labels == c
        df = forces[mask] - reference.forces[mask]
        de = energies[mask] - reference.energies[mask]
        assert errors.n_frames[c] == mask.sum()
        assert errors.force_rmse[c] == pytest.approx(np.sqrt(np.mean(df**2)))
        assert errors.force_mae[c] == pytest.approx(np.mean(np.abs(df)))
        assert errors.energy_rmse[c] == pytest.approx(np.sqrt(np.mean(de**2)))
        assert errors.energy_mae[c] == pytest.approx(np.mean(np.abs(de)))
    df = forces - reference.forces
    de = energies - reference.energies
    assert errors.overall["force_rmse"] == pytest.approx(np.sqrt(np.mean(df**2)))
    assert errors.overall["energy_mae"] == pytest.approx(np.mean(np.abs(de)))
    assert errors.energy_offset == pytest.approx(de.mean())
    frame = np.sqrt(np.mean(df.reshape(90, -1) ** 2, axis=1))
    np.testing.assert_allclose(errors.frame_force_rmse, frame)


def test_order_worst_and_summary(case):
    errors = cluster_errors(*case)
    order = errors.order()
    assert np.all(np.diff(errors.force_rmse[order]) >= 0)
    assert errors.worst(1)[0] == order[-1] == 5
    assert list(errors.worst(2)) == [order[-1], order[-2]]
    s = errors.summary()
    assert s["n_clusters"] == 6 and s["n_frames"] == 90
    assert s["max_cluster"] == 5
    assert s["max_ratio"] == pytest.approx(errors.force_rmse[5] / s["force_rmse"])
    assert s["min_ratio"] < 1 < s["max_ratio"]
    assert s["force_rmse_kcal"] == pytest.approx(s["force_rmse"] * 23.0605, rel=1e-4)
    assert s["units"]["force_kcal"] == "kcal/(mol Å)"
    np.testing.assert_array_equal(
        errors.frames_in([5]), np.flatnonzero(errors.labels == 5)
    )


def test_align_energies_removes_the_offset(case):
    reference, energies, forces, labels = case
    raw = cluster_errors(reference, energies, forces, labels)
    aligned = cluster_errors(reference, energies, forces, labels, align_energies=True)
    de = energies - reference.energies
    assert aligned.overall["energy_rmse"] == pytest.approx(np.std(de))
    assert raw.overall["energy_rmse"] > aligned.overall["energy_rmse"]
    assert aligned.overall["force_rmse"] == raw.overall["force_rmse"]


def test_csv_table(case):
    errors = cluster_errors(*case)
    rows = list(csv.DictReader(io.StringIO(errors.to_csv())))
    assert list(rows[0])[:6] == [
        "cluster",
        "n_frames",
        "force_rmse",
        "force_mae",
        "energy_rmse",
        "energy_mae",
    ]
    values = [float(r["force_rmse"]) for r in rows]
    assert values == sorted(values)
    for r in rows:
        assert float(r["force_rmse_kcal"]) == pytest.approx(
            float(r["force_rmse"]) / (units.kcal / units.mol), rel=1e-5
        )
    assert sum(int(r["n_frames"]) for r in rows) == 90


def test_empty_clusters_are_left_out(case):
    reference, energies, forces, labels = case
    errors = cluster_errors(
        reference, energies, forces, np.where(labels == 2, 7, labels)
    )
    assert errors.n_clusters == 6
    assert 2 not in errors.order() and 7 in errors.order()


def test_bad_predictions(case):
    reference, energies, forces, labels = case
    with pytest.raises(InputError, match="do not match"):
        cluster_errors(reference, energies[:-1], forces, labels)
    with pytest.raises(InputError, match="one integer cluster label per frame"):
        cluster_errors(reference, energies, forces, labels[:-1])
    bad = forces.copy()
    bad[3, 0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        cluster_errors(reference, energies, bad, labels)


def test_read_predictions_checks_the_frames(tmp_path, case):
    reference, energies, forces, _ = case
    predicted = random_dataset(n_frames=90, n_atoms=4)
    predicted.energies[:] = energies
    predicted.forces[:] = forces
    predicted.write(tmp_path / "pred.extxyz")
    e, f = read_predictions(tmp_path / "pred.extxyz", reference)
    np.testing.assert_allclose(e, energies, atol=1e-7)  # extxyz keeps 8 decimals
    np.testing.assert_allclose(f, forces, atol=1e-7)
    predicted.subset(range(80)).write(tmp_path / "short.extxyz")
    with pytest.raises(
        InputError, match="short.extxyz: 80 frames, but <random> has 90"
    ):
        read_predictions(tmp_path / "short.extxyz", reference)
    predicted.positions[10] += 0.01
    predicted.write(tmp_path / "moved.extxyz")
    with pytest.raises(InputError, match="moved.extxyz: frame 10 positions differ"):
        read_predictions(tmp_path / "moved.extxyz", reference)


@pytest.mark.slow
def test_gfn1_against_gfn2_with_a_calculator(xtb_dataset, gfn1_dataset):
    """Realistic case: GFN1-xTB as the 'model', GFN2-xTB as the reference."""
    from ase_flatten.clustering import cluster_dataset

    energies, forces = predict_with_calculator(
        xtb_dataset, xtb_calculator("GFN1-xTB"), progress=False
    )
    np.testing.assert_allclose(forces, gfn1_dataset.forces, atol=1e-10)
    labels = cluster_dataset(xtb_dataset, n_geometry=3, n_energy=3).labels_
    errors = cluster_errors(xtb_dataset, energies, forces, labels, align_energies=True)
    direct = np.sqrt(np.mean((forces - xtb_dataset.forces) ** 2))
    assert errors.overall["force_rmse"] == pytest.approx(direct, rel=1e-12)
    # GFN1 and GFN2 differ by tenths of eV/Å in forces and ~20 eV in the zero
    assert 0.05 < direct < 1.0
    assert abs(errors.energy_offset) > 1.0
    assert errors.overall["energy_rmse"] < 0.2
    assert errors.summary()["max_ratio"] > 1.0
    assert errors.overall["force_rmse"] / KCAL_MOL == pytest.approx(direct / KCAL_MOL)
