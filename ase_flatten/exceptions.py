"""The two failures a command line reports in one line: the user's, and the run's."""

import contextlib
import contextvars
import pickle
import zipfile
import zlib

#: What reading a damaged or foreign file raises in numpy (``np.load``), zipfile,
#: zlib and json (measured on empty, garbage, truncated, bit-flipped and pickled
#: files; torch's ``weights_only`` loader adds RuntimeError): caught where a file
#: is read and turned into an :class:`InputError` that names the file, the cause
#: chained. Any other exception there is a bug and keeps its traceback.
FILE_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    zipfile.BadZipFile,
    zlib.error,
    pickle.UnpicklingError,
)


class InputError(ValueError):
    """A problem with the user's input: a file, an argument or a combination of them.

    The message names the file (when there is one) and the problem in one line. The
    command-line entry point prints it without a traceback (``-T`` shows it) and
    exits with status 2.
    It subclasses :class:`ValueError` so scikit-learn-style code that expects
    ``ValueError`` for bad arguments keeps working.
    """


class RunError(RuntimeError):
    """A run that failed for a reason other than its input: a worker process died.

    The message names what failed (a label worker, a Dask worker, an MD run) and
    the cause is chained (``raise RunError(...) from exc``). The command-line entry
    point prints it as one line and exits with status 1; with ``-T`` it prints the
    traceback, cause included.
    """


#: How messages name a setting: ``"python"`` (``include_train=True``, the
#: library's parameters) or ``"flags"`` (``--include-train``, set by the command
#: lines for the duration of a command, :func:`flag_spelling`).
_SPELLING = contextvars.ContextVar("ase_flatten_spelling", default="python")


def option(name: str, value=None, flag: str | None = None) -> str:
    """A setting as an error message names it, to whoever called.

    A Python caller reads the parameter (``option("include_train", True)`` is
    ``include_train=True``); inside a command line (:func:`flag_spelling`) the
    same message names the flag (``--include-train``). Flags are the parameter
    names with dashes: one vocabulary for both.

    Parameters
    ----------
    name : str
        The parameter, e.g. ``"extra_test"``.
    value : object, optional
        A value to show with it: ``True`` for a switch, else shown as given
        (``option("model", "DIR")`` is ``model=DIR`` or ``--model DIR``).
    flag : str, optional
        The flag, where it is not the parameter with dashes
        (``option("n_components", flag="--components")``).
    """
    if naming_flags():
        flag = flag or "--" + name.replace("_", "-")
        return flag if value is None or value is True else f"{flag} {value}"
    return name if value is None else f"{name}={value}"


def naming_flags() -> bool:
    """Whether messages name command-line flags now (inside :func:`flag_spelling`)."""
    return _SPELLING.get() == "flags"


@contextlib.contextmanager
def flag_spelling():
    """Within the block, :func:`option` names command-line flags."""
    token = _SPELLING.set("flags")
    try:
        yield
    finally:
        _SPELLING.reset(token)
