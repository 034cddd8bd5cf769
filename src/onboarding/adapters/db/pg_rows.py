"""Hot point reads on PostgreSQL, run by asyncpg itself.

SQLAlchemy's async layer costs more per statement than asyncpg's own call (a greenlet switch,
an execution context, result processing): for one point query the issue's scale puts them at
0.29 and 0.42 of a bare server. The reads that whole RPCs consist of (GetAgreement,
GetInnLookup) are still built with Core, but compiled once for the asyncpg dialect and run with
``fetchrow`` on the pooled connection's driver (which prepares and caches the statement).

Values go to asyncpg as they are, with no bind processing: these statements bind only what
asyncpg takes natively (UUID, text). asyncpg answers with native types too: UUID, aware UTC
datetimes for ``timestamptz``, bytes, str and int, which is what the mappers expect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

_DIALECT = asyncpg_dialect.dialect()


class RecordRow:
    """An asyncpg record read by attribute, as the row mappers read SQLAlchemy rows."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None


class PgPointQuery:
    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        self._sql = str(compiled)
        self._names = list(compiled.positiontup or ())
        #: Values compiled into the statement itself, e.g. a status compared with a literal.
        self._fixed = dict(compiled.params)

    async def fetch_row(self, engine: AsyncEngine, **values: Any) -> RecordRow | None:
        args = [values[name] if name in values else self._fixed[name] for name in self._names]
        async with engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            try:
                record = await driver.fetchrow(self._sql, *args)
            except BaseException:
                # SQLAlchemy did not run this, so it cannot tell a lost connection from a bad
                # query: never give the pool back a connection that may be broken or half-way
                # through a cancelled statement. The next read simply connects again.
                await conn.invalidate()
                raise
        return RecordRow(record) if record is not None else None
