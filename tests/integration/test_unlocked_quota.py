"""PostgreSQL's CreateAgreement without a transaction (see ``PgConnection``): the phone's quota
is read without a lock and written only if it is still as read, in the one statement that
writes everything else. A unit of work that lost the race writes nothing and fails with a
write conflict (the bus runs the command again), and that phone's quota is read under a lock
for a while. Inside a transaction the quota is locked as before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db import direct
from onboarding.adapters.db.repositories import _SWAP_QUOTA
from onboarding.adapters.db.tables import outbox_messages, phone_send_quotas
from onboarding.adapters.db.unit_of_work import SqlUnitOfWork
from onboarding.domain.agreement import Agreement
from onboarding.domain.quota import PhoneSendQuota
from onboarding.service_layer.errors import WriteConflict
from onboarding.service_layer.unit_of_work import OutgoingSms
from tests.conftest import random_client
from tests.integration.conftest import (
    KEYRING,
    POLICY,
    T0,
    issued,
    new_agreement,
    statements,
    unit_of_work,
)
from tests.integration.test_outbox_store import sms
from tests.integration.test_repositories import load, store

pytestmark = pytest.mark.parametrize(
    "db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)]
)


async def begin_create(engine: AsyncEngine, agreement: Agreement) -> SqlUnitOfWork:
    """A CreateAgreement's unit of work up to its commit: the quota read and a code taken from
    it, the agreement and its SMS added."""
    return await _continue_create(await unit_of_work(engine).__aenter__(), agreement)


async def _continue_create(uow: SqlUnitOfWork, agreement: Agreement) -> SqlUnitOfWork:
    quota = await uow.phone_quotas.get_for_update(agreement.phone_mac)
    quota.take(T0 + timedelta(seconds=len(quota.send_times)), 10, POLICY.phone_window)
    await uow.agreements.add(agreement)
    event = issued(agreement)
    await uow.outbox.add(
        OutgoingSms(event.message_id, agreement.reference, event.phone_e164, "Код 1")
    )
    return uow


async def commit(uow: SqlUnitOfWork) -> None:
    try:
        await uow.commit()
    except BaseException as error:
        await uow.__aexit__(type(error), error, error.__traceback__)
        raise
    await uow.__aexit__(None, None, None)


async def stored(engine: AsyncEngine, phone_mac: bytes) -> tuple[str | None, int]:
    """The quota's text and how many SMS are queued, as committed."""
    async with engine.connect() as conn:
        times = (
            await conn.execute(
                select(phone_send_quotas.c.send_times).where(
                    phone_send_quotas.c.phone_mac == phone_mac
                )
            )
        ).scalar_one_or_none()
        queued = len((await conn.execute(select(outbox_messages.c.message_id))).all())
    return times, queued


def same_phone(agreement: Agreement) -> Agreement:
    """Another agreement, with its code, for the phone of ``agreement``."""
    assert agreement.phone is not None
    other = Agreement.create(
        id_hash=random_client(),
        phone=agreement.phone,
        phone_mac=agreement.phone_mac,
        request_id=None,
        now=T0,
    )
    other.issue_otp(
        now=T0, policy=POLICY, hasher=KEYRING.codes, quota=PhoneSendQuota(agreement.phone_mac)
    )
    return other


@pytest.mark.parametrize("phone_known", [False, True], ids=["new phone", "known phone"])
async def test_the_loser_of_a_race_on_a_quota_writes_nothing(
    fresh_engine: AsyncEngine, phone_known: bool
) -> None:
    first = new_agreement()
    second = same_phone(first)
    if phone_known:
        await commit(await begin_create(fresh_engine, new_agreement()))
        await commit(await begin_create(fresh_engine, same_phone(first)))
    before_times, before_queued = await stored(fresh_engine, first.phone_mac)

    winner = await begin_create(fresh_engine, first)
    loser = await begin_create(fresh_engine, second)  # read the quota as the winner did
    await commit(winner)
    with pytest.raises(WriteConflict):
        await commit(loser)

    times, queued = await stored(fresh_engine, first.phone_mac)
    assert queued == before_queued + 1
    assert len((times or "").split()) == len((before_times or "").split()) + 1
    assert await load(fresh_engine, first.reference) is not None
    assert await load(fresh_engine, second.reference) is None


async def test_after_a_lost_race_the_phones_quota_is_read_under_a_lock(
    fresh_engine: AsyncEngine,
) -> None:
    first = new_agreement()
    winner = await begin_create(fresh_engine, first)
    loser = await begin_create(fresh_engine, same_phone(first))
    await commit(winner)
    with pytest.raises(WriteConflict):
        await commit(loser)

    with statements(fresh_engine) as contended:
        await commit(await begin_create(fresh_engine, same_phone(first)))
    with statements(fresh_engine) as calm:
        await commit(await begin_create(fresh_engine, new_agreement()))

    assert [s.split()[0] for s in contended] == ["BEGIN", "INSERT", "WITH", "COMMIT"]
    assert "ON CONFLICT (phone_mac) DO UPDATE" in contended[1]
    assert [s.split()[0] for s in calm] == ["SELECT", "WITH"]
    _, queued = await stored(fresh_engine, first.phone_mac)
    assert queued == 3


async def test_inside_a_transaction_the_quota_is_read_under_a_lock(
    fresh_engine: AsyncEngine,
) -> None:
    agreement = new_agreement()
    await store(fresh_engine, agreement)

    with statements(fresh_engine) as seen:
        async with unit_of_work(fresh_engine) as uow:
            locked = await uow.agreements.get_for_update(agreement.reference)
            assert locked is not None
            quota = await uow.phone_quotas.get_for_update(agreement.phone_mac)
            quota.take(T0, 10, POLICY.phone_window)
            await uow.commit()

    kinds = [s.split()[0] for s in seen]
    assert kinds[:3] == ["BEGIN", "SELECT", "INSERT"] and kinds[-1] == "COMMIT", seen
    assert "FOR UPDATE" in seen[1] and "ON CONFLICT (phone_mac) DO UPDATE" in seen[2]
    assert not any("RETURNING 1" in s for s in seen)


async def test_a_closed_gate_holds_back_every_write_of_its_statement(
    fresh_engine: AsyncEngine,
) -> None:
    """Inserts and updates alike: each is written only if the gate returned its row."""
    message = sms()
    async with direct.transaction(fresh_engine) as tx:
        tx.defer(direct.Statement(outbox_messages.insert()), _outbox_row(message))
        await tx.commit()
    mark = direct.Statement(
        update(outbox_messages)
        .where(outbox_messages.c.message_id == bindparam("key"))
        .values(attempts=7)
    )

    conn = await direct.begin_when_needed(fresh_engine)
    try:
        conn.defer(_SWAP_QUOTA, {"key": b"no such phone", "read": "", "send_times": "1"}, gate=True)
        conn.defer(direct.Statement(outbox_messages.insert()), _outbox_row(sms()))
        conn.defer(mark, {"key": message.message_id})
        with pytest.raises(direct.StaleRead):
            await conn.commit()
    finally:
        await conn.close()

    async with fresh_engine.connect() as c:
        rows = (await c.execute(select(outbox_messages.c.attempts))).all()
    assert [row.attempts for row in rows] == [0]


def _outbox_row(message: OutgoingSms) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "agreement_reference": message.agreement_reference,
        "status": "QUEUED",
        "payload_sealed": b"sealed",
        "attempts": 0,
        "next_attempt_time": T0,
        "create_time": T0,
    }


async def test_a_create_with_a_request_id_needs_no_transaction_either(
    fresh_engine: AsyncEngine,
) -> None:
    agreement = new_agreement(request_id=f"req-{uuid4().hex}")
    assert agreement.request_id is not None
    with statements(fresh_engine) as seen:
        uow = await unit_of_work(fresh_engine).__aenter__()
        assert await uow.agreements.get_by_request_id(agreement.request_id) is None
        await commit(await _continue_create(uow, agreement))

    assert [s.split()[0] for s in seen] == ["SELECT", "SELECT", "WITH"], seen
    assert "request_id" in seen[0] and "FOR UPDATE" not in seen[0]
    assert await load(fresh_engine, agreement.reference) is not None
