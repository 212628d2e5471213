"""Stopping a child process: SIGTERM first, SIGKILL when it outlives a timeout.

One place for the escalation that the i-PI engine (its server and client) and the
replica pool (its workers) share. The caller owns the process object: nothing here
closes it, so an executor that owns its workers keeps working.
"""

from __future__ import annotations

import logging
import subprocess

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
