"""The one exception type for user mistakes."""


class InputError(ValueError):
    """A problem with the user's input: a file, an argument or a combination of them.

    The message names the file (when there is one) and the problem in one line. The
    command-line entry point prints it without a traceback and exits with status 2.
    It subclasses :class:`ValueError` so scikit-learn-style code that expects
    ``ValueError`` for bad arguments keeps working.
    """
