"""The outbox relay: hands queued SMS to the gateway, retries what may still go, ends the rest.

A message is claimed under a lease, sent with its own ``message_id`` as the idempotency key, and
its outcome recorded. A relay that dies between sending and recording leaves the lease to
expire, and the message is sent again with the same ``message_id``: at least once, and exactly
once while the gateway dedupes by that key.

A batch's messages are sent side by side, so a batch takes one SMS timeout at most and ends
inside its lease (settings require the lease to be longer than that and a database timeout).
No ordering is needed between them: a claim takes one agreement's messages one at a time,
oldest first (see the outbox store), so a batch holds at most one of an agreement, and
different agreements' codes are independent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from onboarding.domain.agreement import DeliveryStatus
from onboarding.domain.retry import RetryPolicy
from onboarding.service_layer.waiting import wait_or_timeout

log = logging.getLogger(__name__)

#: After a wake-up, how long the relay lets more commits pile up before it claims. Under load a
#: wake-up per commit would claim and record one message at a time, paying two transactions for
#: each; a few milliseconds of patience turns that into one pair per batch.
LINGER_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    message_id: UUID
    #: SENT or FAILED end the message; None puts it back in the queue until ``retry_time``.
    final_status: DeliveryStatus | None
    #: Short and free of personal data, e.g. "http 503".
    detail: str
    retry_time: datetime | None = None


class Claimed(Protocol):
    @property
    def message_id(self) -> UUID: ...
    @property
    def attempts(self) -> int: ...
    @property
    def phone_e164(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...


class Outcome(Protocol):
    @property
    def result(self) -> str: ...  # "SENT", "RETRY" or "FAILED"
    @property
    def detail(self) -> str: ...


class OutboxStore(Protocol):
    async def claim(self, limit: int) -> Sequence[Claimed]:
        """Up to ``limit`` due messages, leased, in the order they were queued."""
        ...

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None: ...


class SmsSender(Protocol):
    async def send(self, message_id: UUID, phone_e164: str, text: str) -> Outcome: ...


class OutboxRelay:
    def __init__(
        self,
        *,
        store: OutboxStore,
        sender: SmsSender,
        retry: RetryPolicy,
        clock: Callable[[], datetime],
        poll_seconds: float,
        batch_size: int = 32,
        linger_seconds: float = LINGER_SECONDS,
        on_outcome: Callable[[str], None] = lambda _outcome: None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._retry = retry
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._linger_seconds = linger_seconds
        self._wake = asyncio.Event()
        #: Told "sent", "retry" or "failed" for every hand-over (metrics).
        self._on_outcome = on_outcome

    def notify(self) -> None:
        """New messages were committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database may be down: keep trying, quietly
                log.warning("outbox relay: %s", type(error).__name__)
                handled = 0
            if handled < self._batch_size:
                await self._sleep()

    async def run_once(self) -> int:
        """Claim one batch, send it, record the outcomes; returns how many were claimed."""
        self._wake.clear()
        claimed = await self._store.claim(self._batch_size)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._deliver(message) for message in claimed))
        await self._store.record(outcomes)
        for outcome in outcomes:
            status = outcome.final_status
            self._on_outcome(status.value.lower() if status is not None else "retry")
        return len(claimed)

    async def _deliver(self, message: Claimed) -> DeliveryOutcome:
        if message.phone_e164 is None or message.text is None:
            return DeliveryOutcome(message.message_id, DeliveryStatus.FAILED, "unreadable")
        outcome = await self._sender.send(message.message_id, message.phone_e164, message.text)
        if outcome.result == "SENT":
            return DeliveryOutcome(message.message_id, DeliveryStatus.SENT, outcome.detail)
        if outcome.result == "RETRY" and not self._retry.exhausted(message.attempts):
            retry_time = self._clock() + self._retry.delay(message.attempts)
            log.info(
                "sms %s: %s, retry %d at %s",
                message.message_id,
                outcome.detail,
                message.attempts,
                retry_time.isoformat(),
            )
            return DeliveryOutcome(message.message_id, None, outcome.detail, retry_time)
        log.warning("sms %s failed: %s", message.message_id, outcome.detail)
        return DeliveryOutcome(message.message_id, DeliveryStatus.FAILED, outcome.detail)

    async def _sleep(self) -> None:
        if await wait_or_timeout(self._wake, self._poll_seconds) and self._linger_seconds:
            await asyncio.sleep(self._linger_seconds)
