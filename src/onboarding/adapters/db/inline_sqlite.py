"""SQLite without the thread hop: one connection, called inline on the event loop's thread.

aiosqlite runs every statement on a worker thread and hands the result back through the
event loop. For the point queries this service makes (tens of microseconds in SQLite itself)
that hand-over costs more than the query, and under concurrency the threads fight for the GIL.
SQLite serialises writers anyway, and the embedded default is single-process (a lock file
keeps it so), so one connection used inline loses no parallelism.

:class:`InlineEngine` and :class:`InlineConnection` offer the part of SQLAlchemy's
``AsyncEngine``/``AsyncConnection`` the SQLAlchemy-run queries use (listing, health, the outbox
backlog, tests); the hot statements run on the same sqlite3 connection directly (see
``direct``). A connection holds an ``asyncio.Lock`` from ``connect()`` to ``close()``: a
transaction that does suspend (none of ours do; the lock makes it safe regardless) keeps the
connection to itself.

Write transactions close together share one COMMIT (see "group commit" below). Only writes
join a group, and each waits for its COMMIT; anyone else who takes the connection commits the
open group first, so nobody reads writes that are not yet committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Dialect

from onboarding.adapters.db.wal_checkpoint import WalCheckpointer

T = TypeVar("T")
#: How much the latest gap between two writes moves their smoothed gap.
_GAP_WEIGHT = 0.2


class InlineConnection:
    def __init__(self, engine: InlineEngine, connection: Connection) -> None:
        self._engine = engine
        self.sync_connection = connection
        self.dialect: Dialect = connection.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync_connection.execute(statement, parameters)

    def begin(self) -> _Transaction:
        return _Transaction(self.sync_connection)

    async def commit(self) -> None:
        self.sync_connection.commit()

    async def rollback(self) -> None:
        self.sync_connection.rollback()

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self.sync_connection, *args, **kwargs)

    async def close(self) -> None:
        try:
            if self.sync_connection.in_transaction():
                self.sync_connection.rollback()
        finally:
            self._engine.release()

    async def __aenter__(self) -> InlineConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Transaction:
    """``await conn.begin()`` or ``async with conn.begin():`` (commit on success)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def __await__(self) -> Any:
        self._connection.begin()
        return _done().__await__()

    async def __aenter__(self) -> _Transaction:
        self._connection.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._connection.in_transaction():
            return
        if exc is None:
            self._connection.commit()
        else:
            self._connection.rollback()


async def _done() -> None:
    return None


class _Connecting:
    """``await engine.connect()`` or ``async with engine.connect() as conn:``."""

    def __init__(self, engine: InlineEngine) -> None:
        self._engine = engine
        self._connection: InlineConnection | None = None

    def __await__(self) -> Any:
        return self._engine.acquire().__await__()

    async def __aenter__(self) -> InlineConnection:
        self._connection = await self._engine.acquire()
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        await self._connection.close()


class _Group:
    """Write transactions that came close together, in one SQLite transaction; ``outcome`` is
    its COMMIT's."""

    __slots__ = ("outcome", "scheduled")

    def __init__(self) -> None:
        self.outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Nobody may be waiting (a cancelled caller): the failure must not be reported unseen.
        self.outcome.add_done_callback(_seen)
        self.scheduled = False


def _seen(outcome: asyncio.Future[None]) -> None:
    if not outcome.cancelled():
        outcome.exception()


class InlineEngine:
    def __init__(
        self,
        sync_engine: Engine,
        checkpointer: WalCheckpointer | None = None,
        *,
        commit_delay: float = 0.0,
    ) -> None:
        self.sync_engine = sync_engine
        self.checkpointer = checkpointer
        self.dialect = sync_engine.dialect
        self.url = sync_engine.url
        self._lock = asyncio.Lock()
        self._connection: Connection | None = None
        self._group: _Group | None = None
        self._commit_on_release = False
        self._commit_delay = commit_delay
        #: The time between writes, smoothed; a write after a long quiet spell commits at once.
        self._gap = 1.0
        self._last_write = time.monotonic()

    def connect(self) -> _Connecting:
        return _Connecting(self)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        async with self.connect() as conn, conn.begin():
            yield conn

    async def acquire(self, *, join: bool = False) -> InlineConnection:
        """The connection, to this caller alone until ``release``. Unless it comes to ``join``
        the open group (see ``begin_write``), the group is committed first: its writes are
        not for anyone else to read before they are committed."""
        await self._lock.acquire()
        try:
            if self._connection is None or self._connection.invalidated:
                self._connection = self.sync_engine.connect()
                if self.checkpointer is not None:
                    # After the first connection: it has made the file and switched on WAL.
                    self.checkpointer.start()
            if not join:
                self._commit_group()
            return InlineConnection(self, self._connection)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        self._lock.release()
        if self._commit_on_release:
            self._commit_on_release = False
            asyncio.get_running_loop().call_soon(self._commit_when_free, self._group)

    # -- group commit -----------------------------------------------------------------------
    #
    # A COMMIT is the largest single cost of a write on SQLite: the WAL frames of every page
    # the transaction touched, and the locks around them. Write transactions that come close
    # together share one, as PostgreSQL's commit_delay lets them: the first begins it, each
    # after it runs inside a savepoint (undone alone if it fails), and the COMMIT runs at the
    # next turn of the event loop, or ``commit_delay`` after the first write while writes
    # arrive faster than that. Each waits for the COMMIT before it reports success, so nothing
    # is acknowledged before it is committed, and a COMMIT that fails fails them all.

    def begin_write(self, db: Any) -> bool:
        """Begins a write on the held connection; True when it joined an open group."""
        now = time.monotonic()
        self._gap += (min(now - self._last_write, 1.0) - self._gap) * _GAP_WEIGHT
        self._last_write = now
        if self._group is None:
            db.execute("BEGIN IMMEDIATE")
            self._group = _Group()
            return False
        db.execute("SAVEPOINT work")
        return True

    def finish_write(self, db: Any, joined: bool) -> asyncio.Future[None]:
        """Ends a write that succeeded; the future is the outcome of the COMMIT it is in."""
        group = self._group
        assert group is not None
        if joined:
            db.execute("RELEASE work")
        if not group.scheduled:
            group.scheduled = True
            loop = asyncio.get_running_loop()
            if self._gap < self._commit_delay:
                loop.call_later(self._commit_delay, self._commit_when_free, group)
            else:
                loop.call_soon(self._commit_when_free, group)
        return group.outcome

    def abandon_write(self, db: Any, joined: bool) -> asyncio.Future[None] | None:
        """Undoes a write that did not finish; the group's other writes stand. A write that
        joined a group read the group's writes: what it answers waits for the returned COMMIT
        outcome, as theirs do."""
        group = self._group
        assert group is not None
        if not joined:  # it began the group, and nothing joined while it held the connection
            self._group = None
            if db.in_transaction:
                db.execute("ROLLBACK")
            group.outcome.set_result(None)
            return None
        try:
            db.execute("ROLLBACK TO work")
            db.execute("RELEASE work")
        except BaseException as error:
            # SQLite rolled the whole transaction back (it does on some errors): the writes
            # before this one are gone too.
            self._group = None
            group.outcome.set_exception(error)
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return group.outcome

    def _commit_when_free(self, group: _Group) -> None:
        if self._group is not group:  # committed already, by someone who needed the connection
            return
        if self._lock.locked():  # a write of the group is under way: after it
            self._commit_on_release = True
            return
        self._commit_group()

    def _commit_group(self) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        assert self._connection is not None
        db = self._connection.connection.driver_connection
        try:
            db.execute("COMMIT")
        except BaseException as error:
            group.outcome.set_exception(error)
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except Exception:  # noqa: S110 - the COMMIT's error is the one reported
                pass
        else:
            group.outcome.set_result(None)

    async def dispose(self) -> None:
        async with self._lock:
            self._commit_group()
            if self.checkpointer is not None:
                self.checkpointer.stop()
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            self.sync_engine.dispose()
