"""Reads of one statement: in autocommit on PostgreSQL (one round trip, no BEGIN/ROLLBACK),
unchanged on the inline SQLite engine, and still a consistent answer on both."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.engine import for_reads
from onboarding.adapters.db.inline_sqlite import InlineEngine
from onboarding.adapters.db.reader import SqlAgreementReader
from tests.integration.conftest import T0, MutableClock, new_agreement, unit_of_work


async def test_reads_run_in_autocommit_on_postgresql_only(engine: AsyncEngine) -> None:
    reads = for_reads(engine)
    if isinstance(engine, InlineEngine):
        assert reads is engine
        return
    assert await driver_in_transaction_after_a_read(reads) is False
    # The engine itself is left as it was: its reads open a transaction.
    assert await driver_in_transaction_after_a_read(engine) is True


async def driver_in_transaction_after_a_read(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        raw = await conn.get_raw_connection()
        return bool(raw.driver_connection.is_in_transaction())  # type: ignore[union-attr]


async def test_the_reader_sees_what_a_unit_of_work_committed(
    engine: AsyncEngine, clock: MutableClock
) -> None:
    agreement = new_agreement(clock())
    async with unit_of_work(engine, clock) as uow:
        await uow.agreements.add(agreement)
        await uow.commit()

    found = await SqlAgreementReader(engine).get(agreement.reference)

    assert found is not None and found.reference == agreement.reference
    assert found.create_time == agreement.create_time >= T0
