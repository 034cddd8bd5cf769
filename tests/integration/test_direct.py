"""Statements run by the driver (``direct``): writes of one commit sent together on PostgreSQL,
each value in its own column, and nothing sent of a transaction that rolls back."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    event,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db import direct
from onboarding.adapters.db.repositories import _SWAP_QUOTA
from onboarding.adapters.db.tables import outbox_messages, phone_send_quotas
from onboarding.service_layer.unit_of_work import OutgoingSms
from tests.integration.conftest import (
    T0,
    issued,
    new_agreement,
    statements,
    unit_of_work,
)
from tests.integration.test_repositories import assert_same, load


def test_parameters_are_renumbered_after_the_parts_before_them() -> None:
    assert direct._renumbered("a = $1 AND b = $12 AND c = $2", 10) == (
        "a = $11 AND b = $22 AND c = $12"
    )


def test_a_write_is_made_conditional_or_refused() -> None:
    cond = "EXISTS (SELECT FROM g0)"
    assert direct._only_if("INSERT INTO t (a, b) VALUES ($1::UUID, $2::VARCHAR)", cond) == (
        "INSERT INTO t (a, b) SELECT $1::UUID, $2::VARCHAR WHERE EXISTS (SELECT FROM g0)"
    )
    assert direct._only_if("UPDATE t SET a=$1::INTEGER WHERE t.b = $2::UUID", cond) == (
        "UPDATE t SET a=$1::INTEGER WHERE EXISTS (SELECT FROM g0) AND (t.b = $2::UUID)"
    )
    for refused in (
        "INSERT INTO t (a) VALUES ($1::UUID) ON CONFLICT (a) DO NOTHING",
        "UPDATE t SET a=$1::INTEGER WHERE t.b = $2::UUID RETURNING (t.a)",
        "DELETE FROM t WHERE t.a = $1::UUID",
    ):
        with pytest.raises(ValueError, match="conditional"):
            direct._only_if(refused, cond)


@pytest.mark.parametrize("db_kind", ["sqlite"])
async def test_a_closed_gate_on_sqlite_raises_at_once(fresh_engine: AsyncEngine) -> None:
    """SQLite runs a queued write at once: a gate that returns no row raises there."""
    stale = {"key": b"no such phone", "read": "", "send_times": "1"}
    async with direct.transaction(fresh_engine) as tx:
        with pytest.raises(direct.StaleRead):
            tx.defer(_SWAP_QUOTA, stale, gate=True)


def test_a_constant_default_is_taken_and_any_other_must_be_given() -> None:
    table = Table(
        "t",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("n", Integer, default=7),
        Column("s", String, default=lambda: "computed"),
    )
    compiled = direct.Statement(insert(table)).compiled(sqlite.dialect(), {"id": 1})
    assert compiled.arguments({"id": 1, "s": "given"}) == [1, 7, "given"]
    with pytest.raises(KeyError, match="'s'"):
        compiled.arguments({"id": 1})


async def _create(engine: AsyncEngine) -> tuple[list[str], object, OutgoingSms]:
    """What CreateAgreement's unit of work writes: the agreement, its phone's quota, its SMS."""
    agreement = new_agreement()
    event = issued(agreement)
    message = OutgoingSms(event.message_id, agreement.reference, event.phone_e164, "Код 1")
    with statements(engine) as seen:
        async with unit_of_work(engine) as uow:
            quota = await uow.phone_quotas.get_for_update(agreement.phone_mac)
            quota.send_times.append(T0)
            await uow.agreements.add(agreement)
            await uow.outbox.add(message)
            await uow.commit()
    return seen, agreement, message


async def test_the_writes_of_a_commit_land_whole(fresh_engine: AsyncEngine, db_kind: str) -> None:
    seen, agreement, message = await _create(fresh_engine)

    writes = [s for s in seen if "INSERT INTO agreements" in s or "INSERT INTO outbox" in s]
    if db_kind == "postgres":
        # Two statements and no transaction: the quota read without a lock, then one statement
        # whose writes happen only if the quota's row is still as read (here: still missing).
        read, combined = seen
        assert read.startswith("SELECT phone_send_quotas.send_times") and "FOR UPDATE" not in read
        assert combined.startswith("WITH g2 AS (INSERT INTO phone_send_quotas")
        assert "ON CONFLICT (phone_mac) DO NOTHING RETURNING 1" in combined
        assert "INSERT INTO outbox" in combined and "INSERT INTO agreements" in combined
        assert combined.endswith("SELECT EXISTS (SELECT FROM g2)")
    else:
        assert len(writes) == 2
    assert_same(await load(fresh_engine, agreement.reference), agreement)  # type: ignore[attr-defined]
    async with fresh_engine.connect() as conn:
        row = (await conn.execute(select(outbox_messages))).one()
        quota = (await conn.execute(select(phone_send_quotas))).one()
    assert row.message_id == message.message_id
    assert row.agreement_reference == agreement.reference  # type: ignore[attr-defined]
    assert row.status == "QUEUED" and row.attempts == 0
    assert row.create_time == row.next_attempt_time == T0  # the unit of work's clock
    assert float(quota.send_times) == T0.timestamp()


async def test_deferred_writes_of_a_rolled_back_unit_are_never_sent(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    agreement = new_agreement()
    with statements(fresh_engine) as seen:
        async with unit_of_work(fresh_engine) as uow:
            await uow.agreements.add(agreement)
            await uow.agreements.flush()  # queued on PostgreSQL, written on SQLite
    assert await load(fresh_engine, agreement.reference) is None  # type: ignore[attr-defined]
    sent = any("INSERT INTO agreements" in s for s in seen)
    assert sent is (db_kind == "sqlite")  # SQLite writes at once; PostgreSQL waits for a commit


async def test_a_flush_with_nothing_to_write_sends_nothing(fresh_engine: AsyncEngine) -> None:
    with statements(fresh_engine) as seen:
        async with unit_of_work(fresh_engine) as uow:
            await uow.flush()
            await uow.commit()
    assert [s.split()[0].upper() for s in seen] in (["BEGIN", "COMMIT"], [])


@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_refused_statement_keeps_its_connection_and_a_cancelled_one_drops_it(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    """A statement the server refused leaves a sound connection (rolled back, pooled again); a
    call cancelled half-way leaves one in an unknown state, which must never be reused."""
    invalidated: list[object] = []
    event.listen(fresh_engine.sync_engine.pool, "invalidate", lambda *a: invalidated.append(a))
    clash = direct.Statement(select(literal_column("1 / 0").label("never")))
    slow = direct.Statement(select(func.pg_sleep(5).label("slept")))

    async with direct.transaction(fresh_engine) as tx:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await tx.fetch_one(clash)
    assert invalidated == []

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2), direct.transaction(fresh_engine) as tx:
            await tx.fetch_one(slow)
    assert len(invalidated) == 1

    async with direct.autocommit(fresh_engine) as conn:  # the pool still serves
        two = await conn.fetch_one(direct.Statement(select(literal_column("2").label("two"))))
        assert two is not None and two.two == 2
