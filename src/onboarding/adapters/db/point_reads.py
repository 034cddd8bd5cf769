"""Point reads run by the database driver itself, for the reads whole RPCs consist of.

SQLAlchemy's execution layer costs more per statement than the query does: an execution
context, parameter and result processing, and on asyncpg a greenlet switch. For one point
query the issue's scale puts SQLAlchemy over asyncpg at 0.29 of a bare server and asyncpg alone
at 0.42; SQLAlchemy over sqlite3 costs several times what sqlite3 does. GetAgreement and
GetInnLookup are one such read each. Their statements are still built with Core, but compiled
once for the dialect and run on the pooled connection's driver:

- PostgreSQL: asyncpg's ``fetchrow``, which prepares and caches the statement. Values go as
  they are: these statements bind only what asyncpg takes natively (UUID, text), and asyncpg
  answers with UUIDs, aware UTC datetimes, bytes, str and int, which the mappers expect.
- SQLite: the inline engine's sqlite3 connection, with the columns' own bind and result
  processors (UUIDs as hex text, instants as UTC text), taken once from the types.

On PostgreSQL a call that fails invalidates its connection: SQLAlchemy did not run it, so it
cannot tell a lost connection from a bad query, and a broken one must not go back to the pool.
(A sqlite3 call is synchronous and over a file: it cannot leave its connection half-way.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.inline_sqlite import InlineEngine

_ASYNCPG = asyncpg_dialect.dialect()


class RecordRow:
    """A driver's row read by attribute, as the row mappers read SQLAlchemy rows."""

    __slots__ = ("_values",)

    def __init__(self, values: Any) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


class PgPointQuery:
    def __init__(self, statement: Any, engine: AsyncEngine) -> None:
        self._engine = engine
        compiled = statement.compile(dialect=_ASYNCPG)
        self._sql = str(compiled)
        self._names = list(compiled.positiontup or ())
        #: Values compiled into the statement itself, e.g. a status compared with a literal.
        self._fixed = dict(compiled.params)

    async def fetch_row(self, **values: Any) -> RecordRow | None:
        args = [values[name] if name in values else self._fixed[name] for name in self._names]
        async with self._engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            try:
                record = await driver.fetchrow(self._sql, *args)
            except BaseException:
                await conn.invalidate()
                raise
        return RecordRow(record) if record is not None else None


class SqlitePointQuery:
    def __init__(self, statement: Any, engine: InlineEngine) -> None:
        self._engine = engine
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._sql = str(compiled)
        self._fixed = dict(compiled.params)
        self._binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or ()
        ]
        self._columns: list[tuple[str, Callable[[Any], Any] | None]] = [
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in statement.selected_columns
        ]

    async def fetch_row(self, **values: Any) -> RecordRow | None:
        args = []
        for name, process in self._binds:
            value = values[name] if name in values else self._fixed[name]
            args.append(process(value) if process is not None else value)
        async with self._engine.connect() as conn:
            driver = conn.sync_connection.connection.driver_connection
            found = driver.execute(self._sql, args).fetchone()
        if found is None:
            return None
        return RecordRow(
            {
                key: process(value) if process is not None else value
                for (key, process), value in zip(self._columns, found, strict=True)
            }
        )


def point_query(statement: Any, engine: Any) -> PgPointQuery | SqlitePointQuery:
    """The statement as a point read on the engine. It opens no transaction on either
    database, so the engine needs no autocommit copy (see ``engine.for_reads``)."""
    if isinstance(engine, InlineEngine):
        return SqlitePointQuery(statement, engine)
    return PgPointQuery(statement, engine)
