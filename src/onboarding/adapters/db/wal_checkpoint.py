"""SQLite's WAL checkpoints, done mostly by a thread of their own instead of inside a commit.

By default the commit that takes the write-ahead log past 1000 pages also checkpoints it: it
copies the pages into the database file and syncs both to disk. On the inline engine that
commit runs on the event loop's thread, so every RPC in the process waits for that work.

Here a thread with its own connection runs a PASSIVE checkpoint every ``interval`` seconds.
PASSIVE never waits for readers or writers, and the sqlite3 module lets go of the GIL while
SQLite works, so the loop keeps serving meanwhile. Under steady writes such a checkpoint is
always a little behind, and the log restarts from its beginning only once all of it has been
copied; so the serving connection still checkpoints, but rarely (``WAL_RESTART_PAGES`` in
``engine``) and cheaply, since by then the thread has copied nearly everything.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class WalCheckpointer:
    def __init__(self, path: Path, *, interval: float = 0.2, busy_timeout_ms: int = 5000) -> None:
        self._path = path
        self._interval = interval
        self._busy_timeout_ms = busy_timeout_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread after one last checkpoint."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=10)

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        try:
            connection.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            while not self._stop.wait(self._interval):
                self._checkpoint(connection)
            self._checkpoint(connection)
        finally:
            connection.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as error:  # the next round tries again
            log.warning("WAL checkpoint failed: %s", error)
