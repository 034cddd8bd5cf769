"""Reads of one statement: in autocommit on PostgreSQL (one round trip, no BEGIN/ROLLBACK),
unchanged on the inline SQLite engine, and still a consistent answer on both."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.engine import create_engine, for_reads
from onboarding.adapters.db.inline_sqlite import InlineEngine
from onboarding.adapters.db.kept_connections import kept_by
from onboarding.adapters.db.mapping import agreement_from_row
from onboarding.adapters.db.reader import _BY_REFERENCE, SqlAgreementReader
from tests.conftest import POSTGRES_ADMIN_URL, eventually
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


@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_read_after_the_server_dropped_its_connection_gets_a_new_one(
    fresh_database_url: str, clock: MutableClock
) -> None:
    engine = create_engine(fresh_database_url, pool_size=1)
    try:
        agreement = new_agreement(clock())
        async with unit_of_work(engine, clock) as uow:
            await uow.agreements.add(agreement)
            await uow.commit()
        reader = SqlAgreementReader(engine)
        assert await reader.get(agreement.reference) is not None  # the pooled connection
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                fresh_database_url.rsplit("/", 1)[1],
            )
        finally:
            await admin.close()

        [kept] = kept_by(engine)._idle

        async def noticed() -> bool:  # asyncpg has seen the server close it
            return bool(kept.driver_connection.is_closed())

        await eventually(noticed)
        # The closed connection is not handed out: the read connects anew.
        found = await reader.get(agreement.reference)
        assert found is not None and found.reference == agreement.reference
    finally:
        await engine.dispose()


async def test_the_driver_run_read_matches_sqlalchemys_value_for_value(
    engine: AsyncEngine, clock: MutableClock
) -> None:
    agreement = new_agreement(clock(), request_id=f"r-{uuid4().hex}")
    async with unit_of_work(engine, clock) as uow:
        await uow.agreements.add(agreement)
        await uow.commit()

    fast = await SqlAgreementReader(engine).get(agreement.reference)
    async with engine.connect() as conn:
        row = (await conn.execute(_BY_REFERENCE, {"reference": agreement.reference})).one()
    through_sqlalchemy = agreement_from_row(row)

    assert fast is not None and fast.otp is not None
    for field in dataclasses.fields(fast):
        assert getattr(fast, field.name) == getattr(through_sqlalchemy, field.name), field.name
    assert fast.otp == through_sqlalchemy.otp
    assert isinstance(fast.reference, UUID) and isinstance(fast.otp.message_id, UUID)
    for instant in (fast.create_time, fast.otp.send_time, fast.otp.expire_time):
        assert instant.utcoffset() == timedelta(0)
    assert await SqlAgreementReader(engine).get(uuid4()) is None
