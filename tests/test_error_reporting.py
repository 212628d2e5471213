"""Errors keep their cause: ``-T`` shows it, a dead worker is not a user error."""

import argparse
import subprocess
import sys

import numpy as np
import pytest

from ase_flatten.cli.runtime import execute
from ase_flatten.exceptions import InputError, RunError
from ase_flatten.oracle import LabelStore, Oracle, label_frames
from md_validation.cli import main as md_validate
from tests.test_cli import assert_one_line_error, run_cli

BAD_XYZ = "3\ncomment\nC 0 0 0\nH 1 x 0\nH 0 1 0\n"  # 'x' is not a number


def _ase_flatten(*argv, cwd):
    command = [sys.executable, "-m", "ase_flatten.cli.main", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_bad_input_is_one_line_and_minus_t_shows_the_cause(tmp_path):
    (tmp_path / "bad.xyz").write_text(BAD_XYZ)
    plain = _ase_flatten("cluster", "bad.xyz", "-o", "c.npz", cwd=tmp_path)
    assert_one_line_error(plain.returncode, plain.stderr, "bad.xyz: cannot read")
    assert plain.stderr.startswith("ase-flatten cluster: error: bad.xyz: cannot read")
    assert "could not convert string to float: 'x'" in plain.stderr

    full = _ase_flatten("-T", "cluster", "bad.xyz", "-o", "c.npz", cwd=tmp_path)
    assert full.returncode == 2  # the same status, with the traceback
    err = full.stderr
    assert err.count("Traceback (most recent call last)") == 2, err
    # the parser's own exception, then the one-line error it caused
    cause = err.index("ValueError: could not convert string to float: 'x'")
    link = err.index("The above exception was the direct cause")
    assert cause < link < err.index("InputError: bad.xyz: cannot read as a traj")
    assert "ase-flatten cluster: error:" not in err
    assert not (tmp_path / "c.npz").exists()


def test_minus_t_after_the_command_and_in_md_validate(tmp_path, capsys):
    missing = tmp_path / "missing.extxyz"
    status, _, err = run_cli(capsys, "cluster", "-T", missing, "-o", "c.npz")
    assert status == 2 and "Traceback" in err and "InputError" in err
    argv = ["--model", f"a={tmp_path / 'none'}", "--start", missing]
    argv += ["-o", tmp_path / "out"]
    status, _, err = run_cli(capsys, *argv, entry=md_validate)
    assert_one_line_error(status, err, "md-validate: error:", "no such model")
    status, _, err = run_cli(capsys, "-T", *argv, entry=md_validate)
    assert status == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("ase_flatten.exceptions.Input")


def _label_with_dying_workers(tmp_path):
    positions = np.array([[[0, 0, 0], [1.1, 0, 0]], [[0, 0, 0], [1.2, 0, 0]]])
    oracle = Oracle("tests.oracle_factories:dies_in_workers")
    store = LabelStore(tmp_path / "labels")
    return label_frames([6, 1], positions, oracle, store, jobs=2, progress=False)


@pytest.mark.slow
def test_a_dead_label_worker_is_a_run_error_not_an_input_error(tmp_path, capsys):
    with pytest.raises(RunError, match="a label worker process died") as info:
        _label_with_dying_workers(tmp_path)
    assert not isinstance(info.value, InputError)
    assert type(info.value.__cause__).__name__ == "BrokenProcessPool"

    def run(args):  # the command line meets that very failure
        raise info.value

    args = argparse.Namespace(verbose=False, quiet=False)
    assert execute("ase-flatten select", run, args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ase-flatten select: error: oracle tests.oracle_fa")
    assert "label worker process died" in lines[0] and "-T" in lines[0]
    args.traceback = True
    assert execute("ase-flatten select", run, args) == 1
    err = capsys.readouterr().err
    assert "BrokenProcessPool" in err and "The above exception was the direct" in err
    assert err.strip().splitlines()[-1].startswith("ase_flatten.exceptions.RunError")


def _damaged_files(folder):
    """Files a loader may meet instead of its own, each as name -> bytes."""
    import io
    import pickle

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=rng.normal(size=2000), y=np.arange(100))
    archive = buffer.getvalue()
    flipped = bytearray(archive)
    flipped[len(flipped) // 3] ^= 0xFF  # inside the compressed data
    other = io.BytesIO()
    np.savez(other, unrelated=np.arange(3))
    floats = io.BytesIO()
    np.save(floats, np.array([0.5, 1.5]))
    return {
        "empty": b"",
        "text": b"not a numpy file at all\n" * 4,
        "pickle": pickle.dumps({"seen": [1, 2]}),
        "truncated": archive[: len(archive) // 2],
        "bit-flipped": bytes(flipped),
        "other keys": other.getvalue(),
        "an npy": floats.getvalue(),
    }


def test_damaged_files_are_one_line_input_errors_with_their_cause(tmp_path):
    from ase_flatten.backends.sgdml import read_model
    from ase_flatten.clustering import load_clusters
    from ase_flatten.data import read_dataset
    from ase_flatten.domain import ApplicabilityDomain
    from ase_flatten.models import _read_hashes, load_indices

    loaders = {
        "indices.npy": load_indices,
        "frame_hashes.npz": _read_hashes,
        "clusters.npz": load_clusters,
        "domain.npz": ApplicabilityDomain.load,
        "md17.npz": read_dataset,
        "sgdml_model.npz": read_model,
    }
    for kind, content in _damaged_files(tmp_path).items():
        for name, load in loaders.items():
            path = tmp_path / kind.replace(" ", "_") / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(content)
            with pytest.raises(InputError) as info:
                load(path)
            message = str(info.value)
            assert message.startswith(str(path)) and "\n" not in message, (kind, name)
            # the reader's own exception stays attached where there was one
            cause = info.value.__cause__
            assert cause is None or not isinstance(cause, InputError), (kind, name)
