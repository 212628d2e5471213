import os
import re
import stat
import subprocess
import sys

import pytest

from ase_flatten.exceptions import InputError
from ase_flatten.files import (
    MARKER,
    RunFolder,
    atomic_directory,
    atomic_path,
    check_output_directory,
    check_output_file,
    check_writable,
    folder_lock,
    partial_directory,
    read_marker,
    read_marker_data,
    write_text,
)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.csv"
    write_text(path, "old\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["report.csv"]


def test_outputs_get_the_usual_permissions(tmp_path):
    """Not mkstemp's owner-only 0600: what open() would give under the umask."""
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_existing_outputs_are_refused_without_overwrite(tmp_path):
    write_text(tmp_path / "a.txt", "x")
    with pytest.raises(InputError, match="a.txt: exists; pass --overwrite"):
        check_writable([tmp_path / "b.txt", tmp_path / "a.txt"], overwrite=False)
    check_writable([tmp_path / "a.txt"], overwrite=True)


# -- output folders ----------------------------------------------------------------


def _listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_atomic_directory_makes_a_marked_folder_with_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "out", "ase-flatten errors") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.")
            (tmp / "a.txt").write_text("a")
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # not mkdtemp's 0700
    assert read_marker(out) == "ase-flatten errors"
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert sorted(os.listdir(out)) == [MARKER, "a.txt"]


def test_atomic_directory_replaces_as_a_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out, "cmd") as tmp:
        (tmp / "old.txt").write_text("old")
        (tmp / "stale.txt").write_text("stale")
    before = _listing(out)
    with pytest.raises(RuntimeError), atomic_directory(out, "cmd", True) as tmp:
        (tmp / "old.txt").write_text("half-new")
        raise RuntimeError("crash mid-way")
    assert _listing(out) == before
    with pytest.raises(KeyboardInterrupt), atomic_directory(out, "cmd", True) as tmp:
        raise KeyboardInterrupt
    assert _listing(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folders left
    with atomic_directory(out, "cmd", overwrite=True) as tmp:
        (tmp / "old.txt").write_text("new")
    assert sorted(os.listdir(out)) == [MARKER, "old.txt"]  # stale.txt is gone
    assert (out / "old.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_overwrite_replaces_only_earlier_outputs_of_the_same_command(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "traj.xyz").write_text("precious")
    cases = [
        (data, "cmd", "data: not an output of `cmd` (no .ase-flatten-output marker)"),
        (data / "traj.xyz", "cmd", "traj.xyz: is a file, not a folder"),
    ]
    with atomic_directory(tmp_path / "theirs", "other") as tmp:
        (tmp / "x").write_text("x")
    cases.append((tmp_path / "theirs", "cmd", "made by `other`"))
    for path, command, message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            with atomic_directory(path, command, overwrite=True):
                pass  # pragma: no cover
    assert (data / "traj.xyz").read_text() == "precious"
    assert (tmp_path / "theirs" / "x").exists()
    with pytest.raises(InputError, match="theirs: exists and is not empty; pass"):
        check_output_directory(tmp_path / "theirs", "other")
    check_output_directory(tmp_path / "theirs", "other", overwrite=True)


def test_an_input_of_the_run_is_never_the_output(tmp_path):
    with atomic_directory(tmp_path / "run", "cmd") as tmp:
        (tmp / "traj.xyz").write_text("data")
    for inputs in ([tmp_path / "run"], [tmp_path / "run" / "traj.xyz"]):
        with pytest.raises(InputError, match="run: is an input of this run"):
            check_output_directory(tmp_path / "run", "cmd", True, inputs)
    with pytest.raises(InputError, match="traj.xyz: is an input of this run"):
        check_output_file(
            tmp_path / "run" / "traj.xyz", True, [tmp_path / "run/traj.xyz"]
        )
    assert (tmp_path / "run" / "traj.xyz").read_text() == "data"


def test_output_files_must_be_files(tmp_path):
    with pytest.raises(InputError, match="is a folder; name an output file"):
        check_output_file(tmp_path)
    (tmp_path / "a.npz").write_text("x")
    with pytest.raises(InputError, match="a.npz: exists; pass --overwrite"):
        check_output_file(tmp_path / "a.npz")
    check_output_file(tmp_path / "a.npz", overwrite=True)


def test_an_unwritable_place_is_one_input_error(unwritable):
    with pytest.raises(InputError, match="cannot write there"):
        with atomic_directory(unwritable / "out", "cmd"):
            pass  # pragma: no cover
    with pytest.raises(InputError, match="cannot write there"):
        write_text(unwritable / "out" / "a.txt", "x")
    with pytest.raises(InputError, match="cannot write there"):
        write_text(unwritable / "a.txt", "x")


def test_dot_and_a_symlink_are_replaced_cleanly(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with atomic_directory(out, "cmd") as tmp:
        (tmp / "a.txt").write_text("old")
    monkeypatch.chdir(out)
    with atomic_directory(".", "cmd", overwrite=True) as tmp:
        assert tmp.parent == tmp_path
        (tmp / "a.txt").write_text("new")
    monkeypatch.chdir(tmp_path)
    assert (out / "a.txt").read_text() == "new"
    (tmp_path / "link").symlink_to(out)
    with atomic_directory(tmp_path / "link", "cmd", overwrite=True) as tmp:
        (tmp / "a.txt").write_text("newer")
    assert (tmp_path / "link" / "a.txt").read_text() == "newer"
    assert (out / "a.txt").read_text() == "new"  # the link's target is not touched
    assert sorted(os.listdir(tmp_path)) == ["link", "out"]


def test_partial_directory_resumes_with_equal_settings_and_swaps_in(tmp_path):
    out = tmp_path / "md"
    folder = RunFolder.for_output(out, "md-validate", {"seed": 0})
    work = folder.path
    assert work == partial_directory(out) == tmp_path / "md.partial"
    assert not folder.resumed
    assert read_marker_data(work)["settings"] == {"seed": 0}
    (work / "replica0.csv").write_text("done")
    # an interrupted run is neither lost nor silently restarted
    with pytest.raises(InputError, match="--resume"):
        RunFolder.for_output(out, "md-validate", {"seed": 0})
    with pytest.raises(InputError, match=r"other settings \(seed\)"):
        RunFolder.for_output(out, "md-validate", {"seed": 1}, resume=True)
    folder = RunFolder.for_output(out, "md-validate", {"seed": 0}, resume=True)
    assert folder.path == work and folder.resumed
    with folder:
        folder.publish()
    assert (out / "replica0.csv").read_text() == "done" and not work.exists()
    assert read_marker(out) == "md-validate"
    # --overwrite replaces it only once the new run is complete
    folder = RunFolder.for_output(out, "md-validate", {"seed": 1}, overwrite=True)
    assert (out / "replica0.csv").exists()
    folder.publish()
    assert sorted(os.listdir(out)) == [MARKER]


def test_partial_directory_refuses_what_the_command_did_not_write(tmp_path):
    out, other = tmp_path / "md", tmp_path / "md.partial"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a work folder of `md-validate`"):
        RunFolder.for_output(out, "md-validate", {}, overwrite=True, resume=True)
    with pytest.raises(InputError, match="is an input of this run"):
        RunFolder.for_output(out, "md-validate", {}, inputs=[out / "model"])
    assert (other / "notes.txt").read_text() == "mine"
    # a folder made by md-validate before it shared the marker is still its own
    old = tmp_path / "old"
    old.mkdir()
    (old / ".md-validate").write_text('{"command": "md-validate", "settings": {}}')
    assert read_marker(old) == "md-validate"
    RunFolder.for_output(old, "md-validate", {}, overwrite=True).publish()
    assert sorted(os.listdir(old)) == [MARKER]


def test_in_place_run_folder_is_new_or_resumed_and_held(tmp_path):
    run = tmp_path / "run"
    with RunFolder.in_place(run, "ase-flatten select") as folder:
        assert read_marker(run) == "ase-flatten select" and not folder.resumed
        with pytest.raises(InputError, match="another process"):
            with folder_lock(run):
                pass
    with pytest.raises(InputError, match="not empty; use --resume"):
        RunFolder.in_place(run, "ase-flatten select")
    with RunFolder.in_place(run, "ase-flatten select", resume=True) as folder:
        assert folder.resumed


def test_replace_files_updates_named_files_and_keeps_the_others(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.json", "old.npy", "kept.npy", "history.json"):
        (folder / name).write_text("old")
    names = ("model.json", "old.npy", "kept.npy")
    with RunFolder.replace_files(folder, names, keep=("kept.npy",)) as new:
        (new / "model.json").write_text("new")
    assert sorted(os.listdir(folder)) == ["history.json", "kept.npy", "model.json"]
    assert (folder / "model.json").read_text() == "new"
    assert (folder / "kept.npy").read_text() == "old"
    with pytest.raises(RuntimeError):
        with RunFolder.replace_files(folder, names) as new:
            (new / "model.json").write_text("broken")
            raise RuntimeError
    assert (folder / "model.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_folder_lock_refuses_a_second_process_and_dies_with_the_first(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"{tmp_path}: another process is"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()  # as an interrupted run ends: no cleanup of its own
        holder.wait()
    with folder_lock(tmp_path):  # the kernel dropped the lock: no stale lock
        with pytest.raises(InputError, match="another process"):
            with folder_lock(tmp_path):  # a second holder in this process too
                pass


def test_a_held_work_folder_is_neither_resumed_nor_removed(tmp_path):
    work = RunFolder.open(tmp_path / "w", "cmd", {"a": 1}).path
    (work / "chunk").write_text("done")
    with folder_lock(work):
        for overwrite, resume in ((False, True), (True, False)):
            with pytest.raises(InputError, match="another process is writing"):
                RunFolder.open(work, "cmd", {"a": 1}, overwrite, resume)
    assert (work / "chunk").read_text() == "done"
    assert RunFolder.open(work, "cmd", {"a": 1}, False, True).path == work


HOLD_LOCK = """
import sys, time
from ase_flatten.files import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""
