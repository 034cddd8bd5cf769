"""How the statements that find one agreement by something other than the reference they are
given find it: through an index, never by reading every agreement.

Agreements keep no index on ``otp_message_id`` (migration 0006): the relay finds a delivered
message's agreement by the reference its outbox row names, through the primary key. A
``request_id`` is found through an index holding only the ids callers gave. Plans are checked
as in ``test_outbox_plans``: on PostgreSQL the generic plan, made while the table was empty.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.mapping import agreement_to_row
from onboarding.adapters.db.tables import agreements
from onboarding.domain.agreement import DeliveryStatus
from onboarding.service_layer.outbox_relay import DeliveryOutcome
from tests.integration.conftest import T0, MutableClock, new_agreement, statements, unit_of_work
from tests.integration.test_outbox_plans import PostgresPlans, sqlite_plan
from tests.integration.test_outbox_store import enqueue_code_of, outbox_store

HISTORY = 5_000
INDEXES = {
    "pk_agreements",
    "sqlite_autoindex_agreements_1",  # SQLite's name for the primary key's index
    "ix_agreements_request_id",
}


async def add_history(engine: AsyncEngine) -> None:
    """Agreements with codes, half of them made with a request id."""
    rows = [
        agreement_to_row(
            new_agreement(T0 - timedelta(seconds=n), request_id=f"history-{n}" if n % 2 else None)
        )
        for n in range(1, HISTORY + 1)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(agreements), rows)


async def agreement_statements(engine: AsyncEngine, clock: MutableClock) -> list[str]:
    """The SQL that finds an agreement by its request id, and the relay's recording of its
    code's delivery."""
    agreement = new_agreement(T0, request_id=f"plans-{uuid4().hex}")
    message_id = await enqueue_code_of(engine, clock, agreement)
    store = outbox_store(engine, clock)
    with statements(engine) as seen:
        async with unit_of_work(engine, clock) as uow:
            assert agreement.request_id is not None
            found = await uow.agreements.get_by_request_id(agreement.request_id)
            assert found is not None and found.reference == agreement.reference
        assert len(await store.claim(10)) == 1
        await store.record([DeliveryOutcome(message_id, DeliveryStatus.SENT, "http 200")])
    found_sql = [
        sql
        for sql in seen
        if "agreements" in sql
        and ("request_id =" in sql or "otp_message_id =" in sql)
        and not sql.lstrip().upper().startswith("INSERT")
    ]
    # By request id; the delivery status; and on PostgreSQL the agreement's lock before it.
    assert len(found_sql) >= 2, seen
    return found_sql


async def test_an_agreement_is_found_by_its_message_or_request_id_through_an_index(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    sqls = await agreement_statements(fresh_engine, clock)

    if fresh_engine.dialect.name == "postgresql":
        async with fresh_engine.connect() as conn:
            raw = await conn.get_raw_connection()
            postgres = PostgresPlans(raw.driver_connection, "agreements")
            await postgres.prepare(sqls)
            await add_history(fresh_engine)
            plans = {sql: await postgres.plan(sql) for sql in sqls}
    else:
        await add_history(fresh_engine)
        async with fresh_engine.connect() as conn:
            driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            plans = {sql: sqlite_plan(driver, sql, {"agreements"}) for sql in sqls}

    for sql, plan in plans.items():
        assert plan, f"no read of the agreements in the plan of {sql}"
        expected = "ix_agreements_request_id" if "request_id =" in sql else None
        for _step, index in plan:
            assert index in INDEXES, f"{sql}\nreads the agreements by {index}: {plan}"
            if expected is not None:
                assert index == expected, f"{sql}\nreads the agreements by {index}: {plan}"
            else:
                assert index != "ix_agreements_request_id", plan
