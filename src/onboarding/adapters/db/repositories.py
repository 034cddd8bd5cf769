"""Repositories over one connection inside one transaction (see ``unit_of_work``).

Writes lock the rows they will change (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the
transaction began IMMEDIATE and holds the database's write lock), so rules such as "three tries
per code" hold under concurrent calls: the check and the write see one consistent row. One
exception, on PostgreSQL: a phone's quota read before the transaction has begun is not locked,
and is written only if it is still as read (see ``SqlPhoneQuotaRepository``); the rule holds
the same way, and the loser of a race runs again.

Statements are built once, with bind parameters, and run by the driver (see ``direct``). Writes
whose results nobody reads are deferred: on PostgreSQL those of one commit go as one statement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql

from onboarding.adapters.crypto import Sealer
from onboarding.adapters.db.direct import Connection, Statement
from onboarding.adapters.db.mapping import agreement_from_row, agreement_to_row
from onboarding.adapters.db.tables import agreements, outbox_messages, phone_send_quotas
from onboarding.domain.agreement import Agreement, DeliveryStatus
from onboarding.domain.phone import PhoneNumber
from onboarding.domain.quota import PhoneSendQuota
from onboarding.service_layer.unit_of_work import OutgoingSms

_INSERT_AGREEMENT = Statement(insert(agreements))
_LOCK_BY_REFERENCE = Statement(
    select(agreements).where(agreements.c.reference == bindparam("key")).with_for_update()
)
_BY_REQUEST_ID = Statement(select(agreements).where(agreements.c.request_id == bindparam("key")))
_UPDATE_AGREEMENT = Statement(update(agreements).where(agreements.c.reference == bindparam("key")))


def _quota_upsert(dialect_insert: Any) -> Any:
    """An upsert that changes nothing: it creates the row when missing and, either way, locks
    it until the transaction ends, in one statement."""
    stmt = dialect_insert(phone_send_quotas).values(phone_mac=bindparam("phone_mac"), send_times="")
    return stmt.on_conflict_do_update(
        index_elements=[phone_send_quotas.c.phone_mac],
        set_={"phone_mac": stmt.excluded.phone_mac},
    ).returning(phone_send_quotas.c.send_times)


_READ_QUOTA = Statement(
    select(phone_send_quotas.c.send_times).where(
        phone_send_quotas.c.phone_mac == bindparam("phone_mac")
    )
)
# PostgreSQL locks the quota's row, made if missing. SQLite's write transaction already holds
# the database's one write lock: a read is enough, and a new phone's row is written once, by
# the flush (the upsert then the update wrote it twice).
_LOCK_QUOTA = {"postgresql": Statement(_quota_upsert(postgresql.insert)), "sqlite": _READ_QUOTA}
_INSERT_QUOTA = Statement(insert(phone_send_quotas))
_UPDATE_QUOTA = Statement(
    update(phone_send_quotas).where(phone_send_quotas.c.phone_mac == bindparam("key"))
)
# Gates (see ``PgConnection.defer``): a quota read without a lock is written only if it is
# still as read, and a new phone's row only if nobody made it meanwhile.
_CLAIM_QUOTA = Statement(
    postgresql.insert(phone_send_quotas)
    .on_conflict_do_nothing(index_elements=[phone_send_quotas.c.phone_mac])
    .returning(literal_column("1"))
)
_SWAP_QUOTA = Statement(
    update(phone_send_quotas)
    .where(
        phone_send_quotas.c.phone_mac == bindparam("key"),
        phone_send_quotas.c.send_times == bindparam("read"),
    )
    .values(send_times=bindparam("send_times"))
    .returning(literal_column("1"))
)
#: Phones whose quota lost a race lately (by MAC, with when): for a while their quota is read
#: under a lock, so calls for one phone that keep coming together queue instead of retrying.
_CONTENDED: dict[bytes, float] = {}
_CONTENDED_SECONDS = 60.0
_CONTENDED_MAX = 10_000
_INSERT_OUTBOX = Statement(insert(outbox_messages))
_EXPEDITE_OUTBOX = Statement(
    update(outbox_messages)
    .where(
        outbox_messages.c.message_id == bindparam("key"),
        # Bound, not ``tables.queued``: then only the primary key can serve this one message.
        outbox_messages.c.status == DeliveryStatus.QUEUED.value,
        outbox_messages.c.next_attempt_time > bindparam("now"),
    )
    .values(next_attempt_time=bindparam("now"))
)


class SqlAgreementRepository:
    """Keeps each loaded agreement with the row it came from; ``flush`` writes what changed."""

    def __init__(self, conn: Connection, sealer: Sealer) -> None:
        self._conn = conn
        self._sealer = sealer
        #: Each agreement with its row as last read or written; None until it is inserted.
        self._tracked: dict[UUID, tuple[Agreement, dict[str, Any] | None]] = {}

    @property
    def seen(self) -> Iterator[Agreement]:
        return (agreement for agreement, _ in list(self._tracked.values()))

    async def add(self, agreement: Agreement) -> None:
        # Inserted at flush, so that the first code issued in the same transaction goes into
        # the one INSERT instead of an INSERT and an UPDATE.
        self._tracked[agreement.reference] = (agreement, None)

    async def get_for_update(self, reference: UUID) -> Agreement | None:
        if reference in self._tracked:
            return self._tracked[reference][0]
        return await self._load(_LOCK_BY_REFERENCE, reference)

    async def get_by_request_id(self, request_id: str) -> Agreement | None:
        # Not tracked: nothing of it is written (see the protocol). On PostgreSQL a plain read
        # also leaves a CreateAgreement without a transaction (see ``direct.PgConnection``).
        found = await self._conn.fetch_one(_BY_REQUEST_ID, {"key": request_id})
        if found is None:
            return None
        if found.reference in self._tracked:
            return self._tracked[found.reference][0]
        return self._from_row(found)

    async def flush(self) -> None:
        for reference, (agreement, loaded) in list(self._tracked.items()):
            row = agreement_to_row(agreement)
            if loaded is None:
                sealed = None
                if agreement.phone is not None:
                    sealed = self._sealer.seal(agreement.phone.e164.encode(), reference.bytes)
                self._conn.defer(_INSERT_AGREEMENT, {**row, "phone_sealed": sealed})
                self._tracked[reference] = (agreement, {**row, "phone_sealed": sealed})
                continue
            changed = {key: value for key, value in row.items() if loaded[key] != value}
            if agreement.phone is None and loaded["phone_sealed"] is not None:
                changed["phone_sealed"] = None
            if changed:
                self._conn.defer(_UPDATE_AGREEMENT, {"key": reference, **changed})
                loaded.update(changed)

    async def _load(self, statement: Statement, key: object) -> Agreement | None:
        found = await self._conn.fetch_one(statement, {"key": key})
        if found is None:
            return None
        if found.reference in self._tracked:
            return self._tracked[found.reference][0]
        agreement = self._from_row(found)
        loaded = agreement_to_row(agreement)
        loaded["phone_sealed"] = found.phone_sealed
        self._tracked[agreement.reference] = (agreement, loaded)
        return agreement

    def _from_row(self, found: Any) -> Agreement:
        phone = None
        if found.phone_sealed is not None:
            e164 = self._sealer.open(found.phone_sealed, found.reference.bytes).decode()
            phone = PhoneNumber(e164)
        return agreement_from_row(found, phone)


class SqlPhoneQuotaRepository:
    """A phone's quota, for one unit of work.

    On PostgreSQL, before the unit of work has begun its transaction (see
    ``PgConnection.begin_when_needed``), the quota is read without a lock and written only if
    it is still as read: a gate, so that a ``CreateAgreement`` needs no transaction of its own.
    If another call changed it meanwhile, the unit of work fails with ``StaleRead`` and the bus
    runs the command again; that phone's quota is then read under a lock for a while.
    Otherwise (inside a transaction, a contended phone, SQLite) it is read under a lock."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        #: Each quota handed out, with its text as stored (None: no row yet) and whether it
        #: was read without a lock.
        self._tracked: list[tuple[PhoneSendQuota, str | None, bool]] = []

    async def get_for_update(self, phone_mac: bytes) -> PhoneSendQuota:
        for quota, _stored, _unlocked in self._tracked:
            if quota.phone_mac == phone_mac:  # asked again in this unit of work: one row
                return quota
        unlocked = self._conn.begin_pending and not _contended(phone_mac)
        statement = _READ_QUOTA if unlocked else _LOCK_QUOTA[self._conn.dialect_name]
        found = await self._conn.fetch_one(statement, {"phone_mac": phone_mac})
        stored: str | None = found.send_times if found is not None else None
        times = [datetime.fromtimestamp(float(t), UTC) for t in (stored or "").split()]
        quota = PhoneSendQuota(phone_mac=phone_mac, send_times=times)
        self._tracked.append((quota, stored, unlocked))
        return quota

    async def flush(self) -> None:
        for index, (quota, stored, unlocked) in enumerate(self._tracked):
            encoded = " ".join(f"{t.timestamp():.6f}" for t in quota.send_times)
            if encoded == (stored or ""):
                continue  # unchanged: what was read decided nothing that is written
            self._tracked[index] = (quota, encoded, unlocked)
            mac = quota.phone_mac
            if unlocked and stored is None:
                self._conn.defer(_CLAIM_QUOTA, {"phone_mac": mac, "send_times": encoded}, gate=True)
            elif unlocked:
                values = {"key": mac, "read": stored, "send_times": encoded}
                self._conn.defer(_SWAP_QUOTA, values, gate=True)
            elif stored is None:
                self._conn.defer(_INSERT_QUOTA, {"phone_mac": mac, "send_times": encoded})
            else:
                self._conn.defer(_UPDATE_QUOTA, {"key": mac, "send_times": encoded})

    def lost_race(self) -> None:
        """The unit of work failed on a stale read: its phones are contended for a while."""
        now = time.monotonic()
        if len(_CONTENDED) >= _CONTENDED_MAX:
            for mac, since in list(_CONTENDED.items()):
                if now - since > _CONTENDED_SECONDS:
                    del _CONTENDED[mac]
            if len(_CONTENDED) >= _CONTENDED_MAX:
                _CONTENDED.clear()
        for quota, _stored, unlocked in self._tracked:
            if unlocked:
                _CONTENDED[quota.phone_mac] = now


def _contended(phone_mac: bytes) -> bool:
    since = _CONTENDED.get(phone_mac)
    return since is not None and time.monotonic() - since < _CONTENDED_SECONDS


class SqlOutbox:
    """The send side of the outbox: rows written in the command's own transaction."""

    def __init__(self, conn: Connection, sealer: Sealer, clock: Any) -> None:
        self._conn = conn
        self._sealer = sealer
        self._clock = clock
        self.added = 0

    async def add(self, message: OutgoingSms) -> None:
        payload = json.dumps({"phone": message.phone_e164, "text": message.text}).encode()
        now = self._clock()
        self._conn.defer(
            _INSERT_OUTBOX,
            {
                "message_id": message.message_id,
                "agreement_reference": message.agreement_reference,
                "status": DeliveryStatus.QUEUED.value,
                "payload_sealed": self._sealer.seal(payload, message.message_id.bytes),
                "attempts": 0,
                "next_attempt_time": now,
                "create_time": now,
            },
        )
        self.added += 1

    async def expedite(self, message_id: UUID) -> None:
        self._conn.defer(_EXPEDITE_OUTBOX, {"key": message_id, "now": self._clock()})
