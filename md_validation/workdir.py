"""md-validate's output folder: built beside ``-o``, swapped in when complete.

A validation writes into ``X.partial/`` (with a marker file, :data:`MARKER`,
naming the command and its settings). ``--resume`` continues that folder; at the
end it becomes ``X``. An old ``X`` is renamed aside first and deleted only after
the new one is in place, and only when it carries the marker: md-validate never
deletes a path it did not write.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ase_flatten.exceptions import InputError
from ase_flatten.outputs import write_text

logger = logging.getLogger(__name__)

__all__ = ["MARKER", "prepare_output", "publish_output"]

#: Marker file of an md-validate output (or work) folder.
MARKER = ".md-validate"


def _work_folder(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _check_not_input(folder: Path, inputs: list[Path]) -> None:
    resolved = folder.resolve()
    for path in inputs:
        path = Path(path).resolve()
        if resolved == path or resolved in path.parents:
            raise InputError(
                f"-o {folder}: would replace the input {path}; choose another folder"
            )


def prepare_output(
    output: str | Path,
    inputs: list[Path],
    settings: dict,
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Check ``output`` before anything runs and open its work folder.

    Parameters
    ----------
    output : path
        The folder the user asked for (``-o``).
    inputs : list of path
        Files and folders the run reads (dataset, model directories): ``output``
        must be none of them and hold none of them.
    settings : dict
        JSON-able protocol settings; ``--resume`` continues only a work folder
        started with the same settings.
    overwrite : bool
        Allow replacing an existing ``output`` that md-validate wrote (marker).
    resume : bool
        Continue the work folder of an interrupted run, keeping finished runs.

    Returns
    -------
    Path
        The work folder ``<output>.partial`` (created, with its marker).

    Raises
    ------
    InputError
        ``output`` names or holds an input, exists without ``overwrite``, is not
        an md-validate output, or its work folder cannot be continued.
    """
    output = Path(output)
    work = _work_folder(output)
    _check_not_input(output, inputs)
    _check_not_input(work, inputs)
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        if not overwrite:
            raise InputError(f"{output}: exists; pass --overwrite to replace it")
        if not output.is_dir() or _read_marker(output) is None:
            raise InputError(
                f"{output}: not an md-validate output (no {MARKER} file); "
                "refusing to replace it: choose another -o or remove it yourself"
            )
    marker = {"command": "md-validate", "output": str(output), "settings": settings}
    settings = json.loads(json.dumps(settings))
    if work.exists():
        old = _read_marker(work)
        if old is None:
            raise InputError(
                f"{work}: exists and is not an md-validate work folder; remove it"
            )
        if resume:
            changed = sorted(
                key
                for key in set(settings) | set(old.get("settings", {}))
                if settings.get(key) != old.get("settings", {}).get(key)
            )
            if changed:
                raise InputError(
                    f"{work}: the interrupted run used other settings "
                    f"({', '.join(changed)}); rerun it as it was, or pass "
                    "--overwrite without --resume to start again"
                )
            logger.info("resuming the interrupted run in %s", work)
            return work
        if not overwrite:
            raise InputError(
                f"{work}: holds an interrupted md-validate run; pass --resume to "
                "continue it or --overwrite to start again"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_text(work / MARKER, json.dumps(marker, indent=1) + "\n")
    return work


def publish_output(work: str | Path, output: str | Path) -> None:
    """Swap the finished work folder in as ``output``.

    An existing ``output`` is renamed aside, the work folder renamed into its
    place, and the old one deleted only then, and only when it carries the
    md-validate marker (an empty folder is simply removed).
    """
    work, output = Path(work), Path(output)
    old = None
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    elif output.exists():
        if _read_marker(output) is None:
            raise InputError(f"{output}: not an md-validate output; left as it is")
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
    try:
        os.replace(work, output)
    except OSError:
        if old is not None:
            os.replace(old, output)
        raise
    if old is not None:
        shutil.rmtree(old)
