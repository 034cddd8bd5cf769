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
connection to itself, and nobody reads its uncommitted writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Dialect

from onboarding.adapters.db.wal_checkpoint import WalCheckpointer

T = TypeVar("T")


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


class InlineEngine:
    def __init__(self, sync_engine: Engine, checkpointer: WalCheckpointer | None = None) -> None:
        self.sync_engine = sync_engine
        self.checkpointer = checkpointer
        self.dialect = sync_engine.dialect
        self.url = sync_engine.url
        self._lock = asyncio.Lock()
        self._connection: Connection | None = None

    def connect(self) -> _Connecting:
        return _Connecting(self)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        async with self.connect() as conn, conn.begin():
            yield conn

    async def acquire(self) -> InlineConnection:
        await self._lock.acquire()
        try:
            if self._connection is None or self._connection.invalidated:
                self._connection = self.sync_engine.connect()
                if self.checkpointer is not None:
                    # After the first connection: it has made the file and switched on WAL.
                    self.checkpointer.start()
            return InlineConnection(self, self._connection)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        self._lock.release()

    async def dispose(self) -> None:
        async with self._lock:
            if self.checkpointer is not None:
                self.checkpointer.stop()
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            self.sync_engine.dispose()
