"""``onboarding serve --workers N``: N server processes sharing one port.

The parent forks before it has created (or even imported) anything of gRPC. gRPC's core does
not survive a fork once it has started threads. Each child then runs a whole server (gRPC,
SMS relay, INN worker) and binds the port with SO_REUSEPORT, so the kernel spreads connections
over them. Background work is shared through the database: claims are leased and skip locked
rows, so each outbox message and pending lookup is worked by one process at a time.

The parent forwards SIGTERM/SIGINT to the children and waits for them to drain. A child that
dies unexpectedly is started again after a short pause, so one crash does not shrink the pool.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger(__name__)

_RESTART_PAUSE_SECONDS = 1.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Supervisor:
    def __init__(
        self,
        workers: int,
        run_child: Callable[[int], int],
        *,
        on_started: Callable[[], None] = lambda: None,
        on_exit: Callable[[int], None] = lambda _pid: None,
    ) -> None:
        self._workers = workers
        self._run_child = run_child
        self._on_started = on_started
        self._on_exit = on_exit
        self._children: dict[int, int] = {}  # pid -> worker index
        self._stopping = False

    def run(self) -> int:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        for index in range(self._workers):
            if self._stopping:  # stopped while spawning: the rest would never be signalled
                break
            self._spawn(index)
        self._on_started()
        failed = False
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait
                continue
            index = self._children.pop(pid, None)
            if index is None:
                continue
            self._on_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                # A worker still starting has no handler yet: SIGTERM's default ends it.
                failed |= code not in (0, -signal.SIGTERM)
                continue
            log.error("worker %d (pid %d) exited with %d; starting it again", index, pid, code)
            time.sleep(_RESTART_PAUSE_SECONDS)
            if not self._stopping:
                self._spawn(index)
        return 1 if failed else 0

    def _spawn(self, index: int) -> None:
        # Until the child has its own handlers and the parent knows the child's pid, a stop
        # signal must wait: a child running the parent's inherited handler would swallow it
        # and serve on, and a parent handling it mid-spawn would not signal the new child.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            # Asked again with the signals held: a stop handled just before the block has
            # signalled the children it knew, and would never signal this one.
            if self._stopping:
                return
            pid = os.fork()
            if pid == 0:
                self._be_child(index)
            self._children[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        log.info("worker %d started (pid %d)", index, pid)

    def _be_child(self, index: int) -> NoReturn:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            code = self._run_child(index)
        except BaseException:
            log.exception("worker %d crashed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _on_stop(self, signum: int, _frame: object) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("signal %s: stopping %d workers", signal.Signals(signum).name, len(self._children))
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
