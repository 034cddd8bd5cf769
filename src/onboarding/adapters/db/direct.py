"""Statements run by the database driver itself: the hot paths' way to the database.

SQLAlchemy's execution layer costs more per statement than these statements cost the database:
an execution context, a cache key, parameter and result processing, events, and on asyncpg a
greenlet switch each way. For a CreateAgreement (four statements and a commit) that layer was
most of its database time. Here statements are still built with Core, once, at import; each is
compiled once per dialect (and, for an INSERT or UPDATE, per set of columns given), and run on
the driver with the columns' own bind and result processors:

- SQLite: the inline engine's sqlite3 connection, ``BEGIN IMMEDIATE`` … ``COMMIT``, the COMMIT
  shared by write transactions close together (see ``inline_sqlite``).
- PostgreSQL: the pooled connection's asyncpg connection, whose statement cache prepares each
  statement once. SQLAlchemy's pool still owns the connection: checkout, recycling, and
  invalidation of a connection that failed mid-call (a cancelled or timed-out call, a lost
  server), which must not go back to the pool. Between uses a few are kept out of the pool
  (``kept_connections``), whose checkout and checkin cost more than a statement. Round trips
  cost too, so writes whose results nobody reads are queued and sent together
  (``PgConnection.defer``).

A connection runs its statements in a transaction after ``begin``, and each on its own
(autocommit) otherwise, for work whose statements stand alone: a point read, a claim.

Errors are the drivers' own; ``errors.translate`` knows them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import asyncpg
from sqlalchemy import util as sa_util
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.dml import ValuesBase

from onboarding.adapters.db.inline_sqlite import InlineConnection, InlineEngine
from onboarding.adapters.db.kept_connections import KeptConnections, kept_by

ASYNCPG = asyncpg_dialect.dialect()
_REQUIRED = sa_util.symbol("REQUIRED")
#: An INSERT or UPDATE is compiled per set of columns given; past this many sets, per call.
_MAX_SHAPES = 64
Processor = Callable[[Any], Any] | None
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
)


class RecordRow:
    """A row read by attribute, as the row mappers read SQLAlchemy rows."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


class _Compiled:
    """One statement in one dialect's SQL, with what turns values into its arguments and its
    rows into ``RecordRow``."""

    __slots__ = ("_binds", "_columns", "sql")

    def __init__(self, statement: Any, dialect: Dialect, column_keys: Sequence[str] | None):
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = str(compiled)
        fixed = dict(compiled.params)
        # Columns whose Python-side default SQLAlchemy would compute at execution: a constant
        # is taken here; anything else must come with the values.
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
            default = column.default
            scalar = default is not None and default.is_scalar
            fixed[column.key] = default.arg if scalar else _REQUIRED  # type: ignore[union-attr]
        self._binds: list[tuple[str, Any, Processor]] = [
            (
                name,
                fixed.get(name, _REQUIRED),
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in compiled.positiontup or ()
        ]
        self._columns: list[tuple[str, Processor]] = [
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in statement.exported_columns
        ]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name, fixed, process in self._binds:
            value = values.get(name, fixed)
            if value is _REQUIRED:
                raise KeyError(f"no value for the bind parameter {name!r}")
            arguments.append(process(value) if process is not None and value is not None else value)
        return arguments

    def row(self, values: Sequence[Any]) -> RecordRow:
        return RecordRow(
            {
                key: process(value) if process is not None else value
                for (key, process), value in zip(self._columns, values, strict=True)
            }
        )


class Statement:
    """A Core statement built once, compiled on first use for each dialect."""

    __slots__ = ("_by_columns", "_compiled", "_statement", "needs_transaction", "table")

    def __init__(self, statement: Any) -> None:
        self._statement = statement
        #: The table an INSERT, UPDATE or DELETE writes; None for a SELECT.
        self.table: Any = getattr(statement, "table", None)
        #: A write, or a read that locks what it reads: its effect lasts until the commit.
        self.needs_transaction = (
            self.table is not None or getattr(statement, "_for_update_arg", None) is not None
        )
        # An INSERT or UPDATE without .values() takes its columns from the values given.
        self._by_columns = isinstance(statement, ValuesBase) and not (
            statement._values
            or statement._multi_values
            or getattr(statement, "select", None) is not None
        )
        self._compiled: dict[Any, _Compiled] = {}

    def compiled(self, dialect: Dialect, values: Mapping[str, Any]) -> _Compiled:
        key: Any = dialect.name
        if self._by_columns:
            key = (key, *values)
        found = self._compiled.get(key)
        if found is None:
            found = _Compiled(self._statement, dialect, list(values) if self._by_columns else None)
            if len(self._compiled) < _MAX_SHAPES:
                self._compiled[key] = found
        return found

    def __str__(self) -> str:
        return str(self._statement)


_EMPTY: Mapping[str, Any] = {}
#: Statement watchers per engine (see ``watch``); empty outside tests.
_WATCHERS: dict[int, list[Callable[[str], None]]] = {}


@contextmanager
def watch(engine: Any) -> Iterator[list[str]]:
    """Collects the SQL of every statement run here on ``engine`` while inside."""
    seen: list[str] = []
    watchers = _WATCHERS.setdefault(id(engine.sync_engine), [])
    watchers.append(seen.append)
    try:
        yield seen
    finally:
        watchers.remove(seen.append)
        if not watchers:
            del _WATCHERS[id(engine.sync_engine)]


def _announce(engine: Any, sql: str) -> None:
    for watcher in _WATCHERS.get(id(engine.sync_engine), ()):
        watcher(sql)


class StaleRead(Exception):
    """A write gated on a row as it was read (see ``PgConnection.defer``) found it changed."""


class SqliteConnection:
    """The inline engine's one connection, held from checkout to close; statements run in a
    transaction after ``begin``, each on its own otherwise. A transaction may share its COMMIT
    with others close to it (see ``InlineEngine``): ``commit`` returns once that has run."""

    def __init__(self, engine: InlineEngine, connection: InlineConnection) -> None:
        self._engine = engine
        self._connection = connection
        self._db = connection.sync_connection.connection.driver_connection
        self.dialect: Dialect = engine.dialect
        self.dialect_name = "sqlite"
        #: None outside a write; else whether the write joined an open group.
        self._joined: bool | None = None
        self._released = False
        #: A write transaction here begins at once (see ``PgConnection.begin_when_needed``).
        self.begin_pending = False

    def _run(self, statement: Statement, values: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        compiled = statement.compiled(self.dialect, values)
        if _WATCHERS:
            _announce(self._engine, compiled.sql)
        return compiled, self._db.execute(compiled.sql, compiled.arguments(values))

    async def fetch_one(
        self, statement: Statement, values: Mapping[str, Any] = _EMPTY
    ) -> RecordRow | None:
        compiled, cursor = self._run(statement, values)
        found = cursor.fetchone()
        return compiled.row(found) if found is not None else None

    async def fetch_all(
        self, statement: Statement, values: Mapping[str, Any] = _EMPTY
    ) -> list[RecordRow]:
        compiled, cursor = self._run(statement, values)
        return [compiled.row(found) for found in cursor.fetchall()]

    async def execute(self, statement: Statement, values: Mapping[str, Any] = _EMPTY) -> None:
        self._run(statement, values)

    def defer(self, statement: Statement, values: Mapping[str, Any], *, gate: bool = False) -> None:
        """A write whose result nobody reads (see ``PgConnection.defer``). SQLite has no round
        trip to save: it runs now, and a gate that returns no row raises ``StaleRead`` there
        (the write transaction rolls back what came before it)."""
        _, cursor = self._run(statement, values)
        if gate and cursor.fetchone() is None:
            raise StaleRead()

    async def send_deferred(self) -> None:
        """Nothing waits: ``defer`` ran each write at once."""

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        compiled = statement.compiled(self.dialect, rows[0])
        if _WATCHERS:
            _announce(self._engine, compiled.sql)
        self._db.executemany(compiled.sql, [compiled.arguments(values) for values in rows])

    async def begin(self) -> None:
        self._joined = self._engine.begin_write(self._db)

    async def commit(self) -> None:
        """Returns once the group this write is in has committed (see ``InlineEngine``); the
        connection is given back first, for the rest of the group."""
        assert self._joined is not None
        outcome = self._engine.finish_write(self._db, self._joined)
        self._joined = None
        self._released = True
        await self._connection.close()
        # Shielded: a caller that gives up does not take the others' COMMIT with it.
        await asyncio.shield(outcome)

    async def close(self) -> None:
        if self._released:
            return
        self._released = True
        group = None
        try:
            if self._joined is not None:
                joined, self._joined = self._joined, None
                group = self._engine.abandon_write(self._db, joined)
            elif self._db.in_transaction:
                self._db.execute("ROLLBACK")
        finally:
            await self._connection.close()
        if group is not None:
            # What this write saw stands only if the group commits: its caller hears after.
            with suppress(Exception):
                await asyncio.shield(group)


class PgConnection:
    """One pooled connection's asyncpg connection; statements run in a transaction after
    ``begin``, each on its own otherwise.

    After ``begin_when_needed`` the BEGIN waits for the first statement that needs it: a write,
    or a read that locks. Plain reads before it run on their own (under READ COMMITTED each
    statement of a transaction has a snapshot of its own anyway). If none comes, the queued
    writes reach the server at the commit as one statement, atomic by itself: two round trips
    (BEGIN, COMMIT) fewer. That is what ``CreateAgreement`` does with its phone's quota read
    plainly and written only if unchanged (a gate, see ``defer``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        pooled: PoolProxiedConnection,
        kept: KeptConnections,
        generation: int,
    ) -> None:
        self._engine = engine
        self._pooled = pooled
        self._kept = kept
        self._generation = generation
        self._db: Any = pooled.driver_connection
        self._broken = False
        self._deferred: list[tuple[Statement, _Compiled, list[Any], bool]] = []
        #: True from ``begin_when_needed`` until the BEGIN is sent (or the commit, without it).
        self.begin_pending = False
        self.dialect: Dialect = ASYNCPG
        self.dialect_name = "postgresql"

    async def _call(self, method: Callable[..., Any], sql: str, *arguments: Any) -> Any:
        if _WATCHERS:
            _announce(self._engine, sql)
        try:
            return await method(sql, *arguments)
        except BaseException as error:
            # Only a statement the server refused leaves the connection as it was. Cancelled,
            # timed out, lost, or the server shutting down: it is in an unknown state.
            if not isinstance(error, asyncpg.PostgresError) or isinstance(error, _CONNECTION_LOST):
                self._broken = True
            raise

    def defer(self, statement: Statement, values: Mapping[str, Any], *, gate: bool = False) -> None:
        """Queues a write whose result nobody reads. Queued writes reach the server before the
        next statement (or the commit) as one: ``WITH w0 AS (write), w1 AS (write) write``, one
        round trip instead of one each. A write to a table already in the statement starts
        another, so no statement touches a row twice (PostgreSQL leaves the outcome of that
        undefined). An error in a queued write surfaces where the queue is sent, still inside
        the transaction.

        A ``gate`` is a write that returns a row only when what it was conditioned on held (an
        UPDATE … WHERE the row is as read … RETURNING 1). The other writes of its statement
        happen only if every gate returned its row; if one did not, nothing of the statement
        is written and ``StaleRead`` is raised."""
        compiled = statement.compiled(ASYNCPG, values)
        self._deferred.append((statement, compiled, compiled.arguments(values), gate))

    async def send_deferred(self) -> None:
        """Sends the queued writes now (they would go before the next statement anyway)."""
        await self._send_deferred(committing=False)

    async def _send_deferred(self, *, committing: bool) -> None:
        if not self._deferred:
            return
        deferred, self._deferred = self._deferred, []
        batches: list[list[tuple[_Compiled, list[Any], bool]]] = [[]]
        tables: set[int] = set()
        for statement, compiled, arguments, gate in deferred:
            if id(statement.table) in tables:
                batches.append([])
                tables.clear()
            tables.add(id(statement.table))
            batches[-1].append((compiled, arguments, gate))
        if self.begin_pending and (not committing or len(batches) > 1):
            await self._begin_now()  # more than one statement, or more to come: a transaction
        for batch in batches:
            sql, arguments, gated = _combined(batch)
            if not gated:
                await self._call(self._db.execute, sql, *arguments)
            elif not await self._call(self._db.fetchval, sql, *arguments):
                raise StaleRead()

    async def _begin_now(self) -> None:
        self.begin_pending = False
        await self._call(self._db.execute, "BEGIN")

    async def _ready_for(self, statement: Statement) -> None:
        if self.begin_pending and statement.needs_transaction:
            await self._begin_now()
        await self.send_deferred()

    async def fetch_one(
        self, statement: Statement, values: Mapping[str, Any] = _EMPTY
    ) -> RecordRow | None:
        await self._ready_for(statement)
        compiled = statement.compiled(ASYNCPG, values)
        found = await self._call(self._db.fetchrow, compiled.sql, *compiled.arguments(values))
        return compiled.row(found) if found is not None else None

    async def fetch_all(
        self, statement: Statement, values: Mapping[str, Any] = _EMPTY
    ) -> list[RecordRow]:
        await self._ready_for(statement)
        compiled = statement.compiled(ASYNCPG, values)
        rows = await self._call(self._db.fetch, compiled.sql, *compiled.arguments(values))
        return [compiled.row(found) for found in rows]

    async def execute(self, statement: Statement, values: Mapping[str, Any] = _EMPTY) -> None:
        self.defer(statement, values)
        await self.send_deferred()

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        await self._ready_for(statement)
        compiled = statement.compiled(ASYNCPG, rows[0])
        arguments = [compiled.arguments(values) for values in rows]
        await self._call(self._db.executemany, compiled.sql, arguments)

    async def begin(self) -> None:
        await self._call(self._db.execute, "BEGIN")

    def begin_when_needed(self) -> None:
        """A transaction from the first statement that needs one (see the class)."""
        self.begin_pending = True

    async def commit(self) -> None:
        await self._send_deferred(committing=True)
        if self.begin_pending:  # no BEGIN went: the writes, if any, committed on their own
            self.begin_pending = False
            return
        await self._call(self._db.execute, "COMMIT")

    async def close(self) -> None:
        self._deferred.clear()  # never sent: they go with the rollback
        try:
            if not self._broken and self._db.is_in_transaction():
                try:
                    await self._db.execute("ROLLBACK")
                except BaseException:
                    self._broken = True
                    raise
        finally:
            await self._kept.give_back(self._pooled, self._generation, broken=self._broken)


Connection = SqliteConnection | PgConnection

_PARAMETER = re.compile(r"\$(\d+)")
#: Combined SQL by the SQL of its parts, for the few shapes of queued writes there are.
_COMBINED: dict[tuple[str, ...], str] = {}


def _renumbered(sql: str, offset: int) -> str:
    return _PARAMETER.sub(lambda found: f"${int(found.group(1)) + offset}", sql)


def _combined(batch: Sequence[tuple[_Compiled, list[Any], bool]]) -> tuple[str, list[Any], bool]:
    """Writes of distinct tables as one PostgreSQL statement: all but the last as data-modifying
    CTEs, their $n renumbered after the ones before them. (Compiled SQL carries every value as
    a parameter, never as a literal, so every $n is a parameter.) With gates, every write is a
    CTE, each of the others conditioned on all the gates, and the statement answers whether
    they all returned their row. Also says whether there were gates."""
    arguments = [argument for _, part, _ in batch for argument in part]
    gated = any(gate for _, _, gate in batch)
    if len(batch) == 1 and not gated:
        return batch[0][0].sql, arguments, False
    key = tuple((compiled.sql, gate) for compiled, _, gate in batch)
    sql = _COMBINED.get(key)
    if sql is None:
        parts, offset = [], 0
        for compiled, part, _ in batch:
            parts.append(_renumbered(compiled.sql, offset))
            offset += len(part)
        if gated:
            gates = [f"g{n}" for n, (_, _, gate) in enumerate(batch) if gate]
            passed = " AND ".join(f"EXISTS (SELECT FROM {name})" for name in gates)
            flags = [gate for _, _, gate in batch]
            items = list(zip(range(len(parts)), parts, flags, strict=True))
            # The gates first: a WITH item sees only those before it.
            ctes = ", ".join(
                [f"g{n} AS ({part})" for n, part, gate in items if gate]
                + [f"w{n} AS ({_only_if(part, passed)})" for n, part, gate in items if not gate]
            )
            sql = f"WITH {ctes} SELECT {passed}"
        else:
            ctes = ", ".join(f"w{n} AS ({part})" for n, part in enumerate(parts[:-1]))
            sql = f"WITH {ctes} {parts[-1]}"
        if len(_COMBINED) < _MAX_SHAPES:
            _COMBINED[key] = sql
    return sql, arguments, gated


# Anything else (ON CONFLICT, RETURNING, a subquery) does not match, and is refused.
_INSERT_VALUES = re.compile(r"^(INSERT INTO \S+ \([^()]*\)) VALUES \(([^()]*)\)$")
_UPDATE_WHERE = re.compile(r"^(UPDATE \S+ SET [^()]*?) WHERE ([^()]*)$")


def _only_if(sql: str, condition: str) -> str:
    """A compiled single-row INSERT … VALUES or UPDATE … WHERE, written only if ``condition``
    holds. (The asyncpg dialect casts every parameter, so ``SELECT $1::UUID, …`` keeps the
    types VALUES would have taken from the columns.)"""
    found = _INSERT_VALUES.match(sql)
    if found is not None:
        return f"{found.group(1)} SELECT {found.group(2)} WHERE {condition}"
    found = _UPDATE_WHERE.match(sql)
    if found is not None:
        return f"{found.group(1)} WHERE {condition} AND ({found.group(2)})"
    raise ValueError(f"cannot make this write conditional: {sql}")


async def begin_when_needed(engine: AsyncEngine | InlineEngine) -> Connection:
    """A write transaction that on PostgreSQL begins with its first statement that needs one
    (see ``PgConnection``); on SQLite as ``begin``."""
    if isinstance(engine, InlineEngine):
        return await begin(engine)
    connection = await connect(engine)
    assert isinstance(connection, PgConnection)
    connection.begin_when_needed()
    return connection


async def begin(engine: AsyncEngine | InlineEngine) -> Connection:
    """A write transaction: on SQLite it holds the write lock from the start (IMMEDIATE), so a
    read followed by a write cannot fail on the upgrade."""
    connection = await connect(engine, join=True)
    try:
        await connection.begin()
    except BaseException:
        await connection.close()
        raise
    return connection


async def connect(engine: AsyncEngine | InlineEngine, *, join: bool = False) -> Connection:
    """A connection with no transaction: each statement commits on its own until ``begin``."""
    if isinstance(engine, InlineEngine):
        return SqliteConnection(engine, await engine.acquire(join=join))
    kept = kept_by(engine)
    pooled, generation = await kept.take(engine)
    return PgConnection(engine, pooled, kept, generation)


@asynccontextmanager
async def transaction(engine: AsyncEngine | InlineEngine) -> AsyncIterator[Connection]:
    """``begin``, and the connection given back (rolled back unless committed) on leaving."""
    tx = await begin(engine)
    try:
        yield tx
    finally:
        await tx.close()


@asynccontextmanager
async def autocommit(engine: AsyncEngine | InlineEngine) -> AsyncIterator[Connection]:
    """One connection with no transaction around its statements: each commits on its own. For
    work whose every statement stands alone, it saves BEGIN and COMMIT (two round trips on
    PostgreSQL)."""
    connection = await connect(engine)
    try:
        yield connection
    finally:
        await connection.close()


async def read_one(
    engine: AsyncEngine | InlineEngine, statement: Statement, values: Mapping[str, Any]
) -> RecordRow | None:
    """One read outside any transaction: a point read needs no more than a statement's own
    snapshot, and a transaction would cost two more round trips on PostgreSQL."""
    async with autocommit(engine) as connection:
        return await connection.fetch_one(statement, values)
