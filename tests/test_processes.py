"""md_validation.processes: terminate escalates; signals_deferred holds a stop."""

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from md_validation.processes import release_in_child, signals_deferred, terminate

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


def _child_handlers(queue):
    queue.put(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    release_in_child()
    queue.put(signal.getsignal(signal.SIGINT) is signal.default_int_handler)


@pytest.mark.parametrize("threads", [0, 2])
def test_a_stop_during_the_block_is_raised_after_it(threads):
    """Whichever thread the kernel hands the signal to (other threads running)."""
    stop = threading.Event()
    others = [threading.Thread(target=stop.wait) for _ in range(threads)]
    for thread in others:
        thread.start()
    reached_the_end = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # a handled signal would have raised by now
                reached_the_end = True
    finally:
        stop.set()
        for thread in others:
            thread.join()
    assert reached_the_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_child_forked_in_the_block_gets_the_handlers_back():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with signals_deferred():
        child = context.Process(target=_child_handlers, args=(queue,))
        child.start()
    assert queue.get(timeout=10) is False  # inherited the noting handler
    assert queue.get(timeout=10) is True
    child.join(10)
    assert child.exitcode == 0
