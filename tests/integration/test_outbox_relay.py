"""The relay over the real store and the real HTTP client, against the fake gateway.

A burst of commits, each waking the relay, is claimed and recorded in a few batches rather
than one transaction pair per message, and every message still arrives once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.outbox_store import SqlOutboxStore
from onboarding.adapters.sms import HttpSmsGateway
from onboarding.domain.retry import RetryPolicy
from onboarding.service_layer.outbox_relay import OutboxRelay
from onboarding.service_layer.unit_of_work import OutgoingSms
from tests.conftest import random_phone
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.integration.conftest import KEYRING, MutableClock
from tests.integration.test_outbox_store import enqueue, sms


class CountingStore(SqlOutboxStore):
    """The real store, counting the batches it is asked to claim."""

    claims_with_work = 0

    async def claim(self, limit: int) -> Any:
        claimed = await super().claim(limit)
        if claimed:
            self.claims_with_work += 1
        return claimed


async def test_a_burst_of_wake_ups_is_sent_in_few_batches(
    fresh_engine: AsyncEngine, clock: MutableClock, sms_gateway: FakeSmsGateway
) -> None:
    store = CountingStore(fresh_engine, KEYRING.sealer, clock, timedelta(seconds=30))
    sender = HttpSmsGateway(sms_gateway.url, sms_gateway.token)
    relay = OutboxRelay(
        store=store,
        sender=sender,
        retry=RetryPolicy(timedelta(seconds=1), timedelta(seconds=10), 3),
        clock=clock,
        poll_seconds=60,  # only the wake-ups can make it look
        linger_seconds=0.3,
    )
    running = asyncio.create_task(relay.run())
    messages = [sms() for _ in range(20)]
    try:
        await asyncio.sleep(0.05)  # the relay's first look finds nothing and waits
        for message in messages:
            await enqueue(fresh_engine, clock, message)
            relay.notify()
        await sms_gateway.wait_for_requests(len(messages), timeout=5)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await sender.close()

    assert sorted(sms_gateway.by_message_id().values()) == [1] * len(messages)
    assert store.claims_with_work <= 2, store.claims_with_work


async def test_a_batch_is_sent_side_by_side_so_it_ends_within_one_sms_timeout(
    fresh_engine: AsyncEngine, clock: MutableClock, sms_gateway: FakeSmsGateway
) -> None:
    # One phone with the codes of four agreements, and three other phones. Sent one after
    # another, a batch of slow answers would take as many SMS timeouts as it has messages for
    # one phone, and could outlive its lease; another relay would then send them again.
    phone = random_phone()
    queued = [OutgoingSms(uuid4(), uuid4(), phone, f"Code: {n:06d}") for n in range(4)]
    others = [sms() for _ in range(3)]
    await enqueue(fresh_engine, clock, *queued, *others)
    sms_gateway.delay_next(len(queued) + len(others), 0.3)
    sender = HttpSmsGateway(sms_gateway.url, sms_gateway.token)
    relay = OutboxRelay(
        store=SqlOutboxStore(fresh_engine, KEYRING.sealer, clock, timedelta(seconds=30)),
        sender=sender,
        retry=RetryPolicy(timedelta(seconds=1), timedelta(seconds=10), 3),
        clock=clock,
        poll_seconds=60,
    )
    try:
        assert await relay.run_once() == len(queued) + len(others)
    finally:
        await sender.close()

    assert sms_gateway.most_in_flight == len(queued) + len(others)
    assert sorted(sms_gateway.by_message_id().values()) == [1] * 7
