"""``UtcDateTime`` on both databases: instants in any zone come back the same instant in UTC, and
SQLite keeps the very text SQLAlchemy's own DATETIME writes, so rows written before and after
the type converted by itself read alike and sort alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.types import UtcDateTime

metadata = MetaData()
instants = Table(
    "utc_datetime_check",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime, nullable=True),
)
MOSCOW = timezone(timedelta(hours=3))
CASES = [
    datetime(2031, 5, 6, 7, 8, 9, 123457, tzinfo=UTC),
    datetime(2031, 5, 6, 10, 8, 9, 123457, tzinfo=MOSCOW),  # the same instant as the first
    datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC),  # no microseconds: still six digits on SQLite
    datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),  # a year of three digits: still four on SQLite
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


async def _scalar(conn: object, statement: object) -> object:
    return (await conn.execute(statement)).scalar()  # type: ignore[attr-defined]


@pytest.fixture
async def table(fresh_engine: AsyncEngine) -> AsyncEngine:
    async with fresh_engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return fresh_engine


async def test_instants_come_back_equal_and_in_utc(table: AsyncEngine) -> None:
    async with table.begin() as conn:
        await conn.execute(insert(instants), [{"id": i, "at": at} for i, at in enumerate(CASES)])
        await conn.execute(insert(instants), [{"id": 99, "at": None}])
        rows = (await conn.execute(select(instants).order_by(instants.c.id))).all()
    for (_, read), written in zip(rows, CASES, strict=False):
        assert read == written
        assert read.tzinfo is UTC
    assert rows[-1].at is None


async def test_text_order_is_time_order(table: AsyncEngine) -> None:
    """SQLite compares the text: a whole second must not sort after its own microseconds."""
    whole = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    later = [whole + timedelta(microseconds=1), whole + timedelta(seconds=1)]
    async with table.begin() as conn:
        await conn.execute(insert(instants), [{"id": 1, "at": whole}])
        for at in later:
            found = await _scalar(conn, select(instants.c.id).where(instants.c.at < at))
            assert found == 1
        assert await _scalar(conn, select(instants.c.id).where(instants.c.at == whole)) == 1


async def test_a_naive_datetime_is_refused(table: AsyncEngine) -> None:
    async with table.begin() as conn:
        with pytest.raises(StatementError, match="naive datetime"):
            await conn.execute(insert(instants), [{"id": 1, "at": datetime(2031, 5, 6)}])


@pytest.mark.parametrize("db_kind", ["sqlite"])
async def test_sqlite_text_is_sqlalchemys_own(table: AsyncEngine, db_kind: str) -> None:
    plain = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert plain is not None
    async with table.begin() as conn:
        await conn.execute(insert(instants), [{"id": i, "at": at} for i, at in enumerate(CASES)])
        stored = (await conn.execute(text("SELECT at FROM utc_datetime_check ORDER BY id"))).all()
        for (raw,), at in zip(stored, CASES, strict=True):
            assert raw == plain(at.astimezone(UTC).replace(tzinfo=None))
        # And a row written by plain SQLAlchemy reads back as the same instant.
        legacy = Table(
            "utc_datetime_check", MetaData(), Column("id", Integer), Column("at", DateTime)
        )
        await conn.execute(insert(legacy), [{"id": 50, "at": datetime(2031, 1, 2, 3, 4, 5)}])
        read = await _scalar(conn, select(instants.c.at).where(instants.c.id == 50))
    assert read == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
