"""The runtime shared by every command line (``ase-flatten``, ``md-validate``).

* :class:`ArgumentParser`: argparse with one-line errors.
* :func:`add_verbosity_arguments`: ``-v``/``-q``.
* :func:`add_traceback_argument`: ``-T``/``--traceback``, as in ASE's command line.
* :func:`add_output_arguments`: ``-o DIR``, ``--overwrite`` (replaces only an
  earlier output of the same command, never an input; see
  :mod:`ase_flatten.files`) and, for checkpointed commands, ``--resume``.
* :func:`execute`: logging from ``-v``/``-q``, the matplotlib backend, SIGTERM as
  Ctrl-C, a user mistake (:class:`~ase_flatten.exceptions.InputError`) as one
  line with exit status 2 and a failed run
  (:class:`~ase_flatten.exceptions.RunError`) as one line with exit status 1;
  with ``-T`` the traceback instead, cause included.

This module stays light: it imports only the standard library, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable

from ..exceptions import InputError, RunError, flag_spelling

#: Exit status of a run that failed for another reason (a worker died).
EXIT_RUN_ERROR = 1
#: Exit status of a user mistake (bad input, refused output).
EXIT_INPUT_ERROR = 2
#: Exit status after Ctrl-C or SIGTERM (128 + SIGINT).
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: ... (see PROG --help)``."""

    def error(self, message):
        self.exit(
            EXIT_INPUT_ERROR,
            f"{self.prog}: error: {message} (see {self.prog} --help)\n",
        )


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` (debug log) and ``-q/--quiet`` (warnings only), exclusive."""
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug log")
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only"
    )


def add_traceback_argument(parser: argparse.ArgumentParser) -> None:
    """``-T/--traceback``: a failure's full traceback instead of its one line.

    As in ASE's command line. Given to the top-level parser and to each
    subcommand's, so it may come before or after the command; it is absent from
    the namespace when not given (``getattr(args, "traceback", False)``).
    """
    parser.add_argument(
        "-T",
        "--traceback",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, print the full traceback (with its cause) instead of "
        "one line",
    )


def add_output_arguments(
    parser: argparse.ArgumentParser,
    command: str,
    resume: str | None = None,
    overwrite: bool = True,
) -> None:
    """``-o/--output DIR``, ``--overwrite`` and, with ``resume`` text, ``--resume``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser.
    command : str
        The command as recorded in its output's marker (``"md-validate"``).
    resume : str, optional
        Help text of ``--resume``; without it the command has no ``--resume``.
    overwrite : bool
        Whether the command has ``--overwrite`` (a checkpointed folder filled in
        place has only ``--resume``).
    """
    parser.add_argument("-o", "--output", required=True, metavar="DIR")
    if overwrite:
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help=f"replace an earlier `{command}` output DIR (once the new one is "
            "complete); never anything else",
        )
    if resume:
        parser.add_argument("--resume", action="store_true", help=resume)


def _check_working_directory() -> None:
    """One line, before any work, when the working directory is gone.

    Relative paths are resolved against it (``os.getcwd`` fails in a folder that
    was removed). A folder the user may not search is met where a path is first
    looked up (:func:`~ase_flatten.files.check_reachable`, the data readers).
    """
    try:
        os.getcwd()
    except OSError as exc:
        raise InputError(
            f"cannot read the working directory ({exc.strerror or exc}); change to "
            "a folder you can read"
        ) from exc


def execute(prog: str, run: Callable, args: argparse.Namespace) -> int:
    """Set up logging from ``-v``/``-q``, call ``run(args)``, map errors to status.

    A user mistake (:class:`InputError`) prints one line and gives 2, a failed run
    (:class:`RunError`: a worker process died) one line and 1; with ``-T``
    (``args.traceback``) each prints its traceback, cause included, and gives the
    same status. Any other exception is a bug: its traceback, status 1. Ctrl-C and
    SIGTERM give 130 after the command's ``finally`` blocks cleaned up (temporary
    output folders, child processes). Plots are written to files: the matplotlib
    backend is ``Agg`` unless ``MPLBACKEND`` says otherwise (the library itself
    never chooses one).
    """
    from ..signals import sigterm_as_interrupt

    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else None
    logging.basicConfig(
        level=level or logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("MPLBACKEND", "Agg")  # read when matplotlib is imported
    try:
        _check_working_directory()
        with sigterm_as_interrupt(), flag_spelling():  # messages name flags
            run(args)
    except InputError as exc:
        return _report(prog, args, f"{exc}", EXIT_INPUT_ERROR)
    except RunError as exc:
        return _report(
            prog, args, f"{exc} (rerun with -T for the traceback)", EXIT_RUN_ERROR
        )
    except OSError as exc:
        from ..files import DISK_ERRNOS

        if exc.errno not in DISK_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        return _report(
            prog,
            args,
            f"{where}cannot write ({exc.strerror or exc}); free space or choose "
            "another output",
            EXIT_INPUT_ERROR,
        )
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _report(prog: str, args: argparse.Namespace, message: str, status: int) -> int:
    """Print the error being handled: one line, or with ``-T`` its traceback."""
    if getattr(args, "traceback", False):
        traceback.print_exc(file=sys.stderr)
    else:
        print(f"{prog}: error: {message}", file=sys.stderr)
    return status
