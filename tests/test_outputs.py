import os
import stat

import pytest

from ase_flatten.exceptions import InputError
from ase_flatten.outputs import atomic_path, check_writable, write_text


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
