"""SIGTERM handled like Ctrl-C, so ``finally`` blocks clean up on both."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside the block, SIGTERM raises :class:`KeyboardInterrupt` (as SIGINT does).

    Long runs use it so that ``kill PID`` (a batch system's time limit, say)
    takes the same path as Ctrl-C: checkpoints stay, child processes and their
    files are cleaned up. The previous handler comes back on exit. Outside the
    main thread signals cannot be handled, and the block runs unchanged.
    """

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
