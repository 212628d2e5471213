"""Measures beside the worst cluster: the per-atom tail, paired bootstrap ratios,
the extra test set; on synthetic arrays with known answers."""

import numpy as np
import pytest

from ase_flatten.comparison import load_frame_errors, write_frame_errors
from ase_flatten.data import Dataset
from ase_flatten.error_analysis import (
    KCAL_MOL,
    STATISTICS,
    atom_force_errors,
    bootstrap_ratios,
    cluster_errors,
    mean_ratios,
    read_extra_test,
)
from ase_flatten.exceptions import InputError
from tests.helpers import random_dataset


def errors_of(reference, scale=1.0, seed=0, labels=None, n_clusters=4):
    """Errors of predictions off by Gaussian noise of width ``scale`` eV/Å."""
    rng = np.random.default_rng(seed)
    n = len(reference)
    forces = reference.forces + scale * rng.normal(size=reference.forces.shape)
    energies = reference.energies + scale * rng.normal(size=n)
    if labels is None:
        labels = np.arange(n) % n_clusters
    return cluster_errors(reference, energies, forces, labels)


def test_tail_is_the_99th_percentile_and_maximum_of_atom_error_norms():
    """200 atoms (100 frames x 2) with force errors 0.01, 0.02, ..., 2.00 eV/Å along
    x: the 99th percentile (linear) is 1.9801 and the maximum 2.00."""
    n_frames, n_atoms = 100, 2
    reference = random_dataset(n_frames=n_frames, n_atoms=n_atoms)
    norms = 0.01 * np.arange(1, 201)[np.random.default_rng(3).permutation(200)]
    shift = np.zeros((n_frames, n_atoms, 3))
    shift[..., 0] = -norms.reshape(n_frames, n_atoms)  # a sign does not matter
    errors = cluster_errors(
        reference,
        reference.energies,
        reference.forces + shift,
        np.zeros(n_frames, dtype=int),
    )
    np.testing.assert_allclose(errors.atom_force_error, norms.reshape(100, 2))
    tail = errors.tail()
    assert tail["atom_error_p99"] == pytest.approx(1.9801)
    assert tail["atom_error_max"] == pytest.approx(2.0)
    summary = errors.summary()
    assert summary["atom_error_p99_kcal"] == pytest.approx(1.9801 / KCAL_MOL)
    assert summary["atom_error_max_kcal"] == pytest.approx(2.0 / 0.0433641, rel=1e-5)
    assert summary["max_cluster_frames"] == n_frames


def test_atom_force_errors_are_vector_norms():
    predicted = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]]])
    np.testing.assert_allclose(atom_force_errors(predicted, 0 * predicted), [[5, 2]])


def test_bootstrap_contains_the_estimate_is_seeded_and_narrows_with_frames():
    small = errors_of(random_dataset(n_frames=100, n_atoms=5, seed=1), 0.1)
    large = errors_of(random_dataset(n_frames=1600, n_atoms=5, seed=1), 0.1)
    values = small.statistics()
    interval = small.bootstrap(seed=0)
    assert set(interval) == set(STATISTICS) == set(values)
    for name in STATISTICS:
        low, high = interval[name]
        assert low <= values[name] <= high, name
    assert small.bootstrap(seed=0) == interval  # seeded: the same every time
    assert small.bootstrap(seed=1) != interval
    wide = large.bootstrap(seed=0)
    for name in ("force_rmse", "energy_rmse", "atom_error_p99"):
        # 16x the frames: about 4x narrower (1/sqrt(n))
        narrow = wide[name][1] - wide[name][0]
        assert narrow < 0.5 * (interval[name][1] - interval[name][0]), name
    # the maximum is never above the largest error: the interval ends there
    assert interval["atom_error_max"][1] == pytest.approx(values["atom_error_max"])


def test_paired_ratios_cancel_what_two_models_share():
    """A model whose every error is twice the reference's: every ratio is 2 in
    every resample (the same frames drawn for both), so the interval is [2, 2]."""
    reference = random_dataset(n_frames=200, n_atoms=3, seed=2)
    base = errors_of(reference, 0.1, seed=5)
    twice = cluster_errors(
        reference,
        reference.energies + 2 * base.frame_energy_error,
        reference.forces + 2 * (base.atom_force_error[..., None] * [1, 0, 0]),
        base.labels,
    )
    # forces are along x only: re-derive base's errors from the same vectors
    base = cluster_errors(
        reference,
        reference.energies + base.frame_energy_error,
        reference.forces + base.atom_force_error[..., None] * [1, 0, 0],
        base.labels,
    )
    ratios = bootstrap_ratios(twice, base)
    for name in STATISTICS:
        assert ratios[name] == pytest.approx((2, 2, 2)), name
    assert bootstrap_ratios(base, base)["force_rmse"] == (1.0, 1.0, 1.0)
    # another model of independent errors: a real interval around the ratio
    other = errors_of(reference, 0.12, seed=6, labels=base.labels)
    ratio, low, high = bootstrap_ratios(other, base)["force_rmse"]
    assert low < ratio < high
    assert ratio == pytest.approx(
        other.overall["force_rmse"] / base.overall["force_rmse"]
    )
    assert 1.0 < ratio < 1.4
    assert bootstrap_ratios(other, base) == bootstrap_ratios(other, base)
    mismatch = errors_of(random_dataset(n_frames=150, n_atoms=3), 0.1)
    with pytest.raises(ValueError, match="other frames"):
        bootstrap_ratios(mismatch, base)


def test_mean_ratios_over_seeds():
    """Two seeds with ratios 2 and 4 on the same frames: mean 3, and an interval
    of the mean as wide as the noise of the test frames allows."""
    reference = random_dataset(n_frames=300, n_atoms=3, seed=4)
    pairs = []
    for seed, factor in ((0, 2.0), (1, 4.0)):
        base = errors_of(reference, 0.1, seed=10 + seed)
        model = errors_of(reference, 0.1 * factor, seed=20 + seed, labels=base.labels)
        pairs.append((model, base))
    ratios = mean_ratios(pairs)
    single = [bootstrap_ratios(*pair)["force_rmse"][0] for pair in pairs]
    assert ratios["force_rmse"][0] == pytest.approx(np.mean(single))
    assert ratios["force_rmse"][0] == pytest.approx(3.0, rel=0.1)
    _, low, high = ratios["force_rmse"]
    assert low < ratios["force_rmse"][0] < high
    with pytest.raises(ValueError, match="different numbers of frames"):
        short = random_dataset(n_frames=100, n_atoms=3)
        mean_ratios([pairs[0], (errors_of(short), errors_of(short, seed=1))])


def test_frame_errors_file_gives_back_every_statistic(tmp_path):
    reference = random_dataset(n_frames=120, n_atoms=4, seed=7)
    runs = [errors_of(reference, s, seed=i) for i, s in enumerate((0.1, 0.2))]
    extras = [errors_of(reference, s, labels=np.zeros(120, int)) for s in (0.3, 0.4)]
    path = tmp_path / "frame_errors.npz"
    write_frame_errors(path, ["a", "b"], runs, extras)
    tables = load_frame_errors(path)
    assert list(tables[0]) == list(tables[1]) == ["a", "b"]
    for saved, loaded in zip(
        [*runs, *extras], [*tables[0].values(), *tables[1].values()], strict=True
    ):
        for name, value in saved.statistics().items():
            assert loaded.statistics()[name] == pytest.approx(value), name
        for name, interval in saved.bootstrap().items():
            assert loaded.bootstrap()[name] == pytest.approx(interval), name
    write_frame_errors(path, ["a"], runs[:1])
    assert load_frame_errors(path)[1] == {}


def test_extra_test_must_be_new_frames_of_the_same_molecule(tmp_path):
    data = random_dataset(n_frames=40, n_atoms=4, seed=0)
    hotter = random_dataset(n_frames=30, n_atoms=4, seed=0)
    hotter = Dataset(data.numbers, hotter.positions + 0.05, hotter.energies,
                     hotter.forces, source="hotter")  # fmt: skip
    path = tmp_path / "hotter.extxyz"
    hotter.write(path)
    extra = read_extra_test(path, data)
    assert len(extra) == 30
    mixed = tmp_path / "mixed.extxyz"
    Dataset(data.numbers, np.r_[hotter.positions, data.positions[7:9]],
            np.r_[hotter.energies, data.energies[7:9]],
            np.r_[hotter.forces, data.forces[7:9]]).write(mixed)  # fmt: skip
    with pytest.raises(InputError, match=r"2 of its 32 frames \(the first: frame 30\)"):
        read_extra_test(mixed, data)
    other = random_dataset(n_frames=10, n_atoms=4, seed=9)
    other.write(tmp_path / "other.extxyz")
    with pytest.raises(InputError, match="an extra test set must be of the same"):
        read_extra_test(tmp_path / "other.extxyz", data)


def load_suite():
    """benchmarks/suite.py as a module (benchmarks is no package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"
    spec = importlib.util.spec_from_file_location("suite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suite_tables_ratios_over_seeds(tmp_path):
    """The suite's measures: per seed from comparison.json, over seeds from the
    frame errors (one draw of test frames for every seed and both sets)."""
    import json

    from ase_flatten.comparison import _add_extra, _statistics

    suite = load_suite()
    reference = random_dataset(n_frames=200, n_atoms=3, seed=4)
    hot = random_dataset(n_frames=50, n_atoms=3, seed=5)
    rows = []
    for seed in range(3):
        labels = np.arange(200) % 5
        base = errors_of(reference, 0.1, seed=10 + seed, labels=labels)
        flat = errors_of(reference, 0.09, seed=20 + seed, labels=labels)
        extras = [errors_of(hot, s, seed=k + 3 * seed, labels=np.zeros(50, int))
                  for k, s in enumerate((0.2, 0.15))]  # fmt: skip
        table = []
        for name, errors in (("random", base), ("flatten", flat)):
            worst = int(errors.worst(1)[0])
            table.append({"run": name, "test_frames": 200,
                          "max_cluster_frames": int(errors.n_frames[worst]),
                          **_statistics(errors, base)})  # fmt: skip
        _add_extra(table, extras)
        out = tmp_path / f"seed{seed}" / "compare"
        out.mkdir(parents=True)
        (out / "comparison.json").write_text(json.dumps({"runs": table}))
        write_frame_errors(out / "frame_errors.npz", ["random", "flatten"],
                           [base, flat], extras)  # fmt: skip
        measures = suite.compared(out)
        for strategy in ("random", "flatten"):
            rows.append({"data": "d", "backend": "b", "strategy": strategy,
                         "seed": seed, "measures": measures[strategy]})  # fmt: skip
    entries = suite.measures_over_seeds(rows)
    flat = entries[1]
    assert flat["strategy"] == "flatten" and flat["seeds"] == [0, 1, 2]
    per_seed = [r["measures"]["extra_force_rmse_ratio"] for r in rows[1::2]]
    hotter = flat["extra_force_rmse_ratio"]
    assert hotter["mean"] == pytest.approx(np.mean([r[0] for r in per_seed]))
    assert hotter["sd"] == pytest.approx(np.std([r[0] for r in per_seed], ddof=1))
    low, high = hotter["ci95"]
    assert low < hotter["mean"] < high < 1.0  # 0.15 against 0.2: clearly lower
    # the mean over three seeds is known better than any one seed
    assert high - low < np.mean([r[2] - r[1] for r in per_seed])
    assert entries[0]["force_rmse_ratio"]["ci95"] == [1.0, 1.0]
    text = "\n".join(suite.measures_markdown({"measures": entries,
                                              "improvement": rows}))  # fmt: skip
    mean = f"{hotter['mean']:.2f} ± {hotter['sd']:.2f} [{low:.2f}, {high:.2f}]"
    assert mean in text
    assert "| d | b | flatten | 2 | " in text  # each seed's row
    assert "hotter p99 per atom" in text
