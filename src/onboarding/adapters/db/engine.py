"""Engines for both databases, set up for concurrency.

SQLite: one connection called inline (see inline_sqlite), WAL (readers never block the
writer) and a busy timeout. Write transactions (see ``direct.begin``) open with
``BEGIN IMMEDIATE`` so they take the write lock up front: a deferred transaction that reads and
then tries to write can fail with SQLITE_BUSY on the upgrade, which no timeout resolves.
PostgreSQL: asyncpg with timeouts, so an unreachable database answers instead of hanging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from onboarding.adapters.db.inline_sqlite import InlineEngine
from onboarding.adapters.db.kept_connections import keep_connections
from onboarding.adapters.db.wal_checkpoint import WalCheckpointer

#: The serving connection checkpoints (and so restarts the log) only past this many pages; the
#: checkpoint thread has copied nearly all of them by then (see wal_checkpoint).
WAL_RESTART_PAGES = 4000
#: PostgreSQL connections are replaced after this long (the pool's recycle).
RECYCLE_SECONDS = 1800


def create_engine(
    url: str, *, timeout: float = 5.0, pool_size: int = 10, sqlite_commit_delay: float = 0.0
) -> AsyncEngine | InlineEngine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url, timeout=timeout, commit_delay=sqlite_commit_delay)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeout,
        # The direct path keeps its connections (see kept_connections), so a checkout from
        # the pool is rare and its ping cheap; a ping that finds the server gone invalidates
        # every connection made before, as after a restart or failover they all are.
        pool_pre_ping=True,
        pool_recycle=RECYCLE_SECONDS,
        connect_args={
            "timeout": timeout,
            "command_timeout": timeout,
            "server_settings": {"application_name": "onboarding"},
        },
    )
    # The direct path keeps up to pool_size connections between uses; the overflow (as many
    # again) is left to everyone else.
    keep_connections(engine, keep=pool_size, recycle_seconds=RECYCLE_SECONDS)
    return engine


def for_reads(engine: AsyncEngine | InlineEngine) -> AsyncEngine | InlineEngine:
    """The engine for reads of one statement. On PostgreSQL it runs them in autocommit: the
    driver otherwise wraps each in BEGIN and ROLLBACK, three round trips instead of one, for
    the same snapshot a lone statement has anyway."""
    if isinstance(engine, AsyncEngine):
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _sqlite_engine(url: str, *, timeout: float, commit_delay: float) -> InlineEngine:
    # The URL names aiosqlite (the contract's spelling); the work is done by the standard
    # sqlite3 module, inline (see inline_sqlite).
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    engine = sa_create_engine(sync_url, connect_args={"timeout": timeout})
    busy_ms = int(timeout * 1000)
    database = sync_url.database
    checkpointer = None
    if database and database != ":memory:" and sync_url.query.get("mode") != "memory":
        checkpointer = WalCheckpointer(Path(database), busy_timeout_ms=busy_ms)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module; "begin" below emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            f"busy_timeout={busy_ms}",
            "foreign_keys=ON",
            # A file database is checkpointed by its own thread (see wal_checkpoint).
            *((f"wal_autocheckpoint={WAL_RESTART_PAGES}",) if checkpointer is not None else ()),
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # SQLAlchemy-run work (reads, and tests' own set-up) begins deferred; writes of the
        # service begin IMMEDIATE in direct.begin.
        connection.exec_driver_sql("BEGIN")

    return InlineEngine(engine, checkpointer, commit_delay=commit_delay)
