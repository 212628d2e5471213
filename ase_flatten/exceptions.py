"""The two failures a command line reports in one line: the user's, and the run's."""

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
