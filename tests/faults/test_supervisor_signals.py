"""The supervisor stops cleanly whenever SIGTERM lands, even in the middle of forking workers.

A child forked a moment before the signal still runs the parent's handler until it installs its
own; if the signal reaches it then, it must not be swallowed. Many quick forks and a SIGTERM
partway through make that window likely on every run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_SUPERVISE = """
import logging, sys, time
from onboarding.entrypoints.supervisor import Supervisor
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
def child(index):
    time.sleep(60)  # a worker that only a signal ends
    return 0
sys.exit(Supervisor(int(sys.argv[1]), child).run())
"""


def _start(workers: int) -> subprocess.Popen[str]:
    return _supervise(_SUPERVISE, str(workers))


def _supervise(script: str, *args: str) -> subprocess.Popen[str]:
    """The supervisor of ``script``, in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _assert_group_gone(process: subprocess.Popen[str]) -> None:
    """Kills what is left of the supervisor's group, then checks nothing of it was left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    if process.stderr is not None:
        process.stderr.close()
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def _wait_for_line(process: subprocess.Popen[str], text: str) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        if text in line:
            return
    raise AssertionError(f"the supervisor exited before logging {text!r}")


def _exit_code(process: subprocess.Popen[str], timeout: float) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"no exit within {timeout}s of SIGTERM: a worker kept on") from None


@pytest.mark.parametrize("at_worker", [0, 3, 7, 12, 20, 29])
def test_sigterm_while_forking_stops_every_worker_and_exits_zero(at_worker: int) -> None:
    process = _start(workers=32)
    try:
        _wait_for_line(process, f"worker {at_worker} started")
        process.send_signal(signal.SIGTERM)
        assert _exit_code(process, timeout=15) == 0
    finally:
        _assert_group_gone(process)  # nothing of the group is left behind


def test_sigterm_after_the_workers_started_stops_them_all() -> None:
    process = _start(workers=4)
    try:
        _wait_for_line(process, "worker 3 started")
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert _exit_code(process, timeout=15) == 0
    finally:
        if process.stderr is not None:
            process.stderr.close()


_RESTART_THEN_STOP = """
import os, signal, sys, tempfile, time
from onboarding.entrypoints.supervisor import Supervisor
crashed = os.path.join(sys.argv[1], "crashed")
def child(index):
    if not os.path.exists(crashed):
        open(crashed, "w").close()
        return 3  # the first worker dies: the supervisor starts it again
    time.sleep(60)
    return 0
parent, blocks, hold = os.getpid(), 0, signal.pthread_sigmask
def stop_just_before_the_block(how, mask):
    global blocks
    if how == signal.SIG_BLOCK and os.getpid() == parent:
        blocks += 1
        if blocks == 2:  # the restart's fork: SIGTERM lands right before the signals are held
            os.kill(parent, signal.SIGTERM)
    return hold(how, mask)
signal.pthread_sigmask = stop_just_before_the_block
sys.exit(Supervisor(1, child).run())
"""


def test_sigterm_just_before_a_restart_forks_starts_no_worker(tmp_path: Path) -> None:
    process = _supervise(_RESTART_THEN_STOP, str(tmp_path))
    try:
        assert _exit_code(process, timeout=15) == 0
    finally:
        _assert_group_gone(process)  # no worker was left behind
