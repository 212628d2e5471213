import csv
import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from ase_flatten.cli.main import main
from ase_flatten.data import read_dataset
from tests.helpers import random_dataset

pytestmark = pytest.mark.slow  # whole command lines on real data

SMALL = ["--n-geometry", "3", "--n-energy", "4"]


def run_cli(capsys, *argv, entry=main):
    """Run ``ase-flatten argv`` (or ``entry``) in-process: (status, stdout, stderr)."""
    try:
        status = entry([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *needles):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cluster_writes_labels_and_is_deterministic(tmp_path, capsys, xtb_files):
    reference, _ = xtb_files
    status, out, _ = run_cli(
        capsys, "cluster", reference, "-o", tmp_path / "a.npz", *SMALL
    )
    assert status == 0
    assert "150 frames in 12 clusters" in out
    run_cli(capsys, "cluster", reference, "-o", tmp_path / "b.npz", *SMALL)
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["labels"].shape == (150,)
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(
        a["labels"], a["cluster_offsets"][a["geometry_labels"]] + a["energy_labels"]
    )
    assert str(a["fingerprint"]) == read_dataset(reference).fingerprint()


def test_cluster_refuses_to_overwrite(tmp_path, capsys, xtb_files):
    reference, _ = xtb_files
    out = tmp_path / "c.npz"
    assert run_cli(capsys, "cluster", reference, "-o", out, *SMALL)[0] == 0
    before = out.read_bytes()
    status, _, err = run_cli(
        capsys, "cluster", reference, "-o", out, "--seed", "3", *SMALL
    )
    assert_one_line_error(status, err, "c.npz: exists", "--overwrite")
    assert out.read_bytes() == before
    args = ("cluster", reference, "-o", out, "--overwrite", "--seed", "3", *SMALL)
    assert run_cli(capsys, *args)[0] == 0


def test_errors_report(tmp_path, capsys, xtb_files, xtb_dataset, gfn1_dataset):
    reference, predicted = xtb_files
    clusters = tmp_path / "clusters.npz"
    run_cli(capsys, "cluster", reference, "-o", clusters, *SMALL)
    report = tmp_path / "report"
    status, out, err = run_cli(
        capsys,
        "errors",
        reference,
        "--predicted",
        predicted,
        "--clusters",
        clusters,
        "-o",
        report,
        "--write-worst",
        "2",
        "--align-energies",
    )
    assert status == 0, err
    assert "cluster_errors.png" in out
    summary = json.loads((report / "summary.json").read_text())
    direct = np.sqrt(np.mean((gfn1_dataset.forces - xtb_dataset.forces) ** 2))
    assert summary["force_rmse"] == pytest.approx(direct, rel=1e-6)
    assert summary["n_frames"] == 150 and summary["n_clusters"] == 12
    assert summary["force_rmse_kcal"] == pytest.approx(direct * 23.0605, rel=1e-4)
    rows = list(csv.DictReader(open(report / "cluster_errors.csv")))
    rmse = [float(r["force_rmse"]) for r in rows]
    assert rmse == sorted(rmse) and len(rows) == 12
    assert max(rmse) == pytest.approx(summary["max_cluster_force_rmse"], rel=1e-5)
    assert (report / "cluster_errors.png").stat().st_size > 10_000
    worst = ase.io.read(report / "worst_clusters.extxyz", ":")
    assert len(worst) == int(rows[-1]["n_frames"]) + int(rows[-2]["n_frames"])
    assert {a.info["cluster"] for a in worst} == {
        int(rows[-1]["cluster"]),
        int(rows[-2]["cluster"]),
    }
    frame = worst[0].info["frame"]
    assert worst[0].calc is None  # the labels under MACE's keys, and why
    np.testing.assert_allclose(
        worst[0].arrays["REF_forces"], xtb_dataset.forces[frame], atol=1e-7
    )
    assert worst[0].info["REF_energy"] == pytest.approx(xtb_dataset.energies[frame])
    assert worst[0].info["config_type"] == f"worst_cluster{worst[0].info['cluster']}"


def test_errors_on_selections(tmp_path, capsys, xtb_files, xtb_dataset, gfn1_dataset):
    """DATA@SELECTION for the data, the predictions and the clusters' source."""
    reference, predicted = xtb_files
    report = tmp_path / "report"
    status, _, err = run_cli(
        capsys, "errors", f"{reference}@50:110", "--predicted", f"{predicted}@50:110",
        "-o", report, *SMALL,
    )  # fmt: skip
    assert status == 0, err
    summary = json.loads((report / "summary.json").read_text())
    frames = slice(50, 110)
    direct = np.sqrt(np.mean((gfn1_dataset.forces - xtb_dataset.forces)[frames] ** 2))
    assert summary["n_frames"] == 60 and summary["dataset"] == f"{reference}@50:110"
    assert summary["force_rmse"] == pytest.approx(direct, rel=1e-6)
    with np.load(report / "clusters.npz") as npz:
        assert str(npz["source"]) == f"{reference}@50:110"
        assert len(npz["labels"]) == 60


def test_errors_clusters_on_the_fly_equals_cluster_file(tmp_path, capsys, xtb_files):
    reference, predicted = xtb_files
    run_cli(capsys, "cluster", reference, "-o", tmp_path / "c.npz", *SMALL)
    args = ("errors", reference, "--predicted", predicted, *SMALL)
    assert run_cli(capsys, *args, "-o", tmp_path / "fly")[0] == 0
    assert (
        run_cli(
            capsys, *args, "-o", tmp_path / "file", "--clusters", tmp_path / "c.npz"
        )[0]
        == 0
    )
    fly = (tmp_path / "fly" / "cluster_errors.csv").read_text()
    assert fly == (tmp_path / "file" / "cluster_errors.csv").read_text()
    np.testing.assert_array_equal(
        np.load(tmp_path / "fly" / "clusters.npz")["labels"],
        np.load(tmp_path / "c.npz")["labels"],
    )


# -- bad input: one line naming the file and the problem, exit 2 ----------------


def test_bad_data_files(tmp_path, capsys):
    (tmp_path / "empty.xyz").write_text("")
    status, _, err = run_cli(
        capsys, "cluster", tmp_path / "empty.xyz", "-o", tmp_path / "c.npz"
    )
    assert_one_line_error(status, err, "empty.xyz: empty file")
    status, _, err = run_cli(
        capsys, "cluster", tmp_path / "none.xyz", "-o", tmp_path / "c.npz"
    )
    assert_one_line_error(status, err, "none.xyz: no such file")
    dataset = random_dataset(n_frames=4)
    dataset.forces[2, 1, 1] = np.nan
    dataset.write(tmp_path / "nan.extxyz")
    status, _, err = run_cli(
        capsys, "cluster", tmp_path / "nan.extxyz", "-o", tmp_path / "c.npz"
    )
    assert_one_line_error(status, err, "nan.extxyz: frame 2 has non-finite forces")
    random_dataset(n_frames=4).write(tmp_path / "noforces.xyz")
    frames = ase.io.read(tmp_path / "noforces.xyz", ":")
    for atoms in frames:
        atoms.calc = None
    ase.io.write(tmp_path / "noforces.xyz", frames)
    status, _, err = run_cli(
        capsys, "cluster", tmp_path / "noforces.xyz", "-o", tmp_path / "c.npz"
    )
    assert_one_line_error(status, err, "noforces.xyz: frame 0 has no energy")
    assert not (tmp_path / "c.npz").exists()


def test_too_few_frames_for_the_cluster_counts(tmp_path, capsys):
    random_dataset(n_frames=30).write(tmp_path / "small.extxyz")
    status, _, err = run_cli(
        capsys, "cluster", tmp_path / "small.extxyz", "-o", tmp_path / "c.npz"
    )
    assert_one_line_error(
        status, err, "small.extxyz: 30 frames are too few for 10 x 5 = 50 clusters"
    )


def test_bad_flags(tmp_path, capsys):
    status, _, err = run_cli(
        capsys, "cluster", "x.xyz", "-o", "c.npz", "--n-geometry", "0"
    )
    assert_one_line_error(status, err, "--n-geometry", "positive integer")
    status, _, err = run_cli(capsys, "cluster", "x.xyz", "-o", "c.npz", "--bogus")
    assert_one_line_error(status, err, "unrecognized arguments: --bogus")
    status, _, err = run_cli(capsys, "cluster", "x.xyz", "-o", "c.txt")
    assert_one_line_error(status, err, "c.txt: the output must be an .npz file")
    status, _, err = run_cli(capsys, "frobnicate")
    assert_one_line_error(status, err, "invalid choice")


def test_mismatched_predictions_and_clusters(tmp_path, capsys, xtb_files):
    reference, predicted = xtb_files
    other = random_dataset(n_frames=150, n_atoms=9)
    other.write(tmp_path / "other.extxyz")
    status, _, err = run_cli(
        capsys,
        "errors",
        reference,
        "--predicted",
        tmp_path / "other.extxyz",
        "-o",
        tmp_path / "r",
    )
    assert_one_line_error(status, err, "other.extxyz: holds")
    run_cli(
        capsys, "cluster", tmp_path / "other.extxyz", "-o", tmp_path / "o.npz", *SMALL
    )
    status, _, err = run_cli(
        capsys,
        "errors",
        reference,
        "--predicted",
        predicted,
        "--clusters",
        tmp_path / "o.npz",
        "-o",
        tmp_path / "r",
    )
    assert_one_line_error(status, err, "o.npz: a clustering of", "holds C2H6O")
    assert not (tmp_path / "r" / "summary.json").exists()


def test_console_script_entry_point(tmp_path):
    exe = str(Path(sys.executable).parent / "ase-flatten")
    result = subprocess.run(
        [
            exe,
            "errors",
            str(tmp_path / "missing.xyz"),
            "--predicted",
            "p.xyz",
            "-o",
            "r",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ase-flatten errors: error: {tmp_path / 'missing.xyz'}: no such file"
    )
    version = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip()


def test_cluster_with_a_reduced_descriptor(tmp_path, capsys, xtb_files):
    reference, _ = xtb_files
    out = tmp_path / "c.npz"
    status, _, err = run_cli(
        capsys, "cluster", reference, "-o", out, *SMALL, "--reduce", "kpca",
        "--components", "4",
    )  # fmt: skip
    assert status == 0, err
    saved = np.load(out)
    assert str(saved["reduction_method"]) == "kpca"
    assert saved["subset_descriptors"].shape[1] == 4


def test_building_the_parsers_imports_no_heavy_library():
    """Choices and defaults come from light modules; heavy imports wait for run."""
    code = (
        "import sys\n"
        "from ase_flatten.cli.main import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in ('sklearn', 'torch', 'matplotlib', 'scipy') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
