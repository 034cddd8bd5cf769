"""The SQL unit of work, its repositories and the reader, on real databases of both kinds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.reader import SqlAgreementReader
from onboarding.domain.agreement import Agreement, AgreementStatus
from onboarding.domain.errors import OtpInvalid
from onboarding.service_layer.errors import WriteConflict
from onboarding.service_layer.unit_of_work import OutgoingSms
from onboarding.service_layer.views import PageCursor
from tests.conftest import random_client
from tests.integration.conftest import (
    KEYRING,
    POLICY,
    T0,
    MutableClock,
    issued,
    new_agreement,
    statements,
    unit_of_work,
    updates,
)

FIELDS = (
    "reference",
    "id_hash",
    "phone_mac",
    "phone_masked",
    "create_time",
    "status",
    "request_id",
    "confirm_time",
    "revoke_time",
    "otp",
    "otp_sends",
)


def assert_same(actual: Agreement | None, expected: Agreement) -> None:
    assert actual is not None
    for name in FIELDS:
        assert getattr(actual, name) == getattr(expected, name), name
    times = [actual.create_time, actual.confirm_time, actual.revoke_time]
    if actual.otp is not None:
        times += [actual.otp.send_time, actual.otp.expire_time]
    for value in times:
        if value is not None:
            assert value.tzinfo is UTC


async def store(engine: AsyncEngine, *agreements: Agreement) -> None:
    async with unit_of_work(engine) as uow:
        for agreement in agreements:
            await uow.agreements.add(agreement)
        await uow.commit()


async def load(engine: AsyncEngine, reference: UUID) -> Agreement | None:
    async with unit_of_work(engine) as uow:
        return await uow.agreements.get_for_update(reference)


async def raw_rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows as the database holds them: plain SQL, no column types on the way out."""
    stmt = text(sql).bindparams(*(bindparam(name, type_=Uuid) for name in params))
    async with engine.connect() as conn:
        result = await conn.execute(stmt, params)
        return [dict(row._mapping) for row in result]


async def agreement_row(engine: AsyncEngine, reference: UUID) -> dict[str, Any]:
    [row] = await raw_rows(engine, "SELECT * FROM agreements WHERE reference = :r", r=reference)
    return row


# -- reading back ----------------------------------------------------------------------------


async def test_added_agreement_reads_back_equal_from_the_repository(engine: AsyncEngine) -> None:
    agreement = new_agreement(request_id=f"req-{uuid4().hex}")
    await store(engine, agreement)

    loaded = await load(engine, agreement.reference)

    assert_same(loaded, agreement)
    assert loaded is not None and loaded.phone == agreement.phone


async def test_added_agreement_reads_back_equal_from_the_reader(engine: AsyncEngine) -> None:
    agreement = new_agreement(request_id=f"req-{uuid4().hex}")
    await store(engine, agreement)

    read = await SqlAgreementReader(engine).get(agreement.reference)

    assert_same(read, agreement)
    assert read is not None and read.phone is None  # the reader never opens the phone


async def test_times_given_in_another_zone_come_back_as_the_same_instant_in_utc(
    engine: AsyncEngine,
) -> None:
    moscow = timezone(timedelta(hours=3))
    agreement = new_agreement(datetime(2031, 1, 2, 3, 4, 5, 999999, tzinfo=moscow))
    await store(engine, agreement)

    read = await SqlAgreementReader(engine).get(agreement.reference)

    assert read is not None
    assert read.create_time == datetime(2031, 1, 2, 0, 4, 5, 999999, tzinfo=UTC)
    assert read.create_time.tzinfo is UTC
    assert_same(read, agreement)


async def test_an_agreement_without_code_reads_back_without_otp(engine: AsyncEngine) -> None:
    agreement = new_agreement(with_otp=False)
    await store(engine, agreement)

    loaded = await load(engine, agreement.reference)

    assert_same(loaded, agreement)
    assert loaded is not None and loaded.otp is None and loaded.otp_sends == 0


async def test_unknown_references_read_as_none(engine: AsyncEngine) -> None:
    assert await load(engine, uuid4()) is None
    assert await SqlAgreementReader(engine).get(uuid4()) is None


async def test_get_by_request_id_finds_the_agreement(engine: AsyncEngine) -> None:
    request_id = f"req-{uuid4().hex}"
    agreement = new_agreement(request_id=request_id)
    await store(engine, agreement, new_agreement(request_id=f"req-{uuid4().hex}"))

    async with unit_of_work(engine) as uow:
        found = await uow.agreements.get_by_request_id(request_id)
        missing = await uow.agreements.get_by_request_id(f"req-{uuid4().hex}")

    assert_same(found, agreement)
    assert missing is None


async def test_an_agreement_found_by_request_id_is_read_not_saved(engine: AsyncEngine) -> None:
    request_id = f"req-{uuid4().hex}"
    agreement = new_agreement(request_id=request_id)
    await store(engine, agreement)

    async with unit_of_work(engine) as uow:
        found = await uow.agreements.get_by_request_id(request_id)
        assert found is not None
        found.revoke(now=T0)
        await uow.commit()

    assert_same(await load(engine, agreement.reference), agreement)


async def test_a_used_up_try_is_persisted(engine: AsyncEngine) -> None:
    agreement = new_agreement()
    await store(engine, agreement)
    wrong = "000000" if issued(agreement).code != "000000" else "111111"

    async with unit_of_work(engine) as uow:
        loaded = await uow.agreements.get_for_update(agreement.reference)
        assert loaded is not None
        with pytest.raises(OtpInvalid):
            loaded.confirm(code=wrong, now=T0, policy=POLICY, hasher=KEYRING.codes)
        await uow.commit()

    reloaded = await load(engine, agreement.reference)
    assert reloaded is not None and reloaded.otp is not None
    assert reloaded.otp.attempts_remaining == POLICY.max_attempts - 1


# -- personal data at rest -------------------------------------------------------------------


async def test_the_row_holds_the_phone_sealed_not_as_text(engine: AsyncEngine) -> None:
    agreement = new_agreement()
    assert agreement.phone is not None
    await store(engine, agreement)

    row = await agreement_row(engine, agreement.reference)

    sealed = bytes(row["phone_sealed"])
    assert agreement.phone.e164.encode() not in sealed
    opened = KEYRING.sealer.open(sealed, agreement.reference.bytes)
    assert opened == agreement.phone.e164.encode()


async def test_confirm_erases_the_sealed_phone(engine: AsyncEngine) -> None:
    agreement = new_agreement()
    code = issued(agreement).code
    await store(engine, agreement)
    confirm_time = T0 + timedelta(seconds=7, microseconds=1)

    async with unit_of_work(engine) as uow:
        loaded = await uow.agreements.get_for_update(agreement.reference)
        assert loaded is not None
        loaded.confirm(code=code, now=confirm_time, policy=POLICY, hasher=KEYRING.codes)
        await uow.commit()

    row = await agreement_row(engine, agreement.reference)
    assert row["phone_sealed"] is None
    assert row["status"] == AgreementStatus.CONFIRMED.value
    reloaded = await load(engine, agreement.reference)
    assert reloaded is not None
    assert reloaded.phone is None
    assert reloaded.status is AgreementStatus.CONFIRMED
    assert reloaded.confirm_time == confirm_time


async def test_revoke_erases_the_sealed_phone(engine: AsyncEngine) -> None:
    agreement = new_agreement()
    await store(engine, agreement)

    async with unit_of_work(engine) as uow:
        loaded = await uow.agreements.get_for_update(agreement.reference)
        assert loaded is not None
        loaded.revoke(now=T0 + timedelta(minutes=1))
        await uow.commit()

    row = await agreement_row(engine, agreement.reference)
    assert row["phone_sealed"] is None
    assert row["status"] == AgreementStatus.REVOKED.value


def leaked(row: dict[str, Any], phone_e164: str, code: str) -> list[str]:
    """Columns whose text or bytes hold the number (with or without '+') or the code. Time
    columns are left out of the code check: on SQLite they are text with six-digit fields."""
    found = []
    for column, value in row.items():
        if isinstance(value, memoryview):
            value = bytes(value)
        if isinstance(value, bytes):
            haystack, needles = value, [phone_e164.encode(), phone_e164[1:].encode()]
            if not column.endswith("_time"):
                needles.append(code.encode())
        elif isinstance(value, str):
            haystack, needles = value, [phone_e164, phone_e164[1:]]  # type: ignore[assignment]
            if not column.endswith("_time"):
                needles.append(code)
        else:
            continue
        if any(needle in haystack for needle in needles):  # type: ignore[operator]
            found.append(column)
    return found


async def test_no_raw_row_holds_the_phone_number_or_the_code(fresh_engine: AsyncEngine) -> None:
    agreement = new_agreement()
    otp = issued(agreement)
    async with unit_of_work(fresh_engine) as uow:
        await uow.agreements.add(agreement)
        quota = await uow.phone_quotas.get_for_update(agreement.phone_mac)
        quota.take(T0, POLICY.max_sends_per_phone, POLICY.phone_window)
        await uow.outbox.add(
            OutgoingSms(otp.message_id, agreement.reference, otp.phone_e164, f"Code: {otp.code}")
        )
        await uow.commit()

    rows = {
        table: await raw_rows(fresh_engine, f"SELECT * FROM {table}")
        for table in ("agreements", "phone_send_quotas", "outbox_messages")
    }

    assert all(len(found) == 1 for found in rows.values())
    for table, found in rows.items():
        assert leaked(found[0], otp.phone_e164, otp.code) == [], table


# -- what a unit of work writes --------------------------------------------------------------


async def test_add_then_commit_issues_no_update(engine: AsyncEngine) -> None:
    with statements(engine) as seen:
        await store(engine, new_agreement())

    assert updates(seen) == []


async def test_commit_without_changes_issues_no_update(engine: AsyncEngine) -> None:
    agreement = new_agreement()
    await store(engine, agreement)

    with statements(engine) as seen:
        async with unit_of_work(engine) as uow:
            assert await uow.agreements.get_for_update(agreement.reference) is not None
            await uow.phone_quotas.get_for_update(agreement.phone_mac)
            await uow.commit()

    assert updates(seen) == []


async def test_a_change_is_one_update_of_the_changed_columns(engine: AsyncEngine) -> None:
    agreement = new_agreement()
    await store(engine, agreement)

    with statements(engine) as seen:
        async with unit_of_work(engine) as uow:
            loaded = await uow.agreements.get_for_update(agreement.reference)
            assert loaded is not None
            loaded.revoke(now=T0 + timedelta(minutes=1))
            await uow.commit()

    [update] = updates(seen)
    set_clause = update.split(" WHERE ")[0]
    for column in ("status", "revoke_time", "phone_sealed"):
        assert column in set_clause
    for column in ("id_hash", "phone_mac", "create_time", "otp_code_mac", "otp_sends"):
        assert column not in set_clause


async def test_a_change_after_add_is_written_by_commit(engine: AsyncEngine) -> None:
    agreement = new_agreement(with_otp=False)

    with statements(engine) as seen:
        async with unit_of_work(engine) as uow:
            await uow.agreements.add(agreement)
            agreement.revoke(now=T0 + timedelta(seconds=1))
            await uow.commit()

    inserts = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO AGREEMENTS")]
    assert len(inserts) == 1
    assert len(updates(seen)) <= 1
    assert_same(await load(engine, agreement.reference), agreement)
    row = await agreement_row(engine, agreement.reference)
    assert row["phone_sealed"] is None


async def test_leaving_without_commit_discards_an_added_agreement(engine: AsyncEngine) -> None:
    agreement = new_agreement()

    async with unit_of_work(engine) as uow:
        await uow.agreements.add(agreement)

    assert await SqlAgreementReader(engine).get(agreement.reference) is None


async def test_leaving_without_commit_discards_a_change(engine: AsyncEngine) -> None:
    agreement = new_agreement()
    await store(engine, agreement)

    async with unit_of_work(engine) as uow:
        loaded = await uow.agreements.get_for_update(agreement.reference)
        assert loaded is not None
        loaded.revoke(now=T0 + timedelta(minutes=1))

    assert_same(await load(engine, agreement.reference), agreement)


async def test_an_error_inside_rolls_back_and_propagates(engine: AsyncEngine) -> None:
    agreement = new_agreement()

    with pytest.raises(RuntimeError, match="boom"):
        async with unit_of_work(engine) as uow:
            await uow.agreements.add(agreement)
            raise RuntimeError("boom")

    assert await SqlAgreementReader(engine).get(agreement.reference) is None


# -- the per-phone quota ---------------------------------------------------------------------


async def test_phone_quota_row_is_created_once_and_round_trips_send_times(
    engine: AsyncEngine,
) -> None:
    phone_mac = new_agreement(with_otp=False).phone_mac
    sends = [T0 + timedelta(seconds=1, microseconds=1), T0 + timedelta(minutes=5, microseconds=7)]

    async with unit_of_work(engine) as uow:
        quota = await uow.phone_quotas.get_for_update(phone_mac)
        assert quota.send_times == []
        for send in sends:
            quota.take(send, POLICY.max_sends_per_phone, POLICY.phone_window)
        await uow.commit()
    async with unit_of_work(engine) as uow:
        again = await uow.phone_quotas.get_for_update(phone_mac)
        await uow.commit()

    assert again.send_times == sends
    assert all(t.tzinfo is UTC for t in again.send_times)
    assert await quota_rows(engine, phone_mac) == 1


async def quota_rows(engine: AsyncEngine, phone_mac: bytes) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM phone_send_quotas WHERE phone_mac = :m"), {"m": phone_mac}
        )
        return int(result.scalar_one())


async def test_a_quota_asked_for_twice_in_one_unit_is_one_quota_and_one_row(
    engine: AsyncEngine,
) -> None:
    phone_mac = new_agreement(with_otp=False).phone_mac

    async with unit_of_work(engine) as uow:
        first = await uow.phone_quotas.get_for_update(phone_mac)
        first.take(T0, POLICY.max_sends_per_phone, POLICY.phone_window)
        second = await uow.phone_quotas.get_for_update(phone_mac)
        assert second is first
        second.take(T0 + timedelta(seconds=1), POLICY.max_sends_per_phone, POLICY.phone_window)
        await uow.commit()
    async with unit_of_work(engine) as uow:
        again = await uow.phone_quotas.get_for_update(phone_mac)

    assert again.send_times == [T0, T0 + timedelta(seconds=1)]
    assert await quota_rows(engine, phone_mac) == 1


async def test_a_new_phones_quota_is_written_once(engine: AsyncEngine, db_kind: str) -> None:
    """SQLite's write transaction holds the database's write lock: the quota is read, and a new
    phone's row written by the flush alone. PostgreSQL, with no transaction begun, reads it
    without a lock and makes the row in one statement, only if nobody made it meanwhile."""
    phone_mac = new_agreement(with_otp=False).phone_mac
    with statements(engine) as seen:
        async with unit_of_work(engine) as uow:
            quota = await uow.phone_quotas.get_for_update(phone_mac)
            quota.take(T0, POLICY.max_sends_per_phone, POLICY.phone_window)
            await uow.commit()
    writes = [s for s in seen if "phone_send_quotas" in s and not s.startswith("SELECT")]
    if db_kind == "sqlite":
        [write] = writes
        assert write.startswith("INSERT INTO phone_send_quotas")
    else:
        assert [s.split()[0] for s in seen] == ["SELECT", "WITH"], seen
        assert writes[0].startswith("WITH g0 AS (INSERT INTO phone_send_quotas")
    assert await quota_rows(engine, phone_mac) == 1


async def test_a_quota_read_without_commit_leaves_no_row(engine: AsyncEngine) -> None:
    phone_mac = new_agreement(with_otp=False).phone_mac

    async with unit_of_work(engine) as uow:
        await uow.phone_quotas.get_for_update(phone_mac)

    assert await quota_rows(engine, phone_mac) == 0


# -- listing a client's agreements -----------------------------------------------------------


async def test_list_by_client_is_newest_first_and_ignores_other_clients(
    engine: AsyncEngine,
) -> None:
    client = random_client()
    older = new_agreement(T0, id_hash=client)
    newer = new_agreement(T0 + timedelta(microseconds=1), id_hash=client)
    await store(engine, older, newer, new_agreement(T0, id_hash=random_client()))

    listed = await SqlAgreementReader(engine).list_by_client(client, 10, None)

    assert [a.reference for a in listed] == [newer.reference, older.reference]
    assert all(a.phone is None for a in listed)


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 8])
async def test_list_by_client_pages_without_gaps_or_repeats(
    engine: AsyncEngine, page_size: int
) -> None:
    client = random_client()
    offsets = [0, 1, 1, 1, 1, 2, 3]  # four share one create_time: the reference breaks the tie
    made = [new_agreement(T0 + timedelta(seconds=s), id_hash=client) for s in offsets]
    await store(engine, *made)
    expected = sorted(made, key=lambda a: (a.create_time, a.reference), reverse=True)
    reader = SqlAgreementReader(engine)

    seen: list[UUID] = []
    cursor: PageCursor | None = None
    for _ in range(len(made) + 1):
        page = await reader.list_by_client(client, page_size, cursor)
        assert len(page) <= page_size
        seen += [a.reference for a in page]
        if len(page) < page_size:
            break
        cursor = PageCursor(page[-1].create_time, page[-1].reference)

    assert seen == [a.reference for a in expected]


# -- unique conflicts ------------------------------------------------------------------------


async def test_a_second_agreement_with_the_same_request_id_is_a_write_conflict(
    engine: AsyncEngine,
) -> None:
    request_id = f"req-{uuid4().hex}"
    first = new_agreement(request_id=request_id)
    await store(engine, first)

    with pytest.raises(WriteConflict):
        await store(engine, new_agreement(request_id=request_id))

    assert_same(await load(engine, first.reference), first)


# SQLite serializes writers at BEGIN IMMEDIATE: there is no race to lose.
@pytest.mark.parametrize("db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_racing_agreements_with_one_request_id_end_in_a_write_conflict(
    engine: AsyncEngine, db_kind: str
) -> None:
    request_id = f"req-{uuid4().hex}"
    first, second = new_agreement(request_id=request_id), new_agreement(request_id=request_id)
    second_written = asyncio.Event()

    async def late() -> None:
        async with unit_of_work(engine) as uow:
            await uow.agreements.add(second)
            await uow.flush()  # waits on the first's uncommitted key
            second_written.set()
            await uow.commit()

    async with unit_of_work(engine) as uow:
        await uow.agreements.add(first)
        await uow.flush()
        racer = asyncio.create_task(late())
        await asyncio.sleep(0.2)
        assert not second_written.is_set()
        await uow.commit()

    with pytest.raises(WriteConflict):
        await asyncio.wait_for(racer, timeout=5)
    assert await SqlAgreementReader(engine).get(second.reference) is None
    assert_same(await load(engine, first.reference), first)


async def test_a_reused_message_id_is_a_write_conflict(fresh_engine: AsyncEngine) -> None:
    message = OutgoingSms(uuid4(), uuid4(), "+79160000000", "Code: 123456")
    clock = MutableClock()
    async with unit_of_work(fresh_engine, clock) as uow:
        await uow.outbox.add(message)
        await uow.commit()

    with pytest.raises(WriteConflict):
        async with unit_of_work(fresh_engine, clock) as uow:
            await uow.outbox.add(message)
            await uow.commit()
