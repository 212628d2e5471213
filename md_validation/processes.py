"""Starting and stopping child processes.

:func:`terminate`: SIGTERM first, SIGKILL when the process outlives a timeout; one
place for the escalation that the i-PI engine (its server and client) and the
replica pool (its workers) share. The caller owns the process object: nothing here
closes it, so an executor that owns its workers keeps working.

:func:`signals_deferred`: a Ctrl-C or SIGTERM that arrives while ``os.fork`` runs
is raised inside logging's at-fork hook, where Python can only print it as an
ignored exception with a traceback; noted until the fork is done, it is raised in
the caller's own code.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import threading

#: the signals a stop sends: Ctrl-C (or the replica pool's SIGINT) and ``kill PID``
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

logger = logging.getLogger(__name__)


def terminate(proc, name: str, timeout: float = 5.0) -> None:
    """Terminate a Popen or multiprocessing.Process, kill it after ``timeout`` s.

    Parameters
    ----------
    proc : subprocess.Popen or multiprocessing.Process or None
        The process; None or one that has ended is left as it is.
    name : str
        What the warning calls it when SIGTERM is not enough.
    timeout : float
        Seconds to wait after SIGTERM, and again after SIGKILL.
    """
    if proc is None:
        return
    if isinstance(proc, subprocess.Popen):
        running, wait = (lambda: proc.poll() is None), proc.wait
    else:
        running, wait = proc.is_alive, proc.join
    if not running():
        return
    proc.terminate()
    try:
        wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    if running():
        logger.warning("%s did not stop on SIGTERM; killing it", name)
        proc.kill()
        try:
            wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop on SIGKILL within %.0f s", name, timeout)


#: while a :func:`signals_deferred` block runs: the handlers it replaced and the
#: signals it caught (a child forked in the block inherits both)
_HELD: dict = {}


@contextlib.contextmanager
def signals_deferred():
    """Hold :data:`STOP_SIGNALS` for the block; one that arrived is raised after it.

    The hold is Python's: the signals' handlers only note them for the block, so
    it holds whichever thread the kernel hands the signal to. Outside the main
    thread (where handlers cannot be set) the block runs unchanged. A child
    forked inside the block inherits the noting handlers: it calls
    :func:`release_in_child` first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: caught.append(signum))
        for signum in STOP_SIGNALS
    }
    _HELD.update(previous=previous, caught=caught)
    try:
        yield
    finally:
        _release(previous, caught)


def release_in_child() -> None:
    """In a child forked in :func:`signals_deferred`: the parent's handlers back."""
    if _HELD:
        _release(_HELD["previous"], _HELD["caught"])


def _release(previous: dict, caught: list[int]) -> None:
    _HELD.clear()
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    if caught:  # now handled as it would have been without the block
        signal.raise_signal(caught[0])
