"""The relay's side of the outbox: claims under a lease, outcomes, and several relays at once.

Every test has a database of its own (``fresh_engine``), so a claim sees only its own rows.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import Uuid, bindparam, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.crypto import Keyring
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.outbox_store import SqlOutboxStore
from onboarding.adapters.db.reader import SqlAgreementReader
from onboarding.adapters.db.tables import agreements, outbox_messages
from onboarding.adapters.db.types import UtcDateTime
from onboarding.domain.agreement import Agreement, DeliveryStatus
from onboarding.service_layer.outbox_relay import DeliveryOutcome
from onboarding.service_layer.unit_of_work import OutgoingSms
from tests.conftest import random_phone
from tests.integration.conftest import (
    KEYRING,
    T0,
    MutableClock,
    issued,
    new_agreement,
    unit_of_work,
)

LEASE = timedelta(seconds=30)
EPSILON = timedelta(microseconds=1)


def outbox_store(engine: AsyncEngine, clock: MutableClock, keyring: Keyring = KEYRING) -> Any:
    return SqlOutboxStore(engine, keyring.sealer, clock, LEASE)


def sms() -> OutgoingSms:
    return OutgoingSms(uuid4(), uuid4(), random_phone(), f"Code: {uuid4().int % 10**6:06d}")


async def enqueue(
    engine: AsyncEngine, clock: MutableClock, *messages: OutgoingSms, keyring: Keyring = KEYRING
) -> None:
    async with unit_of_work(engine, clock, keyring) as uow:
        for message in messages:
            await uow.outbox.add(message)
        await uow.commit()


async def enqueue_code_of(engine: AsyncEngine, clock: MutableClock, agreement: Agreement) -> UUID:
    """Stores the agreement and the SMS of its code, as CreateAgreement does."""
    otp = issued(agreement)
    async with unit_of_work(engine, clock) as uow:
        await uow.agreements.add(agreement)
        await uow.outbox.add(
            OutgoingSms(otp.message_id, agreement.reference, otp.phone_e164, f"Code: {otp.code}")
        )
        await uow.commit()
    return otp.message_id


async def outbox_row(engine: AsyncEngine, message_id: UUID) -> dict[str, Any]:
    """The row as stored (plain SQL) but with times read as aware datetimes."""
    stmt = text("SELECT * FROM outbox_messages WHERE message_id = :m").bindparams(
        bindparam("m", type_=Uuid)
    )
    stmt = stmt.columns(
        **{name: UtcDateTime for name in outbox_messages.c.keys() if name.endswith("_time")}
    )
    async with engine.connect() as conn:
        [row] = (await conn.execute(stmt, {"m": message_id})).mappings().all()
    return dict(row)


async def test_added_messages_are_claimed_with_the_payload_opened(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    messages = [sms(), sms(), sms()]
    await enqueue(fresh_engine, clock, *messages)

    claimed = await outbox_store(fresh_engine, clock).claim(10)

    by_id = {c.message_id: c for c in claimed}
    assert set(by_id) == {m.message_id for m in messages}
    for message in messages:
        got = by_id[message.message_id]
        assert got.agreement_reference == message.agreement_reference
        assert (got.phone_e164, got.text) == (message.phone_e164, message.text)
        assert got.attempts == 1


async def test_a_claimed_message_is_not_claimed_again_while_leased(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    await enqueue(fresh_engine, clock, sms())
    store = outbox_store(fresh_engine, clock)
    [claimed] = await store.claim(10)

    assert await store.claim(10) == []
    clock.advance(LEASE)
    assert await store.claim(10) == []  # the lease runs up to and including its last instant

    row = await outbox_row(fresh_engine, claimed.message_id)
    assert row["lease_expire_time"] == T0 + LEASE
    assert row["status"] == DeliveryStatus.QUEUED.value


async def test_a_message_is_claimed_again_once_its_lease_has_expired(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    message = sms()
    await enqueue(fresh_engine, clock, message)
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)

    clock.advance(LEASE + EPSILON)
    [again] = await store.claim(10)

    assert again.message_id == message.message_id
    assert again.attempts == 2
    assert again.text == message.text
    assert await store.claim(10) == []


async def test_claim_takes_at_most_limit_messages_oldest_first(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    messages = [sms() for _ in range(5)]
    for message in messages:
        await enqueue(fresh_engine, clock, message)
        clock.advance(EPSILON)
    store = outbox_store(fresh_engine, clock)

    first = await store.claim(2)
    rest = await store.claim(10)

    assert {c.message_id for c in first} == {m.message_id for m in messages[:2]}
    assert {c.message_id for c in rest} == {m.message_id for m in messages[2:]}


@pytest.mark.parametrize("final", [DeliveryStatus.SENT, DeliveryStatus.FAILED])
async def test_a_final_outcome_erases_the_payload_and_updates_the_agreement(
    fresh_engine: AsyncEngine, clock: MutableClock, final: DeliveryStatus
) -> None:
    agreement, bystander = new_agreement(), new_agreement()
    message_id = await enqueue_code_of(fresh_engine, clock, agreement)
    await enqueue_code_of(fresh_engine, clock, bystander)
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)
    clock.advance(timedelta(seconds=2, microseconds=3))

    await store.record([DeliveryOutcome(message_id, final, "http 200")])

    row = await outbox_row(fresh_engine, message_id)
    assert row["status"] == final.value
    assert row["payload_sealed"] is None
    assert row["finish_time"] == clock.now
    assert row["lease_expire_time"] is None
    assert row["last_error"] == "http 200"
    reader = SqlAgreementReader(fresh_engine)
    read = await reader.get(agreement.reference)
    assert read is not None and read.otp is not None
    assert read.otp.delivery_status is final
    other = await reader.get(bystander.reference)
    assert other is not None and other.otp is not None
    assert other.otp.delivery_status is DeliveryStatus.QUEUED


async def test_a_finished_message_is_never_claimed_again(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    message = sms()
    await enqueue(fresh_engine, clock, message)
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)
    await store.record([DeliveryOutcome(message.message_id, DeliveryStatus.SENT, "http 200")])

    clock.advance(LEASE * 10)

    assert await store.claim(10) == []
    assert await store.backlog() == (0, None)


async def test_a_retry_waits_without_lease_until_its_time(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    message = sms()
    await enqueue(fresh_engine, clock, message)
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)
    retry_time = clock.now + timedelta(seconds=10)

    await store.record([DeliveryOutcome(message.message_id, None, "http 503", retry_time)])

    row = await outbox_row(fresh_engine, message.message_id)
    assert row["status"] == DeliveryStatus.QUEUED.value
    assert row["lease_expire_time"] is None
    assert row["next_attempt_time"] == retry_time
    assert row["last_error"] == "http 503"
    assert row["payload_sealed"] is not None
    assert await store.claim(10) == []
    clock.now = retry_time - EPSILON
    assert await store.claim(10) == []
    clock.now = retry_time
    [again] = await store.claim(10)
    assert again.attempts == 2
    assert again.phone_e164 == message.phone_e164


async def test_one_record_call_handles_finished_and_retried_messages(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    sent, retried = sms(), sms()
    await enqueue(fresh_engine, clock, sent, retried)
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)

    await store.record(
        [
            DeliveryOutcome(sent.message_id, DeliveryStatus.SENT, "http 200"),
            DeliveryOutcome(retried.message_id, None, "timeout", clock.now),
        ]
    )

    [again] = await store.claim(10)
    assert again.message_id == retried.message_id
    assert await store.backlog() == (1, T0)


async def test_a_payload_sealed_under_another_key_opens_as_none(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    message = sms()
    other_key = Keyring(b"another-secret-key-fedcba9876543210")
    await enqueue(fresh_engine, clock, message, keyring=other_key)

    [claimed] = await outbox_store(fresh_engine, clock).claim(10)

    assert claimed.message_id == message.message_id
    assert claimed.agreement_reference == message.agreement_reference
    assert claimed.phone_e164 is None
    assert claimed.text is None


async def test_a_payload_moved_to_another_row_opens_as_none(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    donor, victim = sms(), sms()
    await enqueue(fresh_engine, clock, donor, victim)
    async with fresh_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox_messages SET payload_sealed ="
                " (SELECT payload_sealed FROM outbox_messages WHERE message_id = :d)"
                " WHERE message_id = :v"
            ).bindparams(bindparam("d", type_=Uuid), bindparam("v", type_=Uuid)),
            {"d": donor.message_id, "v": victim.message_id},
        )

    claimed = {c.message_id: c for c in await outbox_store(fresh_engine, clock).claim(10)}

    assert claimed[donor.message_id].text == donor.text
    assert claimed[victim.message_id].text is None
    assert claimed[victim.message_id].phone_e164 is None


async def test_a_late_outcome_of_a_finished_message_leaves_the_agreement_alone(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    agreement = new_agreement()
    message_id = await enqueue_code_of(fresh_engine, clock, agreement)
    slow, fast = outbox_store(fresh_engine, clock), outbox_store(fresh_engine, clock)
    await slow.claim(10)
    clock.advance(LEASE + EPSILON)
    await fast.claim(10)
    await fast.record([DeliveryOutcome(message_id, DeliveryStatus.SENT, "http 200")])

    await slow.record([DeliveryOutcome(message_id, DeliveryStatus.FAILED, "timeout")])

    assert (await outbox_row(fresh_engine, message_id))["status"] == DeliveryStatus.SENT.value
    read = await SqlAgreementReader(fresh_engine).get(agreement.reference)
    assert read is not None and read.otp is not None
    assert read.otp.delivery_status is DeliveryStatus.SENT


async def test_the_outcome_of_a_replaced_code_leaves_the_agreement_alone(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    # The agreement's delivery status is its current code's: a new code (SendOtp) points the
    # agreement at another message, and the old message's outcome is then its own only.
    agreement = new_agreement()
    old_message_id = await enqueue_code_of(fresh_engine, clock, agreement)
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)
    async with fresh_engine.begin() as conn:
        await conn.execute(
            update(agreements)
            .where(agreements.c.reference == agreement.reference)
            .values(otp_message_id=uuid4())
        )

    await store.record([DeliveryOutcome(old_message_id, DeliveryStatus.SENT, "http 200")])

    assert (await outbox_row(fresh_engine, old_message_id))["status"] == DeliveryStatus.SENT.value
    read = await SqlAgreementReader(fresh_engine).get(agreement.reference)
    assert read is not None and read.otp is not None
    assert read.otp.delivery_status is DeliveryStatus.QUEUED


# FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite serializes the claims.
@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_concurrent_claims_from_two_engines_take_disjoint_batches(
    fresh_database_url: str, fresh_engine: AsyncEngine, clock: MutableClock, db_kind: str
) -> None:
    messages = [sms() for _ in range(40)]
    await enqueue(fresh_engine, clock, *messages)
    other = create_engine(fresh_database_url)
    try:
        first, second = await asyncio.gather(
            outbox_store(fresh_engine, clock).claim(20),
            outbox_store(other, clock).claim(20),
        )
    finally:
        await other.dispose()

    first_ids, second_ids = {c.message_id for c in first}, {c.message_id for c in second}
    assert len(first) == len(second) == 20
    assert first_ids.isdisjoint(second_ids)
    assert first_ids | second_ids == {m.message_id for m in messages}
    assert all(c.attempts == 1 for c in [*first, *second])


# -- one agreement's messages: one at a time, oldest first ------------------------------------


async def enqueue_for(
    engine: AsyncEngine, clock: MutableClock, agreement_reference: UUID
) -> OutgoingSms:
    message = OutgoingSms(uuid4(), agreement_reference, random_phone(), "Code: 123456")
    await enqueue(engine, clock, message)
    clock.advance(EPSILON)
    return message


async def expedite(engine: AsyncEngine, clock: MutableClock, message_id: UUID) -> None:
    async with unit_of_work(engine, clock) as uow:
        await uow.outbox.expedite(message_id)
        await uow.commit()


async def test_an_agreements_newer_message_waits_until_the_older_one_is_done(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    # A newer code must not reach the gateway before the one it replaced: the older one,
    # waiting for a retry, holds it back; another agreement's message goes meanwhile.
    reference = uuid4()
    older = await enqueue_for(fresh_engine, clock, reference)
    newer = await enqueue_for(fresh_engine, clock, reference)
    other = sms()
    await enqueue(fresh_engine, clock, other)
    store = outbox_store(fresh_engine, clock)

    claimed = await store.claim(10)
    assert {c.message_id for c in claimed} == {older.message_id, other.message_id}
    retry_at = clock.now + timedelta(minutes=2)
    await store.record(
        [
            DeliveryOutcome(older.message_id, None, "http 503", retry_at),
            DeliveryOutcome(other.message_id, DeliveryStatus.SENT, "http 200"),
        ]
    )
    clock.advance(LEASE + EPSILON)
    assert await store.claim(10) == []  # the older one waits for its retry, the newer behind it

    clock.now = retry_at
    [again] = await store.claim(10)
    assert again.message_id == older.message_id
    await store.record([DeliveryOutcome(older.message_id, DeliveryStatus.SENT, "http 200")])
    [then] = await store.claim(10)
    assert then.message_id == newer.message_id


async def test_an_older_message_that_failed_for_good_holds_nothing_back(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    reference = uuid4()
    older = await enqueue_for(fresh_engine, clock, reference)
    newer = await enqueue_for(fresh_engine, clock, reference)
    store = outbox_store(fresh_engine, clock)
    [first] = await store.claim(10)
    assert first.message_id == older.message_id
    await store.record([DeliveryOutcome(older.message_id, DeliveryStatus.FAILED, "http 400")])

    [second] = await store.claim(10)
    assert second.message_id == newer.message_id


async def test_expediting_makes_a_message_waiting_for_a_retry_due_now(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    message = await enqueue_for(fresh_engine, clock, uuid4())
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)
    retry_at = clock.now + timedelta(minutes=5)
    await store.record([DeliveryOutcome(message.message_id, None, "http 503", retry_at)])
    assert await store.claim(10) == []

    await expedite(fresh_engine, clock, message.message_id)

    [claimed] = await store.claim(10)
    assert claimed.message_id == message.message_id
    assert claimed.attempts == 2


@pytest.mark.parametrize("final", [DeliveryStatus.SENT, DeliveryStatus.FAILED])
async def test_expediting_a_finished_message_changes_nothing(
    fresh_engine: AsyncEngine, clock: MutableClock, final: DeliveryStatus
) -> None:
    message = await enqueue_for(fresh_engine, clock, uuid4())
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)
    await store.record([DeliveryOutcome(message.message_id, final, "http 200")])
    before = await outbox_row(fresh_engine, message.message_id)
    clock.advance(timedelta(seconds=3))

    await expedite(fresh_engine, clock, message.message_id)

    assert await outbox_row(fresh_engine, message.message_id) == before


# Row locks are PostgreSQL's; SQLite's one writer takes them in turn.
@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_recording_waits_for_a_command_that_holds_the_agreement_without_deadlock(
    fresh_engine: AsyncEngine, clock: MutableClock, db_kind: str
) -> None:
    # A new code locks the agreement, then expedites the message of the code before. Recording
    # that message's outcome meanwhile must take the locks in the same order: the other order
    # deadlocks, and PostgreSQL aborts one of the two after a second.
    agreement = new_agreement()
    message_id = await enqueue_code_of(fresh_engine, clock, agreement)
    store = outbox_store(fresh_engine, clock)
    await store.claim(10)
    async with unit_of_work(fresh_engine, clock) as uow:
        assert await uow.agreements.get_for_update(agreement.reference) is not None
        recording = asyncio.create_task(
            store.record([DeliveryOutcome(message_id, DeliveryStatus.SENT, "http 200")])
        )
        await asyncio.sleep(0.3)  # recording has started and waits for a lock
        assert not recording.done()
        await uow.outbox.expedite(message_id)
        await uow.commit()
    await recording

    assert (await outbox_row(fresh_engine, message_id))["status"] == DeliveryStatus.SENT.value
