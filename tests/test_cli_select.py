"""`ase-flatten select` and `ase-flatten compare` through the command line."""

import csv
import json

import numpy as np
import pytest

from tests.test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # selection runs that train models

LOOP = ["--init", "20", "--step", "8", "--iterations", "2", "--n-geometry", "3",
        "--n-energy", "2", "--n-fine", "12", "-p", "sigma=20"]  # fmt: skip
CLUSTERS = ["--n-geometry", "3", "--n-energy", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, xtb_files):
    from ase_flatten.cli.main import main

    reference, _ = xtb_files
    root = tmp_path_factory.mktemp("runs")
    train = ["train", str(reference), "--backend", "sgdml", "-p", "sigma=20"]
    assert main([*train, "--size", "36", *CLUSTERS, "-o", str(root / "random")]) == 0
    assert main(["select", str(reference), *LOOP, "-o", str(root / "flat")]) == 0
    return root


def test_select_writes_the_run(runs, capsys, xtb_files, tmp_path):
    history = json.loads((runs / "flat" / "history.json").read_text())
    assert [h["n_train"] for h in history] == [20, 28, 36]
    reference, _ = xtb_files
    status, out, err = run_cli(capsys, "select", reference, *LOOP, "-o", tmp_path / "s")
    assert status == 0, err
    assert "36 frames selected" in out and "error_curves.png" in out
    # the final line says against what it compares, with frames and intervals
    assert "against the first iteration's model (20 random frames)" in out
    assert "growing the training set from 20 to 36 frames" in out
    final = json.loads((tmp_path / "s" / "history.json").read_text())[-1]["test"]
    low, high = final["max_cluster_force_rmse_ci95"]
    assert low <= final["max_cluster_force_rmse"] <= high
    assert f"{final['max_cluster_frames']} test frames" in out
    assert "energy RMSE" in out
    np.testing.assert_array_equal(
        np.load(tmp_path / "s" / "train_indices.npy"),
        np.load(runs / "flat" / "train_indices.npy"),
    )
    status, _, err = run_cli(capsys, "select", reference, *LOOP, "-o", tmp_path / "s")
    assert_one_line_error(status, err, "exists and is not empty; use --resume")
    status, out, err = run_cli(
        capsys, "select", reference, *LOOP, "-o", tmp_path / "s", "--resume"
    )
    assert status == 0, err  # a finished run resumes to the same result
    # the clustering options are settings of the run, as in `cluster`
    config = json.loads((tmp_path / "s" / "config.json").read_text())["config"]
    assert (config["descriptor"], config["assign"], config["reduce"]) == (
        "distances",
        "average",
        None,
    )
    status, _, err = run_cli(
        capsys, "select", reference, *LOOP, "-o", tmp_path / "s", "--resume",
        "--descriptor", "inverse",
    )  # fmt: skip
    assert_one_line_error(status, err, "other settings (descriptor)")


def test_error_sample_default_and_the_whole_pool(runs, capsys, xtb_files, tmp_path):
    """Each cluster's error from 10 of its frames unless --error-sample 0, which
    predicts every pool frame (the paper)."""
    config = json.loads((runs / "flat" / "config.json").read_text())["config"]
    assert config["error_sample"] == 10
    first = json.loads((runs / "flat" / "history.json").read_text())[0]["why"]
    assert first["evaluated_frames"] <= 10 * 6
    reference, _ = xtb_files
    argv = ["select", reference, *LOOP, "--iterations", "1", "--error-sample", "0"]
    status, _, err = run_cli(capsys, *argv, "-o", tmp_path / "whole")
    assert status == 0, err
    config = json.loads((tmp_path / "whole" / "config.json").read_text())["config"]
    assert config["error_sample"] is None
    why = json.loads((tmp_path / "whole" / "history.json").read_text())[0]["why"]
    assert why["evaluated_frames"] == why["predicted_frames"] > 10 * 6
    # a run that predicted the whole pool resumes only as it was started
    argv = ["select", reference, *LOOP, "--iterations", "1", "--resume"]
    status, _, err = run_cli(capsys, *argv, "-o", tmp_path / "whole")
    assert_one_line_error(status, err, "--error-sample 0: the whole pool")
    status, _, err = run_cli(
        capsys, *argv, "--error-sample", "0", "-o", tmp_path / "whole"
    )
    assert status == 0, err


def test_preset_and_single_rules(runs, capsys, xtb_files, tmp_path):
    """--preset paper is the default; a single flag changes one rule on top of a
    preset, and the run's config records every rule."""
    reference, _ = xtb_files
    argv = ["select", reference, *LOOP, "--preset", "paper", "--iterations", "1"]
    status, _, err = run_cli(capsys, *argv, "-o", tmp_path / "paper")
    assert status == 0, err
    history = json.loads((runs / "flat" / "history.json").read_text())
    mine = json.loads((tmp_path / "paper" / "history.json").read_text())
    assert mine[0]["added"] == history[0]["added"]  # the same frames as no preset
    status, _, err = run_cli(capsys, *argv, "--pick", "ranked", "-o", tmp_path / "r")
    assert status == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert (config["pick"], config["factor"], config["allocation"]) == (
        "ranked",
        1.1,
        "worst",
    )
    ranked = json.loads((tmp_path / "r" / "history.json").read_text())
    assert ranked[0]["added"] != history[0]["added"]
    status, _, err = run_cli(capsys, *argv, "--preset", "best", "-o", tmp_path / "b")
    assert_one_line_error(status, err, "invalid choice: 'best'")


def test_compare_default_and_flattened(runs, capsys, tmp_path):
    out_dir = tmp_path / "cmp"
    status, out, err = run_cli(
        capsys, "compare", runs / "random", runs / "flat", "-o", out_dir
    )
    assert status == 0, err
    rows = list(csv.DictReader(open(out_dir / "comparison.csv")))
    assert [r["run"] for r in rows] == ["random", "flat"]
    assert [r["strategy"] for r in rows] == ["random", "flatten"]
    assert float(rows[0]["max_cluster_ratio"]) == 1.0
    assert float(rows[0]["force_rmse_ratio"]) == 1.0
    data = json.loads((out_dir / "comparison.json").read_text())
    flat = np.array(data["cluster_force_rmse"]["flat"], dtype=float)
    assert float(rows[1]["max_cluster_force_rmse"]) == pytest.approx(np.nanmax(flat))
    worst5 = np.sort(flat[np.isfinite(flat)])[-5:].mean()
    assert float(rows[1]["worst5_force_rmse"]) == pytest.approx(worst5, rel=1e-5)
    assert float(rows[1]["force_rmse_kcal"]) == pytest.approx(
        float(rows[1]["force_rmse"]) * 23.0605, rel=1e-4
    )
    # per-cluster energy errors (Fig. 6, 7) weighted by cluster size give the overall
    frames = np.array(data["cluster_frames"], dtype=float)
    for row in rows:
        energy = np.array(data["cluster_energy_rmse"][row["run"]], dtype=float)
        seen = frames > 0
        overall = np.sqrt(np.sum(frames[seen] * energy[seen] ** 2) / frames.sum())
        assert float(row["energy_rmse"]) == pytest.approx(overall, rel=1e-5)
    assert (out_dir / "cluster_comparison.png").stat().st_size > 10_000


def test_compare_shows_energy_frames_and_intervals(runs, capsys, tmp_path):
    """Energy beside force; every worst-cluster number with its test frames and a
    seeded bootstrap 95 % interval."""
    argv = ("compare", runs / "random", runs / "flat")
    status, out, err = run_cli(capsys, *argv, "-o", tmp_path / "a")
    assert status == 0, err
    assert "energy RMSE eV [95 % CI]" in out and "worst cluster (test frames)" in out
    rows = list(csv.DictReader(open(tmp_path / "a" / "comparison.csv")))
    data = json.loads((tmp_path / "a" / "comparison.json").read_text())
    for row in rows:
        values = {k: float(v) for k, v in row.items() if k not in ("run", "strategy",
                  "backend")}  # fmt: skip
        assert values["test_frames"] == data["test_frames"] == 15
        for key in ("force_rmse", "energy_rmse", "max_cluster_force_rmse",
                    "worst5_force_rmse"):  # fmt: skip
            assert values[f"{key}_low"] <= values[key] <= values[f"{key}_high"]
            assert values[f"{key}_low"] < values[f"{key}_high"]
        worst = int(values["max_cluster"])
        assert values["max_cluster_frames"] == data["cluster_frames"][worst]
        assert f"{worst} ({int(values['max_cluster_frames'])})" in out
        assert 0 < values["worst5_frames"] <= 15
        assert f"{values['energy_rmse']:.4f} [" in out
    assert float(rows[0]["energy_rmse_ratio"]) == 1.0
    assert float(rows[1]["energy_rmse_ratio"]) == pytest.approx(
        float(rows[1]["energy_rmse"]) / float(rows[0]["energy_rmse"]), rel=1e-5
    )
    status, again, err = run_cli(capsys, *argv, "-o", tmp_path / "b")
    assert status == 0 and again == out.replace(
        str(tmp_path / "a"), str(tmp_path / "b")
    )


def test_compare_refuses_mismatched_runs(runs, capsys, tmp_path, xtb_files):
    reference, _ = xtb_files
    other = tmp_path / "other_split"
    status, _, err = run_cli(capsys, "train", reference, "--backend", "sgdml",
        "-p", "sigma=20", "--size", "20", "--split-seed", "5", *CLUSTERS,
        "-o", other)  # fmt: skip
    assert status == 0, err
    status, _, err = run_cli(
        capsys, "compare", runs / "random", other, "-o", tmp_path / "c"
    )
    assert_one_line_error(status, err, "other_split: has another test split")
    status, _, err = run_cli(
        capsys, "compare", runs / "random", tmp_path / "nothing", "-o", tmp_path / "c"
    )
    assert_one_line_error(status, err, "nothing: no such model directory")


def test_select_bad_input(capsys, tmp_path, xtb_files):
    reference, _ = xtb_files
    status, _, err = run_cli(
        capsys, "select", reference, "--init", "200", "-o", tmp_path / "x"
    )
    assert_one_line_error(status, err, "only 135 frames are outside the test split")
    status, _, err = run_cli(
        capsys, "select", reference, "--backend", "nequip", "-o", tmp_path / "x"
    )
    assert_one_line_error(status, err, "unknown backend 'nequip'")
    status, _, err = run_cli(
        capsys, "select", reference, "--criterion", "best", "-o", tmp_path / "x"
    )
    assert_one_line_error(status, err, "invalid choice: 'best'")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--factor", "-1"], "argument --factor: must be a number > 0, got -1"),
        (["--factor", "nan"], "argument --factor: must be a number > 0, got nan"),
        (["--step", "0"], "argument --step: must be a positive integer, got 0"),
        (["--iterations", "-2"], "argument --iterations: must be an integer >= 0"),
        (["--test-fraction", "1.5"], "argument --test-fraction: must be in [0, 1)"),
        (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
        (["-p", "use_sym=maybe"], "must be true or false, got 'maybe'"),
        (["-p", "lam=abc"], "sgdml: parameter lam must be a number > 0, got 'abc'"),
        # the library's own checks name the flags in a command line
        (["--diverse-share", "1"], "--diverse-share must be in [0, 1), got 1.0"),
        (["--warm-final"], "--warm-final needs --warm-start"),
        (["--backend", "gap", "--warm-start"], "--warm-start: the gap backend cannot"),
    ],
)
def test_select_refuses_bad_numbers(capsys, tmp_path, xtb_files, option, message):
    reference, _ = xtb_files
    status, _, err = run_cli(capsys, "select", reference, *option, "-o", tmp_path / "x")
    assert_one_line_error(status, err, message)
    assert not (tmp_path / "x").exists()


def test_compare_leaves_out_test_frames_equal_to_training_frames(
    capsys, tmp_path, xtb_dataset
):
    """A file holding frames twice: a test frame equal to a training frame is not
    a test frame."""
    doubled = tmp_path / "doubled.extxyz"
    xtb_dataset.write(doubled, np.r_[np.arange(75), np.arange(75)])
    argv = ("train", doubled, "--backend", "sgdml", "-p", "sigma=20", *CLUSTERS)
    status, _, err = run_cli(capsys, *argv, "--size", "60", "-o", tmp_path / "m")
    assert status == 0, err
    train = np.load(tmp_path / "m" / "train_indices.npy") % 75
    test = np.load(tmp_path / "m" / "test_indices.npy")
    duplicates = int(np.isin(test % 75, train).sum())
    assert 0 < duplicates < len(test)
    status, out, err = run_cli(capsys, "compare", tmp_path / "m", "-o", tmp_path / "c")
    assert status == 0, err
    data = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert data["left_out_test_frames"] == duplicates
    assert data["test_frames"] == len(test) - duplicates
    assert f"{duplicates} test frames equal to training frames left out" in out


@pytest.fixture(scope="module")
def hotter(tmp_path_factory):
    """24 frames of ethanol GFN2-xTB MD at 650 K: never in the 500 K data."""
    from ase_flatten.md_dataset import make_md_dataset

    path = tmp_path_factory.mktemp("extra") / "ethanol_650K.extxyz"
    make_md_dataset(
        "CH3CH2OH",
        n_frames=24,
        temperature_K=650,
        equilibration_fs=100,
        seed=3,
        progress=False,
    ).write(path)
    return path


def test_compare_extra_test_and_tail(runs, capsys, tmp_path, hotter):
    """Every model on a hotter trajectory too; the per-atom tail; every ratio to
    the first run with a paired interval."""
    from ase_flatten.comparison import load_frame_errors

    argv = ("compare", runs / "random", runs / "flat", "--extra-test", hotter)
    status, out, err = run_cli(capsys, *argv, "-o", tmp_path / "c")
    assert status == 0, err
    rows = list(csv.DictReader(open(tmp_path / "c" / "comparison.csv")))
    data = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert data["extra_test"]["frames"] == 24
    assert data["extra_test"]["path"] == str(hotter)
    tests, extras = load_frame_errors(tmp_path / "c" / "frame_errors.npz")
    for row in rows:
        v = {k: float(x) for k, x in row.items() if k not in ("run", "strategy",
             "backend")}  # fmt: skip
        assert v["extra_test_frames"] == 24
        for key in ("atom_error_p99", "atom_error_max", "extra_force_rmse",
                    "extra_atom_error_p99", "max_cluster_ratio",
                    "atom_error_p99_ratio", "extra_force_rmse_ratio"):  # fmt: skip
            assert v[f"{key}_low"] <= v[key] <= v[f"{key}_high"], key
        assert v["atom_error_max"] >= v["atom_error_p99"] > v["force_rmse"]
        # the hotter trajectory is harder than the data's own test split
        assert v["extra_force_rmse"] > v["force_rmse"]
        extra = extras[row["run"]].statistics()
        assert v["extra_force_rmse"] == pytest.approx(extra["force_rmse"], rel=1e-5)
        assert v["atom_error_p99"] == pytest.approx(
            tests[row["run"]].statistics()["atom_error_p99"], rel=1e-5
        )
        assert v["atom_error_p99_kcal"] == pytest.approx(
            v["atom_error_p99"] * 23.0605, rel=1e-4
        )
    first, second = rows
    for key in ("force_rmse_ratio", "max_cluster_ratio", "extra_force_rmse_ratio"):
        assert (first[key], first[f"{key}_low"], first[f"{key}_high"]) == ("1",) * 3
    assert float(second["extra_force_rmse_ratio"]) == pytest.approx(
        float(second["extra_force_rmse"]) / float(first["extra_force_rmse"]),
        rel=1e-5,
    )
    assert "extra test" in out and "p99/1st [95 % CI]" in out
    assert f"{float(second['extra_force_rmse']):.4f} [" in out


def test_compare_refuses_an_extra_test_of_training_data(
    runs, capsys, tmp_path, xtb_dataset, hotter
):
    from ase.io import read, write

    mixed = tmp_path / "mixed.extxyz"
    train = int(np.load(runs / "flat" / "train_indices.npy")[0])
    xtb_dataset.write(tmp_path / "one.extxyz", [train])
    write(mixed, read(hotter, ":") + read(tmp_path / "one.extxyz", ":"))
    argv = ("compare", runs / "random", runs / "flat", "--extra-test", mixed)
    status, _, err = run_cli(capsys, *argv, "-o", tmp_path / "c")
    assert_one_line_error(
        status, err, "mixed.extxyz: 1 of its 25 frames (the first: frame 24)",
        "never in the training data",
    )  # fmt: skip
    assert not (tmp_path / "c").exists()
    other = tmp_path / "other.extxyz"
    write(other, read(hotter, ":3"))
    atoms = read(other, ":")
    for frame in atoms:
        frame.numbers[[0, 3]] = frame.numbers[[3, 0]]  # another atom order
    write(other, atoms)
    status, _, err = run_cli(capsys, *argv[:3], "--extra-test", other, "-o",
                             tmp_path / "c")  # fmt: skip
    assert_one_line_error(status, err, "other.extxyz: holds", "same molecule")


def test_errors_extra_test(runs, capsys, tmp_path, xtb_files, hotter):
    reference, predicted = xtb_files
    argv = ("errors", reference, "--model", runs / "random", *CLUSTERS)
    status, out, err = run_cli(
        capsys, *argv, "--extra-test", hotter, "-o", tmp_path / "e"
    )
    assert status == 0, err
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    extra = summary["extra_test"]
    assert extra["n_frames"] == 24 and extra["path"] == str(hotter)
    low, high = extra["ci95"]["force_rmse"]
    assert low <= extra["force_rmse"] <= high
    assert extra["force_rmse"] > summary["force_rmse"]
    assert extra["force_rmse_kcal"] == pytest.approx(
        extra["force_rmse"] * 23.0605, rel=1e-4
    )
    low, high = summary["ci95"]["atom_error_p99"]
    assert low <= summary["atom_error_p99"] <= high <= summary["atom_error_max"]
    assert f"extra test set (24 frames): force RMSE {extra['force_rmse']:.4f}" in out
    assert f"({summary['max_cluster_frames']} frames)" in out
    assert f"p99 {summary['atom_error_p99']:.4f} eV/Å" in out
    # predictions from a file cannot predict the extra frames
    status, _, err = run_cli(capsys, "errors", reference, "--predicted", predicted,
                             "--extra-test", hotter, "-o", tmp_path / "p")  # fmt: skip
    assert_one_line_error(status, err, "--extra-test needs a model")
    # frames the model trained on, though not in DATA
    from ase_flatten.data import read_dataset

    train = np.load(runs / "random" / "train_indices.npy")
    path = tmp_path
    dataset = read_dataset(reference)
    dataset.write(path / "data.extxyz", np.setdiff1d(np.arange(150), train))
    dataset.write(path / "trained.extxyz", train[:3])
    status, _, err = run_cli(capsys, "errors", path / "data.extxyz", "--model",
                             runs / "random", *CLUSTERS, "--extra-test",
                             path / "trained.extxyz", "-o", path / "t")  # fmt: skip
    assert_one_line_error(
        status, err, "trained.extxyz: 3 of its 3 frames", "random trained or validated"
    )
    assert not (path / "t").exists()
