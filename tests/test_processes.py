"""md_validation.processes.terminate: SIGTERM first, SIGKILL when ignored."""

import logging
import multiprocessing
import subprocess
import sys
import time

from md_validation.processes import terminate

IGNORES_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_popen_that_ignores_sigterm_is_killed(caplog):
    proc = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"  # its handler is in place
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="md_validation.processes"):
        terminate(proc, "stubborn child", timeout=0.5)
    assert proc.returncode == -9  # SIGKILL, after the SIGTERM was ignored
    assert time.perf_counter() - start < 5
    assert "stubborn child did not stop on SIGTERM" in caplog.text
    proc.stdout.close()


def test_a_popen_that_obeys_sigterm_is_not_killed(caplog):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with caplog.at_level(logging.WARNING, logger="md_validation.processes"):
        terminate(proc, "child", timeout=5)
    assert proc.returncode == -15
    assert caplog.text == ""


def test_an_ended_process_and_none_are_left_alone():
    terminate(None, "nothing")
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    terminate(process, "ended")  # no signal to a reused pid, no error
    assert process.exitcode == 0
    running = multiprocessing.get_context("spawn").Process(
        target=time.sleep, args=(60,)
    )
    running.start()
    terminate(running, "sleeper", timeout=5)
    assert running.exitcode == -15
