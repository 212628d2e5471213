"""Writing results safely: atomic replacement and no silent overwrites."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .exceptions import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it into place on success.

    Readers never see a half-written file: the temporary file is renamed over
    ``path`` only when the block finishes without an exception, and removed
    otherwise. The temporary name keeps the suffix so writers that infer the
    format from it (ASE, matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is not what users expect
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(
        path,
        json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n",
    )


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """``numpy.savez`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_writable(paths: Iterable[str | os.PathLike], overwrite: bool) -> None:
    """Refuse to replace existing outputs unless ``overwrite`` is set.

    Raises
    ------
    InputError
        Naming the first output that exists.
    """
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise InputError(
                f"{path}: exists; pass --overwrite to replace it or choose another "
                "output"
            )
