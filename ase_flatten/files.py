"""Writing results safely: atomic files, atomic folders, no silent overwrites.

Two building blocks:

* :func:`atomic_path` for one file: written beside its place, renamed over it.
* :func:`atomic_directory` for an output folder (a report, a model directory, an
  MD validation): built in a hidden folder beside its place and swapped in as a
  whole at the end, so a failed run leaves the previous folder untouched and a new
  folder never carries stale files of an old one. Every such folder holds a marker
  file (:data:`MARKER`) naming the command that made it; ``overwrite`` replaces
  only a folder with the marker of the same command, never a dataset, a model of
  another command or an input of the run.

A command that writes a folder::

    check_output_directory(out, COMMAND, args.overwrite, inputs)  # cheap, first
    ...  # read and validate every input; nothing is written yet
    with atomic_directory(out, COMMAND, args.overwrite, inputs) as tmp:
        ...  # the work; every file goes into tmp

A long run that must survive an interruption works in a :class:`RunFolder`.
``md-validate`` builds its folder in a visible work folder ``X.partial`` beside
``X`` instead, which ``--resume`` continues and which becomes ``X`` when complete::

    work = RunFolder.for_output(out, COMMAND, settings, overwrite, resume, inputs)
    with work:
        ...  # the work, in work.path; finished parts are kept on resume
        work.publish()

A folder filled in place because it is checkpointed (``select``) is opened with
:meth:`RunFolder.in_place` and never deleted. Either is held with
:func:`folder_lock` while it runs, so a second process cannot resume it at the
same time.
Every check raises :class:`~ase_flatten.exceptions.InputError` with one line
naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .exceptions import InputError

logger = logging.getLogger(__name__)

#: Name of the marker file in every output folder; JSON ``{"command": ...}``.
MARKER = ".ase-flatten-output"
#: Lock file of a run folder filled in place (:func:`folder_lock`).
LOCK = ".ase-flatten.lock"
#: The marker md-validate wrote before it shared :data:`MARKER` (still read).
LEGACY_MARKERS = (".md-validate",)
#: Files that make a folder one of ours (a run or model folder): no single output
#: file is written into such a folder, whatever ``--overwrite`` says.
OWN_FOLDER_FILES = (MARKER, *LEGACY_MARKERS, "model.json")
#: Write failures that are the place's fault, not the program's: a full disk or
#: quota, a read-only file system. They end as one line naming the file.
DISK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG")
    if hasattr(errno, name)
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it into place on success.

    Readers never see a half-written file: the temporary file is renamed over
    ``path`` only when the block finishes without an exception, and removed
    otherwise. The temporary name keeps the suffix so writers that infer the
    format from it (ASE, matplotlib) still work.

    Raises
    ------
    InputError
        The folder of ``path`` cannot be created or written.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) or ".tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=suffix, dir=path.parent
        )
    except OSError as exc:
        raise InputError(f"{path}: cannot write there ({_reason(exc)})") from exc
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is not what users expect
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise InputError(f"{path}: cannot write it ({_reason(exc)})") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


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


# -- output files and folders ------------------------------------------------------


def check_output_file(
    path: str | os.PathLike, overwrite: bool = False, inputs: Iterable = ()
) -> None:
    """Check, before any work, that one output file can be written at ``path``.

    Parameters
    ----------
    path : path
        The output file.
    overwrite : bool
        Whether an existing file may be replaced (``--overwrite``).
    inputs : iterable of path
        The run's input files and folders; ``path`` must not be one of them.

    Raises
    ------
    InputError
        ``path`` is a folder, an input of the run, exists without ``overwrite``,
        or its folder cannot be written.
    """
    path = Path(path)
    check_reachable(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; name an output file")
    inputs = list(inputs)
    _refuse_inputs(path, inputs)
    _refuse_own_folders(path, inputs)
    if path.exists() and not overwrite:
        raise InputError(
            f"{path}: exists; pass --overwrite to replace it or choose another output"
        )
    _check_parent_writable(path)


def check_output_directory(
    path: str | os.PathLike,
    command: str,
    overwrite: bool = False,
    inputs: Iterable = (),
) -> None:
    """Check, without touching anything, that ``path`` may become ``command``'s output.

    A missing path or an empty folder is fine. An existing non-empty folder is
    replaced only with ``overwrite``, and only when it holds the :data:`MARKER` of
    the same ``command`` (an earlier output of it) and contains no input of the run.

    Parameters
    ----------
    path : path
        The output folder.
    command : str
        The command writing it, as recorded in the marker (``"ase-flatten
        errors"``, ``"md-validate"``).
    overwrite : bool
        Whether an earlier output of ``command`` may be replaced.
    inputs : iterable of path
        Files and folders the run reads; none may be ``path`` or inside it.

    Raises
    ------
    InputError
        One line naming ``path`` and the problem.
    """
    path = Path(path)
    check_output_place(path, inputs)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise InputError(
                f"{path}: exists and is not empty; pass --overwrite to replace an "
                f"earlier output of `{command}` or choose another output"
            )
        made_by = read_marker(path)
        if made_by != command:
            what = f"made by `{made_by}`" if made_by else f"no {MARKER} marker"
            raise InputError(
                f"{path}: not an output of `{command}` ({what}); --overwrite "
                "replaces only those: choose another output or remove it yourself"
            )


def check_output_place(path: str | os.PathLike, inputs: Iterable = ()) -> None:
    """Check that folder ``path`` could be made: not a file, not an input, writable.

    The part of :func:`check_output_directory` for a folder that is filled in
    place (a checkpointed run), where what an existing folder holds is the
    caller's business.
    """
    path = Path(path)
    check_reachable(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, not a folder; choose another output")
    _refuse_inputs(path, inputs)
    _check_parent_writable(path)  # the parent gets the temporary folder


def check_reachable(path: str | os.PathLike) -> None:
    """One line when ``path`` cannot even be looked up (a folder on the way that
    the user may not search, a working directory that cannot be read).

    Raises
    ------
    InputError
    """
    try:
        os.getcwd()
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read the working directory ({_reason(exc)}); change to "
            "a folder you can read"
        ) from exc
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise InputError(
            f"{path}: cannot look it up ({_reason(exc)}); choose a place you can search"
        ) from exc


def read_marker(path: str | os.PathLike) -> str | None:
    """The command recorded in folder ``path``'s marker, or None without one."""
    command = (read_marker_data(path) or {}).get("command")
    return command if isinstance(command, str) else None


def read_marker_data(path: str | os.PathLike) -> dict | None:
    """The whole JSON marker of folder ``path`` (a dict), or None without one."""
    for name in (MARKER, *LEGACY_MARKERS):
        try:
            data = json.loads((Path(path) / name).read_text())
        except (OSError, ValueError):
            continue
        return data if isinstance(data, dict) else None
    return None


def write_marker(
    path: str | os.PathLike, command: str, settings: dict | None = None
) -> None:
    """Mark folder ``path`` as an output of ``command`` (JSON, with version and date).

    :func:`atomic_directory` and :class:`RunFolder` do it themselves;
    a folder filled in place calls it when it creates the folder. ``settings``
    (JSON-able) are recorded for a resumable run to compare on ``--resume``.
    """
    from . import __version__

    marker = {
        "command": command,
        "ase_flatten_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if settings is not None:
        marker["settings"] = settings
    write_json(Path(path) / MARKER, marker)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike,
    command: str,
    overwrite: bool = False,
    inputs: Iterable = (),
) -> Iterator[Path]:
    """Build an output folder beside ``path`` and swap it in as a whole at the end.

    Usage::

        check_output_directory(out, "md-validate", overwrite, inputs)  # optional
        ...  # validate every input: nothing has been written yet
        with atomic_directory(out, "md-validate", overwrite, inputs) as tmp:
            ...  # write every file of the output into tmp

    On entry the checks of :func:`check_output_directory` run, then a hidden
    folder ``.NAME.XXXX.tmp`` is made beside ``path`` (same parent: the final
    rename cannot cross file systems) with the umask's permissions and the
    :data:`MARKER` of ``command``; an unwritable place fails here, before any
    work. When the block ends without an exception, an old ``path`` is renamed
    aside, the new folder renamed into place, and only then the old one removed.
    When the block raises (Ctrl-C included), the new folder is removed and
    ``path`` is untouched.

    Parameters
    ----------
    path : path
        The output folder.
    command : str
        The command writing it (recorded in the marker and checked on overwrite).
    overwrite : bool
        Replace an earlier output of the same ``command``.
    inputs : iterable of path
        Files and folders the run reads; ``path`` must not be one of them or
        contain one.

    Yields
    ------
    Path
        The temporary folder to write into. Paths recorded inside output files
        should be relative to it: it is renamed at the end.

    Raises
    ------
    InputError
        On entry, see :func:`check_output_directory`, or the temporary folder
        cannot be created.
    """
    check_output_directory(path, command, overwrite, inputs)
    path = Path(os.path.abspath(path))  # "." has no name to put beside it
    staging = sibling_directory(path, ".tmp")
    try:
        write_marker(staging, command)
        yield staging
        _swap_in(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the existing folder ``path`` for this process while the block runs.

    An advisory ``flock`` on ``path/.ase-flatten.lock``. The kernel drops it when
    the process ends, however it ends, so an interrupted run leaves no stale lock
    and ``--resume`` never needs one removed by hand. Without ``fcntl`` (Windows)
    nothing is locked.

    Raises
    ------
    InputError
        Another process holds the folder (for example a second ``--resume``).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(Path(path) / LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as exc:
        raise InputError(f"{path}: cannot write there ({_reason(exc)})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise InputError(
                f"{path}: another process is writing this run now; wait for it to "
                "finish or choose another output"
            ) from exc
        yield
    finally:
        os.close(fd)


def partial_directory(path: str | os.PathLike) -> Path:
    """The work folder of a resumable output ``path``: ``path.partial`` beside it."""
    path = Path(os.path.abspath(path))
    return path.with_name(path.name + ".partial")


@dataclass
class RunFolder:
    """The folder a long run works in: opened, locked while it works, published.

    Three ways to open one, the same resume and overwrite rules:

    * :meth:`for_output`: the work of output folder ``X`` goes into ``X.partial``
      (:func:`partial_directory`), which :meth:`publish` swaps in as ``X`` at the
      end (``md-validate``, ``md-explore``);
    * :meth:`open`: a work folder of its own, for a run whose output is a file
      (:func:`~ase_flatten.md_dataset.write_md_dataset`);
    * :meth:`in_place`: a checkpointed folder that is the output itself and is
      never deleted (``select``).

    Used as a context manager, the folder is held with :func:`folder_lock` until
    the block ends. :meth:`replace_files` is the atomic update of some files of a
    folder that holds others too (a model saved into a run folder).

    Attributes
    ----------
    path : Path
        The folder the run writes into.
    command : str
        The command recorded in its marker.
    output : Path or None
        Where :meth:`publish` puts it (None: it is the output).
    resumed : bool
        The folder held an interrupted run that is continued.
    """

    path: Path
    command: str
    output: Path | None = None
    resumed: bool = False
    _held: contextlib.ExitStack | None = field(default=None, repr=False)

    @classmethod
    def for_output(
        cls,
        output: str | os.PathLike,
        command: str,
        settings: dict,
        overwrite: bool = False,
        resume: bool = False,
        inputs: Iterable = (),
    ) -> RunFolder:
        """Check output folder ``output`` before anything runs; open its work folder.

        The resumable variant of :func:`atomic_directory`: the work goes into
        ``output.partial``, which outlives an interruption.

        Parameters
        ----------
        output : path
            The output folder (``-o``); checked as by :func:`check_output_directory`.
        command : str
            The command writing it (recorded in the marker, checked on overwrite).
        settings : dict
            JSON-able settings of the run; ``resume`` continues only a work folder
            started with equal settings.
        overwrite : bool
            Replace an earlier output of ``command``, and start an interrupted run
            again instead of refusing.
        resume : bool
            Continue the work folder of an interrupted run.
        inputs : iterable of path
            Files and folders the run reads; neither folder may be or hold one.

        Raises
        ------
        InputError
            One line naming the folder and the problem.
        """
        inputs = list(inputs)
        check_output_directory(output, command, overwrite, inputs)
        work = partial_directory(output)
        check_output_place(work, inputs)
        folder = cls.open(work, command, settings, overwrite, resume)
        folder.output = Path(output)
        return folder

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        command: str,
        settings: dict,
        overwrite: bool = False,
        resume: bool = False,
    ) -> RunFolder:
        """Create the marked work folder ``path`` of ``command``, or reopen it.

        An existing one must carry ``command``'s marker; ``resume`` keeps it when
        its ``settings`` (recorded in the marker) are equal, ``overwrite`` starts
        it again, neither is refused.
        """
        work = Path(path)
        settings = json.loads(json.dumps(settings, default=_json_default))
        if work.exists():
            old = read_marker_data(work)
            if old is None or old.get("command") != command:
                raise InputError(
                    f"{work}: exists and is not a work folder of `{command}`; remove "
                    "it yourself or choose another output"
                )
            with folder_lock(work):  # neither resumed nor removed while a run holds it
                pass
            if resume:
                changed = changed_settings(settings, old.get("settings") or {})
                if changed:
                    raise InputError(
                        f"{work}: the interrupted run used other settings "
                        f"({', '.join(changed)}); rerun it as it was, or pass "
                        "--overwrite without --resume to start again"
                    )
                logger.info("resuming the interrupted run in %s", work)
                return cls(work, command, resumed=True)
            if not overwrite:
                raise InputError(
                    f"{work}: holds an interrupted `{command}` run; pass --resume to "
                    "continue it or --overwrite to start again"
                )
            shutil.rmtree(work)
        try:
            work.mkdir(parents=True)
        except OSError as exc:
            raise InputError(f"{work}: cannot write there ({_reason(exc)})") from exc
        write_marker(work, command, settings)
        return cls(work, command)

    @classmethod
    def in_place(
        cls, path: str | os.PathLike, command: str, resume: bool = False
    ) -> RunFolder:
        """Open the checkpointed folder ``path``, which is the output itself.

        Without ``resume`` it must be missing or empty; it is created with
        ``command``'s marker. With ``resume`` it is taken as it is: what it holds
        (and whether its settings match) is the caller's to check.
        """
        path = Path(path)
        if resume:
            return cls(path, command, resumed=True)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: is a file, not a folder; choose another output")
        if path.exists() and any(path.iterdir()):
            raise InputError(
                f"{path}: exists and is not empty; use --resume to continue it or "
                "choose another output"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{path}: cannot write there ({_reason(exc)})") from exc
        folder = cls(path, command)
        folder.__enter__()  # held before it is marked
        try:
            write_marker(path, command)
        except BaseException:
            folder.__exit__()
            raise
        return folder

    def __enter__(self) -> RunFolder:
        if self._held is None and self.path.is_dir():
            self._held = contextlib.ExitStack()
            self._held.enter_context(folder_lock(self.path))
        return self

    def __exit__(self, *exc_info) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def publish(self) -> None:
        """Swap the finished work folder in as :attr:`output`.

        An old output is renamed aside, the work folder renamed into its place,
        and the old one removed only then; it must be empty or an output of
        :attr:`command` (checked again: something may have appeared there during
        the run).

        Raises
        ------
        InputError
            The output is now something the command did not write; it is left as
            it is.
        """
        path = Path(os.path.abspath(self.output))
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            if read_marker(path) != self.command:
                raise InputError(
                    f"{path}: not an output of `{self.command}`; left as it is (the "
                    f"new result is in {self.path})"
                )
        _swap_in(self.path, path)

    @staticmethod
    @contextlib.contextmanager
    def replace_files(
        path: str | os.PathLike, names: Iterable[str], keep: Iterable[str] = ()
    ) -> Iterator[Path]:
        """Update the files ``names`` of folder ``path``, leaving its other files.

        Yields a new hidden folder beside ``path`` to write them into. When the
        block ends without an exception they are moved into ``path`` in the
        reverse order of ``names`` (the first, the one that describes the rest,
        goes last), after the old ones except those in ``keep`` were removed (the
        first of ``names`` first); a missing ``path`` is the new folder renamed.
        The new folder is removed in any case.
        """
        path, names, keep = Path(path), list(names), set(keep)
        new = sibling_directory(path)
        try:
            yield new
            if not path.exists():
                os.replace(new, path)
                return
            for name in names:
                old = path / name
                if name in keep:
                    continue
                if old.is_dir():
                    shutil.rmtree(old)
                elif old.exists():
                    old.unlink()
            for name in names[::-1]:
                if (new / name).exists():
                    os.replace(new / name, path / name)
        finally:
            if new.exists():
                shutil.rmtree(new)


def changed_settings(new: dict, old: dict) -> list[str]:
    """The keys whose values differ between two settings dicts, sorted."""
    return sorted(key for key in {**old, **new} if new.get(key) != old.get(key))


def sibling_directory(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A new empty hidden folder beside ``path``, with the umask's permissions.

    Raises
    ------
    InputError
        The parent of ``path`` cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        made = Path(
            tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        )
    except OSError as exc:
        raise InputError(f"{path}: cannot write there ({_reason(exc)})") from exc
    os.chmod(made, 0o777 & ~_umask())  # mkdtemp's 0700 is not what users expect
    return made


def _swap_in(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``; an old ``path`` goes only after that worked."""
    if not path.exists():
        os.replace(new, path)
        return
    old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        os.replace(path, old)
    except OSError as exc:
        # a hidden staging folder goes when this fails: keep it where it is seen
        kept = _keep_beside(new, path) if new.name.startswith(".") else new
        where = f"the new result is in {kept}" if kept else "the new result is lost"
        raise InputError(
            f"{path}: cannot move the old folder aside to replace it "
            f"({_reason(exc)}); it is left as it was, {where}"
        ) from exc
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    if old.is_symlink():
        old.unlink()  # the folder it pointed to is not ours to delete
    else:
        shutil.rmtree(old, ignore_errors=True)


def _keep_beside(new: Path, path: Path) -> Path | None:
    """Rename the finished folder ``new`` to a visible ``path.new``; None if not."""
    kept = path.with_name(path.name + ".new")
    if kept.exists():
        return None
    try:
        os.replace(new, kept)
    except OSError:
        return None
    return kept


def _refuse_inputs(path: Path, inputs: Iterable) -> None:
    target = _resolved(path)
    for item in inputs:
        if item is None:
            continue
        source = _resolved(Path(item))
        if source == target or target in source.parents:
            raise InputError(
                f"{path}: is an input of this run ({item}); choose another output"
            )


def _refuse_own_folders(path: Path, inputs: Iterable) -> None:
    """Refuse a file inside an input folder or a run/model folder of ase-flatten.

    Such a folder is replaced as a whole by its own command; a file written into it
    by another (``predict -o MODEL/train.xyz --overwrite``) would replace one of
    its files.
    """
    target = _resolved(path)
    for item in inputs:
        if item is not None and _resolved(Path(item)) in target.parents:
            raise InputError(
                f"{path}: lies inside {item}, an input of this run; choose an "
                "output outside it"
            )
    for folder in target.parents:
        own = next((n for n in OWN_FOLDER_FILES if _is_file(folder / n)), None)
        if own is not None:
            made_by = read_marker(folder) or "an ase-flatten model"
            raise InputError(
                f"{path}: lies inside {folder}, an output of `{made_by}` ({own}); "
                "write outside it"
            )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a folder on the way that may not be searched: not ours
        return False


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(os.path.realpath(path)))


def _check_parent_writable(path: Path) -> None:
    """Fail early when the nearest existing folder above ``path`` is read-only."""
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{path}: cannot write there ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write there ({parent} is not writable)")
