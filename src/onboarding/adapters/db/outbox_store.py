"""The relay side of the outbox: claim due messages under a lease, record how each ended.

A claim is one statement. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several relays (in
several processes or hosts) claim disjoint batches; the lease lets another relay take over a
message whose relay died before it recorded the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from cryptography.exceptions import InvalidTag
from sqlalchemy import and_, bindparam, exists, func, or_, select, update

from onboarding.adapters.db import direct
from onboarding.adapters.db.errors import database_errors
from onboarding.adapters.db.leases import LeasedStore, claim_statement
from onboarding.adapters.db.tables import agreements, outbox_messages, queued
from onboarding.domain.agreement import DeliveryStatus
from onboarding.service_layer.outbox_relay import DeliveryOutcome

_earlier = outbox_messages.alias("earlier")
# An agreement's messages are handed over one at a time, in the order they were queued: a
# newer code never reaches the gateway before the one it replaced has been sent or has failed.
_FIRST_OF_ITS_AGREEMENT = ~exists().where(
    _earlier.c.agreement_reference == outbox_messages.c.agreement_reference,
    queued(_earlier),
    or_(
        _earlier.c.create_time < outbox_messages.c.create_time,
        and_(
            _earlier.c.create_time == outbox_messages.c.create_time,
            _earlier.c.message_id < outbox_messages.c.message_id,
        ),
    ),
)
_CLAIM = claim_statement(
    outbox_messages,
    outbox_messages.c.message_id,
    queued(outbox_messages),
    _FIRST_OF_ITS_AGREEMENT,
    returning=[
        outbox_messages.c.message_id,
        outbox_messages.c.agreement_reference,
        outbox_messages.c.attempts,
        outbox_messages.c.payload_sealed,
        outbox_messages.c.create_time,
    ],
)

_t = outbox_messages
# The statements on one message compare the status with a bound value, unlike those that scan
# the queue (see ``queued``): the primary key is then the only index that can serve them, and
# the queue's indexes, however long the queue grows, never are.
_QUEUED = DeliveryStatus.QUEUED.value
_FINISH = direct.Statement(
    update(_t)
    .where(_t.c.message_id == bindparam("mid"), _t.c.status == _QUEUED)
    .values(
        status=bindparam("st"),
        payload_sealed=None,
        lease_expire_time=None,
        finish_time=bindparam("now"),
        last_error=bindparam("err"),
    )
)
# The agreement whose current code a message carries, found by the primary key the outbox row
# names (agreements keep no index on ``otp_message_id``; see migration 0006).
_AGREEMENT_OF_MESSAGE = select(_t.c.agreement_reference).where(_t.c.message_id == bindparam("mid"))
# Only where the outbox row holds this outcome: a relay that outlived its lease must not
# overwrite what the relay after it recorded.
_SET_DELIVERY_STATUS = direct.Statement(
    update(agreements)
    .where(
        agreements.c.reference
        == _AGREEMENT_OF_MESSAGE.where(_t.c.status == bindparam("st")).scalar_subquery(),
        agreements.c.otp_message_id == bindparam("mid"),
    )
    .values(otp_delivery_status=bindparam("st"))
)
# Taken first, so that recording locks an agreement before its message, in the order the
# commands do (a new code locks the agreement, then expedites the message of the code before);
# the other order could deadlock with them. SQLite's one writer needs no row locks.
_LOCK_AGREEMENT = direct.Statement(
    select(agreements.c.reference)
    .where(
        agreements.c.reference == _AGREEMENT_OF_MESSAGE.scalar_subquery(),
        agreements.c.otp_message_id == bindparam("mid"),
    )
    .with_for_update()
)
_RETRY_LATER = direct.Statement(
    update(_t)
    .where(_t.c.message_id == bindparam("mid"), _t.c.status == _QUEUED)
    .values(
        lease_expire_time=None,
        next_attempt_time=bindparam("at"),
        last_error=bindparam("err"),
    )
)


@dataclass(frozen=True, slots=True)
class ClaimedSms:
    message_id: UUID
    agreement_reference: UUID
    attempts: int
    #: None when the payload cannot be opened (the secret key changed): it can never be sent.
    phone_e164: str | None = field(repr=False)
    text: str | None = field(repr=False)


class SqlOutboxStore(LeasedStore):
    async def claim(self, limit: int) -> list[ClaimedSms]:
        rows = await self._claim(_CLAIM, limit)
        # RETURNING follows no order: put the batch back in the order it was queued.
        rows.sort(key=lambda row: row.create_time)
        return [self._open(row) for row in rows]

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        if not outcomes:
            return
        now = self._clock()
        finished = [
            {"mid": o.message_id, "st": o.final_status.value, "err": o.detail, "now": now}
            for o in outcomes
            if o.final_status is not None
        ]
        retried = [
            {"mid": o.message_id, "at": o.retry_time, "err": o.detail}
            for o in outcomes
            if o.final_status is None
        ]
        with database_errors():
            async with direct.transaction(self._engine) as tx:
                if tx.dialect_name == "postgresql":
                    await tx.execute_many(_LOCK_AGREEMENT, finished)
                await tx.execute_many(_FINISH, finished)
                await tx.execute_many(_SET_DELIVERY_STATUS, finished)
                await tx.execute_many(_RETRY_LATER, retried)
                await tx.commit()

    async def backlog(self) -> tuple[int, datetime | None]:
        """How many messages wait, and since when the oldest does."""
        t = outbox_messages
        stmt = select(func.count(), func.min(t.c.create_time)).where(queued(t))
        async with self._engine.connect() as conn:
            count, oldest = (await conn.execute(stmt)).one()
        return int(count), oldest

    def _open(self, row: object) -> ClaimedSms:
        message_id: UUID = row.message_id  # type: ignore[attr-defined]
        phone = text = None
        sealed = row.payload_sealed  # type: ignore[attr-defined]
        if sealed is not None:
            try:
                payload = json.loads(self._sealer.open(sealed, message_id.bytes))
                phone, text = payload["phone"], payload["text"]
            except (InvalidTag, ValueError, KeyError):
                pass
        return ClaimedSms(
            message_id=message_id,
            agreement_reference=row.agreement_reference,  # type: ignore[attr-defined]
            attempts=row.attempts,  # type: ignore[attr-defined]
            phone_e164=phone,
            text=text,
        )
