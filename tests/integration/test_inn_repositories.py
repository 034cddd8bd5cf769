"""The INN lookup's storage on real databases of both kinds: the repositories of the SQL unit of
work, the worker's claims, the reader, and (on PostgreSQL) the ordering of a joining lookup
against a recorded answer.

Every test has a database of its own (``fresh_engine``): the upstream pause is one row shared
by everyone, and servers of other tests would claim jobs in the shared database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.crypto import Keyring
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.inn_repositories import open_person
from onboarding.adapters.db.inn_store import NALOG, SqlInnJobStore, SqlInnLookupReader
from onboarding.adapters.db.tables import inn_jobs, inn_lookups, inn_results, upstream_pauses
from onboarding.adapters.db.unit_of_work import SqlAutocommitWork, SqlUnitOfWork
from onboarding.domain.inn import (
    InnLookup,
    LookupPolicy,
    LookupStatus,
    PersonData,
    StoredAnswer,
    UpstreamAnswer,
    UpstreamVerdict,
)
from onboarding.service_layer import commands
from onboarding.service_layer.inn_handlers import InnHandlers
from tests.conftest import SECRET_KEY
from tests.integration.conftest import T0, MutableClock, statements

KEYRING = Keyring(SECRET_KEY.encode())
OTHER_KEYRING = Keyring(b"another-secret-key-0123456789abcdef")
LEASE = timedelta(seconds=30)
EPSILON = timedelta(microseconds=1)
VALID_INN = "500100732259"
TODAY = date(2031, 5, 6)

POSTGRES_ONLY = pytest.mark.parametrize(
    "db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)]
)


# -- helpers -------------------------------------------------------------------------------


PENDING_INDEX = "ix_inn_lookups_pending_person_key"


def person(n: int = 0, *, last_name: str = "Ёлкин", middle_name: str = "Петрович") -> PersonData:
    """A person of their own for each ``n`` (the document number differs)."""
    return PersonData.parse(
        last_name=last_name,
        first_name="Пётр",
        middle_name=middle_name,
        birth_date="1980-05-17",
        document_serial="45 08",
        document_number=f"{700000 + n:06d}",
        document_date="2005-06-01",
        today=TODAY,
    )


def key_of(data: PersonData, keyring: Keyring = KEYRING) -> bytes:
    return keyring.persons(*data.key_material())


def uow(engine: AsyncEngine, clock: Callable[[], datetime], keyring: Keyring = KEYRING) -> Any:
    return SqlUnitOfWork(engine, keyring.sealer, clock)


def job_store(engine: AsyncEngine, clock: MutableClock) -> SqlInnJobStore:
    return SqlInnJobStore(engine, KEYRING.sealer, clock, LEASE)


async def start_job(
    engine: AsyncEngine,
    clock: MutableClock,
    data: PersonData,
    request_id: str | None = None,
    keyring: Keyring = KEYRING,
) -> bytes:
    """Starts (or joins) the person's job, and a pending lookup when a request_id is given."""
    key = key_of(data, keyring)
    async with uow(engine, clock, keyring) as work:
        await work.inn_jobs.join_or_start(key, data, clock())
        if request_id is not None:
            await work.inn_lookups.add(InnLookup.start(request_id, key, clock()))
        await work.commit()
    return key


async def add_lookups(engine: AsyncEngine, clock: MutableClock, *lookups: InnLookup) -> None:
    async with uow(engine, clock) as work:
        for lookup in lookups:
            await work.inn_lookups.add(lookup)
        await work.commit()


async def get_lookup(engine: AsyncEngine, request_id: str) -> InnLookup | None:
    async with uow(engine, MutableClock()) as work:
        return await work.inn_lookups.get(request_id)


async def rows(engine: AsyncEngine, stmt: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(stmt)).mappings().all()]


async def job_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    return await rows(engine, select(inn_jobs))


async def job_row(engine: AsyncEngine, key: bytes) -> dict[str, Any] | None:
    found = await rows(engine, select(inn_jobs).where(inn_jobs.c.person_key == key))
    return found[0] if found else None


async def orphaned_pending(engine: AsyncEngine) -> list[str]:
    """Request ids of PENDING lookups whose person has no job: nobody would ever finish them."""
    stmt = (
        select(inn_lookups.c.request_id)
        .select_from(
            inn_lookups.outerjoin(inn_jobs, inn_jobs.c.person_key == inn_lookups.c.person_key)
        )
        .where(inn_lookups.c.status == LookupStatus.PENDING.value, inn_jobs.c.person_key.is_(None))
    )
    return [r["request_id"] for r in await rows(engine, stmt)]


# -- inn_lookups ---------------------------------------------------------------------------


async def test_a_lookup_round_trips_with_exact_aware_utc_times(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = key_of(person())
    pending = InnLookup.start("rt-pending", key, T0)
    moscow = timezone(timedelta(hours=3))
    finished = InnLookup(
        request_id="rt-finished",
        person_key=key,
        status=LookupStatus.FOUND,
        create_time=T0.astimezone(moscow),
        inn=VALID_INN,
        cached=True,
        details="",
        attempts=3,
        finish_time=(T0 + timedelta(seconds=1, microseconds=7)).astimezone(moscow),
    )
    await add_lookups(fresh_engine, clock, pending, finished)

    for expected in (pending, finished):
        got = await get_lookup(fresh_engine, expected.request_id)
        assert got is not None
        for name in ("request_id", "person_key", "status", "inn", "cached", "details", "attempts"):
            assert getattr(got, name) == getattr(expected, name), name
        assert got.create_time == expected.create_time
        assert got.create_time.tzinfo is UTC
        assert got.finish_time == expected.finish_time
        if got.finish_time is not None:
            assert got.finish_time.tzinfo is UTC
    assert (await get_lookup(fresh_engine, "rt-pending")).create_time == T0  # type: ignore[union-attr]
    assert await get_lookup(fresh_engine, "no-such-request") is None


def fields_of(lookup: InnLookup | None) -> dict[str, Any] | None:
    """Every field: a lookup is an entity, equal only to itself."""
    if lookup is None:
        return None
    return {f.name: getattr(lookup, f.name) for f in dataclasses.fields(InnLookup)}


async def store_answer(
    engine: AsyncEngine, clock: MutableClock, key: bytes, answer: StoredAnswer
) -> None:
    async with uow(engine, clock) as work:
        await work.inn_results.put(
            key, status=answer.status, inn=answer.inn, now=T0, expire_time=answer.expire_time
        )
        await work.commit()


@pytest.mark.parametrize(
    "answer",
    [
        StoredAnswer(LookupStatus.FOUND, VALID_INN, T0 + timedelta(days=30)),
        StoredAnswer(LookupStatus.NOT_FOUND, None, T0 + timedelta(days=1)),
    ],
    ids=["found", "not-found"],
)
async def test_add_from_stored_answer_writes_what_the_domain_would(
    fresh_engine: AsyncEngine, clock: MutableClock, answer: StoredAnswer
) -> None:
    key = key_of(person(1))
    await store_answer(fresh_engine, clock, key, answer)
    now = T0 + timedelta(hours=1)
    expected = InnLookup.from_stored_answer("copied", key, answer, now)

    async with SqlAutocommitWork(fresh_engine) as work:
        added = await work.inn_lookups.add_from_stored_answer("copied", key, now)

    assert fields_of(added) == fields_of(expected)
    assert fields_of(await get_lookup(fresh_engine, "copied")) == fields_of(expected)


async def test_add_from_stored_answer_needs_a_fresh_answer_of_that_person(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key, other = key_of(person(1)), key_of(person(2))
    expire = T0 + timedelta(days=1)
    await store_answer(
        fresh_engine, clock, key, StoredAnswer(LookupStatus.FOUND, VALID_INN, expire)
    )

    async with SqlAutocommitWork(fresh_engine) as work:
        assert await work.inn_lookups.add_from_stored_answer("other", other, T0) is None
        assert await work.inn_lookups.add_from_stored_answer("expired", key, expire) is None
        assert await work.inn_lookups.add_from_stored_answer("late", key, expire + EPSILON) is None
        last = await work.inn_lookups.add_from_stored_answer("last", key, expire - EPSILON)

    assert last is not None and last.inn == VALID_INN
    for request_id in ("other", "expired", "late"):
        assert await get_lookup(fresh_engine, request_id) is None
    # The same boundary as the domain's own rule.
    assert not StoredAnswer(LookupStatus.FOUND, VALID_INN, expire).fresh(expire)


async def test_add_from_stored_answer_never_overwrites_a_known_request_id(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    first, second = key_of(person(1)), key_of(person(2))
    for key in (first, second):
        await store_answer(
            fresh_engine,
            clock,
            key,
            StoredAnswer(LookupStatus.FOUND, VALID_INN, T0 + timedelta(days=30)),
        )
    await add_lookups(fresh_engine, clock, InnLookup.start("taken", second, T0))

    async with SqlAutocommitWork(fresh_engine) as work:
        added = await work.inn_lookups.add_from_stored_answer("once", first, T0)
        assert added is not None
        assert await work.inn_lookups.add_from_stored_answer("once", second, T0) is None
        assert await work.inn_lookups.add_from_stored_answer("taken", first, T0) is None

    assert fields_of(await get_lookup(fresh_engine, "once")) == fields_of(added)
    taken = InnLookup.start("taken", second, T0)
    assert fields_of(await get_lookup(fresh_engine, "taken")) == fields_of(taken)


async def test_autocommit_work_commits_each_statement_without_a_transaction(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = key_of(person(3))
    answer = StoredAnswer(LookupStatus.NOT_FOUND, None, T0 + timedelta(days=1))
    await store_answer(fresh_engine, clock, key, answer)

    with statements(fresh_engine) as seen, pytest.raises(RuntimeError):
        async with SqlAutocommitWork(fresh_engine) as work:
            assert await work.inn_lookups.add_from_stored_answer("kept", key, T0) is not None
            raise RuntimeError("a failure after the insert takes nothing back")

    assert await get_lookup(fresh_engine, "kept") is not None
    assert len(seen) == 1
    assert not any(s.split()[0].upper() in {"BEGIN", "COMMIT", "ROLLBACK"} for s in seen)


async def test_finish_pending_updates_only_that_persons_pending_lookups(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    a, b = key_of(person(1)), key_of(person(2))
    stored = StoredAnswer(LookupStatus.NOT_FOUND, None, T0 + timedelta(days=1))
    await add_lookups(
        fresh_engine,
        clock,
        InnLookup.start("a-1", a, T0),
        InnLookup.start("a-2", a, T0 + EPSILON),
        InnLookup.from_stored_answer("a-done", a, stored, T0),
        InnLookup.start("b-1", b, T0),
    )
    before = {r: await get_lookup(fresh_engine, r) for r in ("a-done", "b-1")}

    finish = T0 + timedelta(seconds=42)
    async with uow(fresh_engine, clock) as work:
        await work.inn_lookups.finish_pending(
            a, status=LookupStatus.FOUND, inn=VALID_INN, details="", attempts=2, now=finish
        )
        assert work.inn_lookups.finished_people == {a}
        await work.commit()

    for request_id in ("a-1", "a-2"):
        got = await get_lookup(fresh_engine, request_id)
        assert got is not None
        assert got.status is LookupStatus.FOUND
        assert (got.inn, got.details, got.attempts, got.cached) == (VALID_INN, "", 2, False)
        assert got.finish_time == finish
    for request_id, expected in before.items():
        got = await get_lookup(fresh_engine, request_id)
        assert got is not None and expected is not None
        assert (got.status, got.inn, got.details, got.attempts, got.finish_time) == (
            expected.status,
            expected.inn,
            expected.details,
            expected.attempts,
            expected.finish_time,
        )


async def test_finishing_a_persons_lookups_reads_only_the_pending_ones(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    """Behind the pending lookups lie every finished one (each cached FindInn adds one): the
    index by person holds only the pending, and the statement that finishes them reads that
    index, not the history."""
    stored = StoredAnswer(LookupStatus.FOUND, VALID_INN, T0 + timedelta(days=1))
    history = [
        InnLookup.from_stored_answer(f"done-{n}", key_of(person(n)), stored, T0) for n in range(200)
    ]
    await add_lookups(fresh_engine, clock, *history, InnLookup.start("p-1", key_of(person(1)), T0))
    with statements(fresh_engine) as seen:
        async with uow(fresh_engine, clock) as work:
            await work.inn_lookups.finish_pending(
                key_of(person(1)),
                status=LookupStatus.FOUND,
                inn=VALID_INN,
                details="",
                attempts=1,
                now=T0,
            )
            await work.commit()
    [sql] = [s for s in seen if s.lstrip().upper().startswith("UPDATE INN_LOOKUPS")]

    async with fresh_engine.connect() as conn:
        if fresh_engine.dialect.name == "postgresql":
            definition = (
                await conn.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                    {"name": PENDING_INDEX},
                )
            ).scalar()
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute("SET plan_cache_mode = force_generic_plan")
            await driver.execute(f"PREPARE finish AS {sql}")
            nulls = ", ".join(["NULL"] * len(set(re.findall(r"\$\d+", sql))))
            plan = str(await driver.fetch(f"EXPLAIN EXECUTE finish({nulls})"))
            await driver.execute("DEALLOCATE finish")
        else:
            definition = (
                await conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = :name"),
                    {"name": PENDING_INDEX},
                )
            ).scalar()
            driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            plan = str(
                driver.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")).fetchall()
            )
    assert "status = 'PENDING'" in definition.replace("::text", "").replace("(", "").replace(
        ")", ""
    )
    assert PENDING_INDEX in plan, plan


# -- inn_jobs ------------------------------------------------------------------------------


async def test_joining_twice_makes_one_job_and_keeps_the_first(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    first = person(3, last_name="Ёлкин")
    key = await start_job(fresh_engine, clock, first)
    [original] = await job_rows(fresh_engine)
    assert original["attempts"] == 0
    assert original["next_attempt_time"] == original["create_time"] == T0
    assert original["lease_expire_time"] is None

    clock.advance(timedelta(minutes=5))
    variant = person(3, last_name="Елкин")  # the same person key, other spelling
    assert key_of(variant) == key
    await start_job(fresh_engine, clock, variant)

    assert await job_rows(fresh_engine) == [original]
    assert open_person(KEYRING.sealer, key, original["person_sealed"]) == first


async def test_joining_a_claimed_job_keeps_its_attempts_and_lease(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = await start_job(fresh_engine, clock, person(4))
    await job_store(fresh_engine, clock).claim(10)
    [claimed] = await job_rows(fresh_engine)

    clock.advance(timedelta(seconds=1))
    await start_job(fresh_engine, clock, person(4))

    assert await job_row(fresh_engine, key) == claimed
    assert claimed["attempts"] == 1 and claimed["lease_expire_time"] == T0 + LEASE


async def test_the_sealed_person_opens_back_and_no_column_holds_it_in_plain_text(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    data = person(5, middle_name="Семёнович")
    key = await start_job(fresh_engine, clock, data, "sealed-1")
    [row] = await job_rows(fresh_engine)

    assert open_person(KEYRING.sealer, key, row["person_sealed"]) == data
    with pytest.raises(InvalidTag):  # bound to its person: moved to another row it won't open
        open_person(KEYRING.sealer, key_of(person(6)), row["person_sealed"])
    with pytest.raises(InvalidTag):
        open_person(OTHER_KEYRING.sealer, key, row["person_sealed"])

    secrets = [
        data.last_name,
        data.first_name,
        data.middle_name,
        data.document_number,
        data.document_serial,
        "45 08",
        "1980-05-17",
        "2005-06-01",
        "17.05.1980",
    ]
    everything = [*row.values(), *(await rows(fresh_engine, select(inn_lookups)))[0].values()]
    for value in everything:
        for secret in secrets:
            if isinstance(value, bytes):
                assert secret.encode() not in value
                assert secret.encode("utf-16-le") not in value
            else:
                assert secret not in str(value)


async def test_remove_deletes_only_that_persons_job(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    a = await start_job(fresh_engine, clock, person(7))
    b = await start_job(fresh_engine, clock, person(8))

    async with uow(fresh_engine, clock) as work:
        await work.inn_jobs.remove(a)
        await work.inn_jobs.remove(key_of(person(9)))  # no job: nothing happens
        await work.commit()

    assert await job_row(fresh_engine, a) is None
    assert await job_row(fresh_engine, b) is not None


async def test_reschedule_sets_the_next_attempt_and_ends_the_lease(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = await start_job(fresh_engine, clock, person(10))
    await job_store(fresh_engine, clock).claim(10)
    later = T0 + timedelta(seconds=77, microseconds=3)

    async with uow(fresh_engine, clock) as work:
        await work.inn_jobs.reschedule(key, later, "busy (http 502)", attempted=True)
        await work.commit()

    row = await job_row(fresh_engine, key)
    assert row is not None
    assert (row["next_attempt_time"], row["lease_expire_time"], row["details"]) == (
        later,
        None,
        "busy (http 502)",
    )
    assert row["attempts"] == 1


async def test_a_reschedule_without_a_call_gives_the_claims_attempt_back(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = await start_job(fresh_engine, clock, person(11))
    [claimed] = await job_store(fresh_engine, clock).claim(10)
    assert claimed.attempts == 1

    async with uow(fresh_engine, clock) as work:
        await work.inn_jobs.reschedule(key, T0 + timedelta(minutes=1), "paused", attempted=False)
        await work.commit()

    row = await job_row(fresh_engine, key)
    assert row is not None and row["attempts"] == 0


# -- inn_results ---------------------------------------------------------------------------


async def test_results_are_stored_and_overwritten(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = key_of(person(11))
    async with uow(fresh_engine, clock) as work:
        assert await work.inn_results.get(key) is None
        await work.inn_results.put(
            key, status=LookupStatus.FOUND, inn=VALID_INN, now=T0, expire_time=T0 + timedelta(1)
        )
        await work.commit()
    async with uow(fresh_engine, clock) as work:
        got = await work.inn_results.get(key)
    assert got == StoredAnswer(LookupStatus.FOUND, VALID_INN, T0 + timedelta(days=1))
    assert got.expire_time.tzinfo is UTC

    later = T0 + timedelta(hours=1)
    async with uow(fresh_engine, clock) as work:
        await work.inn_results.put(
            key, status=LookupStatus.NOT_FOUND, inn=None, now=later, expire_time=later + EPSILON
        )
        await work.commit()
    async with uow(fresh_engine, clock) as work:
        assert await work.inn_results.get(key) == StoredAnswer(
            LookupStatus.NOT_FOUND, None, later + EPSILON
        )
        assert await work.inn_results.get(key_of(person(12))) is None
    [row] = await rows(fresh_engine, select(inn_results))
    assert row["fetch_time"] == later


# -- upstream_pauses -----------------------------------------------------------------------


async def pause_until(engine: AsyncEngine, upstream: str = NALOG) -> datetime | None:
    found = await rows(
        engine,
        select(upstream_pauses.c.pause_until).where(upstream_pauses.c.upstream == upstream),
    )
    return found[0]["pause_until"] if found else None


async def test_a_pause_is_never_shortened(fresh_engine: AsyncEngine, clock: MutableClock) -> None:
    async def pause(until: datetime) -> None:
        async with uow(fresh_engine, clock) as work:
            await work.upstream_pauses.pause(NALOG, until)
            await work.commit()

    assert await pause_until(fresh_engine) is None
    await pause(T0 + timedelta(seconds=60))
    assert await pause_until(fresh_engine) == T0 + timedelta(seconds=60)
    await pause(T0 + timedelta(seconds=30))
    assert await pause_until(fresh_engine) == T0 + timedelta(seconds=60)
    await pause(T0 + timedelta(seconds=60))
    assert await pause_until(fresh_engine) == T0 + timedelta(seconds=60)
    await pause(T0 + timedelta(seconds=90, microseconds=1))
    assert await pause_until(fresh_engine) == T0 + timedelta(seconds=90, microseconds=1)
    assert len(await rows(fresh_engine, select(upstream_pauses))) == 1


# -- SqlInnJobStore.claim ------------------------------------------------------------------


async def test_due_jobs_are_claimed_once_with_their_person_opened(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    people = {key_of(p): p for p in (person(20), person(21), person(22))}
    for data in people.values():
        await start_job(fresh_engine, clock, data)
    store = job_store(fresh_engine, clock)

    claimed = await store.claim(10)

    assert {c.person_key: c.person for c in claimed} == people
    assert all(c.attempts == 1 for c in claimed)
    assert await store.claim(10) == []
    for row in await job_rows(fresh_engine):
        assert row["lease_expire_time"] == T0 + LEASE and row["attempts"] == 1


async def test_a_job_is_reclaimed_only_after_its_lease_has_expired(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    data = person(23)
    key = await start_job(fresh_engine, clock, data)
    store = job_store(fresh_engine, clock)
    await store.claim(10)

    clock.advance(LEASE)
    assert await store.claim(10) == []  # the lease holds up to and including its last instant
    clock.advance(EPSILON)
    [again] = await store.claim(10)

    assert (again.person_key, again.attempts, again.person) == (key, 2, data)
    row = await job_row(fresh_engine, key)
    assert row is not None and row["lease_expire_time"] == T0 + LEASE + EPSILON + LEASE
    assert await store.claim(10) == []


async def test_claim_takes_at_most_limit_jobs_earliest_first(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    keys = []
    for n in range(5):
        keys.append(await start_job(fresh_engine, clock, person(30 + n)))
        clock.advance(EPSILON)
    store = job_store(fresh_engine, clock)

    first = await store.claim(2)
    second = await store.claim(2)
    third = await store.claim(2)

    assert {c.person_key for c in first} == set(keys[:2])
    assert {c.person_key for c in second} == set(keys[2:4])
    assert [c.person_key for c in third] == keys[4:]
    assert await store.claim(2) == []


async def test_claim_respects_the_next_attempt_time(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = await start_job(fresh_engine, clock, person(40))
    later = T0 + timedelta(seconds=10)
    async with uow(fresh_engine, clock) as work:
        await work.inn_jobs.reschedule(key, later, "busy", attempted=True)
        await work.commit()
    store = job_store(fresh_engine, clock)

    assert await store.claim(10) == []
    clock.advance(timedelta(seconds=10) - EPSILON)
    assert await store.claim(10) == []
    clock.advance(EPSILON)
    [claimed] = await store.claim(10)
    assert claimed.person_key == key and claimed.attempts == 1


async def test_nothing_is_claimed_while_the_upstream_is_paused(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = await start_job(fresh_engine, clock, person(41))
    async with uow(fresh_engine, clock) as work:
        await work.upstream_pauses.pause(NALOG, T0 + timedelta(seconds=60))
        await work.upstream_pauses.pause("some-other-upstream", T0 + timedelta(days=1))
        await work.commit()
    store = job_store(fresh_engine, clock)

    assert await store.claim(10) == []
    clock.advance(timedelta(seconds=60) - EPSILON)
    assert await store.claim(10) == []
    row = await job_row(fresh_engine, key)
    assert row is not None and row["attempts"] == 0 and row["lease_expire_time"] is None

    clock.advance(EPSILON)  # the pause ends at pause_until
    [claimed] = await store.claim(10)
    assert claimed.person_key == key and claimed.attempts == 1


async def test_a_job_sealed_under_another_key_comes_back_without_person(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    stranger = await start_job(fresh_engine, clock, person(42), keyring=OTHER_KEYRING)
    ours = await start_job(fresh_engine, clock, person(43))

    claimed = {c.person_key: c for c in await job_store(fresh_engine, clock).claim(10)}

    assert set(claimed) == {stranger, ours}
    assert claimed[stranger].person is None and claimed[stranger].attempts == 1
    assert claimed[ours].person == person(43)


# -- SqlInnLookupReader --------------------------------------------------------------------


async def test_a_pending_lookup_reads_its_progress_from_the_job(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    key = await start_job(fresh_engine, clock, person(50), "pending-1")
    reader = SqlInnLookupReader(fresh_engine, clock)

    view = await reader.get("pending-1")
    assert view is not None
    assert view.status is LookupStatus.PENDING and view.pending
    assert (view.attempts, view.next_attempt_time, view.inn, view.cached) == (0, T0, None, False)
    assert view.details == "waiting for service.nalog.ru"
    assert view.elapsed_seconds == 0.0
    assert view.create_time == T0 and view.finish_time is None

    await job_store(fresh_engine, clock).claim(10)
    next_time = T0 + timedelta(seconds=30, microseconds=11)
    async with uow(fresh_engine, clock) as work:
        await work.inn_jobs.reschedule(
            key, next_time, "service.nalog.ru is busy (http 502)", attempted=True
        )
        await work.commit()
    clock.advance(timedelta(seconds=7, microseconds=500000))

    view = await reader.get("pending-1")
    assert view is not None
    assert view.attempts == 1
    assert view.next_attempt_time == next_time and view.next_attempt_time.tzinfo is UTC
    assert view.details == "service.nalog.ru is busy (http 502)"
    assert view.elapsed_seconds == pytest.approx(7.5)


async def test_a_finished_lookup_reports_its_own_fields(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    handlers = InnHandlers(policy=LookupPolicy(), clock=clock)
    key = await start_job(fresh_engine, clock, person(51), "finished-1")
    await job_store(fresh_engine, clock).claim(10)
    clock.advance(timedelta(seconds=3, microseconds=250000))
    async with uow(fresh_engine, clock) as work:
        await handlers.record_answer(
            commands.RecordUpstreamAnswer(key, UpstreamAnswer(UpstreamVerdict.FOUND, VALID_INN), 1),
            work,
        )
        await work.commit()
    # a new job of the same person (another request) must not leak into the finished lookup
    clock.advance(timedelta(days=40))
    await start_job(fresh_engine, clock, person(51), "finished-2")
    async with uow(fresh_engine, clock) as work:
        await work.inn_jobs.reschedule(
            key, clock() + timedelta(hours=1), "job details", attempted=True
        )
        await work.commit()

    view = await SqlInnLookupReader(fresh_engine, clock).get("finished-1")

    assert view is not None
    assert view.status is LookupStatus.FOUND and not view.pending
    assert (view.inn, view.cached, view.details, view.attempts) == (VALID_INN, False, "", 1)
    assert view.next_attempt_time is None
    assert view.finish_time == T0 + timedelta(seconds=3, microseconds=250000)
    assert view.elapsed_seconds == pytest.approx(3.25)
    assert await SqlInnLookupReader(fresh_engine, clock).get("no-such-request") is None


async def test_a_pending_lookup_without_a_job_reads_its_own_details(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    await add_lookups(fresh_engine, clock, InnLookup.start("jobless", key_of(person(52)), T0))
    clock.advance(timedelta(seconds=2))

    view = await SqlInnLookupReader(fresh_engine, clock).get("jobless")

    assert view is not None and view.pending
    assert (view.attempts, view.next_attempt_time) == (0, None)
    assert view.details == "waiting for service.nalog.ru"
    assert view.elapsed_seconds == pytest.approx(2.0)


# -- PostgreSQL: several workers and processes at once -------------------------------------


# FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite serializes the claims.
@POSTGRES_ONLY
@pytest.mark.parametrize("limit", [10, 20])
async def test_concurrent_claims_from_two_engines_are_disjoint_and_cover_all(
    fresh_database_url: str, fresh_engine: AsyncEngine, clock: MutableClock, limit: int
) -> None:
    people = {key_of(p): p for p in (person(100 + n) for n in range(20))}
    for data in people.values():
        await start_job(fresh_engine, clock, data)
    other = create_engine(fresh_database_url)
    try:
        first, second = await asyncio.gather(
            job_store(fresh_engine, clock).claim(limit),
            SqlInnJobStore(other, KEYRING.sealer, clock, LEASE).claim(limit),
        )
    finally:
        await other.dispose()

    first_keys, second_keys = {c.person_key for c in first}, {c.person_key for c in second}
    assert len(first_keys) == len(first) and len(second_keys) == len(second)
    assert first_keys.isdisjoint(second_keys)
    assert first_keys | second_keys == set(people)
    assert all(c.attempts == 1 and c.person == people[c.person_key] for c in [*first, *second])
    assert all(r["attempts"] == 1 for r in await job_rows(fresh_engine))


def pausing(target: Any, name: str, reached: asyncio.Event, go: asyncio.Event) -> None:
    """Makes ``target.name`` stop after it ran, until ``go`` is set."""
    original = getattr(target, name)

    async def hooked(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        reached.set()
        await go.wait()
        return result

    setattr(target, name, hooked)


#: How the joining lookup ends: finished by the recorded answer, answered from the stored result,
#: or (it found the job gone) pending on a new job of its own.
FINISHED, CACHED, NEW_JOB = "finished", "cached", "new job"
#: Where one side stops, whether the other side must then wait for it (the job row lock), and
#: how the joining lookup ends.
#: A lookup that finds the job gone looks at the stored answers again once it holds the (new)
#: job row, so it answers from them instead of asking the upstream a second time.
START_PAUSE_POINTS = [
    (("inn_lookups", "get"), False, CACHED),  # read the request id
    (("inn_results", "get"), False, CACHED),  # found no stored answer (yet)
    (("inn_jobs", "join_or_start"), True, FINISHED),  # joined (and locked) the job
    (("inn_lookups", "add"), True, FINISHED),  # added the lookup, not committed yet
]
RECORD_PAUSE_POINTS = [
    (("inn_jobs", "remove"), True, CACHED),  # deleted (and locked) the job
    (("inn_lookups", "finish_pending"), True, CACHED),  # finished the lookups it saw
    (("inn_results", "put"), True, CACHED),  # stored the answer, not committed yet
]


async def race(
    engine: AsyncEngine,
    clock: MutableClock,
    *,
    data: PersonData,
    request_id: str,
    pause_start_at: tuple[str, str] | None,
    pause_record_at: tuple[str, str] | None,
    other_waits: bool | None = None,
) -> None:
    """One FindInn joining the person's job against the worker recording its final answer, on
    two connections; one side stops at the given point while the other runs as far as it can."""
    handlers = InnHandlers(policy=LookupPolicy(), clock=clock)
    key = key_of(data)
    reached, go = asyncio.Event(), asyncio.Event()

    async def start() -> None:
        async with uow(engine, clock) as work:
            if pause_start_at is not None:
                pausing(getattr(work, pause_start_at[0]), pause_start_at[1], reached, go)
            await handlers.start_lookup(commands.StartInnLookup(request_id, data, key), work)
            await work.commit()

    async def record() -> None:
        async with uow(engine, clock) as work:
            if pause_record_at is not None:
                pausing(getattr(work, pause_record_at[0]), pause_record_at[1], reached, go)
            answer = UpstreamAnswer(UpstreamVerdict.FOUND, VALID_INN)
            await handlers.record_answer(commands.RecordUpstreamAnswer(key, answer, 1), work)
            await work.commit()

    first, second = (start, record) if pause_start_at is not None else (record, start)
    paused = asyncio.create_task(first())
    await asyncio.wait_for(reached.wait(), 5)
    other = asyncio.create_task(second())
    try:
        # the other side runs to its end, or blocks on the row the paused side has locked
        await asyncio.wait({other}, timeout=0.3 if other_waits else 5)
        if other_waits is not None:
            assert other.done() is not other_waits
    finally:
        go.set()
        await asyncio.wait_for(asyncio.gather(paused, other), 10)


async def check_outcome(engine: AsyncEngine, key: bytes, request_id: str, expected: str) -> None:
    assert await orphaned_pending(engine) == []
    first = await get_lookup(engine, "first")
    assert first is not None and first.status is LookupStatus.FOUND
    joined = await get_lookup(engine, request_id)
    assert joined is not None
    row = await job_row(engine, key)
    if joined.status is LookupStatus.PENDING:
        # it found the job gone and started a new one, which will be worked
        assert row is not None and row["attempts"] == 0
        outcome = NEW_JOB
    else:
        # it joined in time and received the answer, or found the answer stored
        assert row is None
        assert joined.status is LookupStatus.FOUND and joined.inn == VALID_INN
        outcome = CACHED if joined.cached else FINISHED
    assert outcome == expected


@POSTGRES_ONLY
@pytest.mark.parametrize(
    ("pause_start_at", "pause_record_at", "other_waits", "expected"),
    [(point, None, waits, end) for point, waits, end in START_PAUSE_POINTS]
    + [(None, point, waits, end) for point, waits, end in RECORD_PAUSE_POINTS],
    ids=[f"start-after-{a}.{b}" for (a, b), _, _ in START_PAUSE_POINTS]
    + [f"record-after-{a}.{b}" for (a, b), _, _ in RECORD_PAUSE_POINTS],
)
async def test_a_joining_lookup_is_finished_by_the_answer_or_finds_the_job_gone(
    fresh_engine: AsyncEngine,
    clock: MutableClock,
    pause_start_at: tuple[str, str] | None,
    pause_record_at: tuple[str, str] | None,
    other_waits: bool,
    expected: str,
) -> None:
    data = person(200)
    key = await start_job(fresh_engine, clock, data, "first")
    await job_store(fresh_engine, clock).claim(10)

    await race(
        fresh_engine,
        clock,
        data=data,
        request_id="joining",
        pause_start_at=pause_start_at,
        pause_record_at=pause_record_at,
        other_waits=other_waits,
    )

    await check_outcome(fresh_engine, key, "joining", expected)


@POSTGRES_ONLY
async def test_many_racing_joins_and_answers_leave_no_pending_lookup_without_a_job(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    handlers = InnHandlers(policy=LookupPolicy(), clock=clock)
    rng = random.Random(1234)
    people = [person(300 + n) for n in range(25)]
    for n, data in enumerate(people):
        await start_job(fresh_engine, clock, data, f"first-{n}")

    async def start(n: int, data: PersonData) -> None:
        await asyncio.sleep(rng.random() * 0.02)
        async with uow(fresh_engine, clock) as work:
            await handlers.start_lookup(
                commands.StartInnLookup(f"joining-{n}", data, key_of(data)), work
            )
            await asyncio.sleep(rng.random() * 0.01)
            await work.commit()

    async def record(data: PersonData) -> None:
        await asyncio.sleep(rng.random() * 0.02)
        async with uow(fresh_engine, clock) as work:
            answer = UpstreamAnswer(UpstreamVerdict.NOT_FOUND)
            await handlers.record_answer(
                commands.RecordUpstreamAnswer(key_of(data), answer, 1), work
            )
            await asyncio.sleep(rng.random() * 0.01)
            await work.commit()

    await asyncio.wait_for(
        asyncio.gather(
            *(start(n, data) for n, data in enumerate(people)),
            *(record(data) for data in people),
        ),
        60,
    )

    assert await orphaned_pending(fresh_engine) == []
    for n in range(len(people)):
        first = await get_lookup(fresh_engine, f"first-{n}")
        assert first is not None and first.status is LookupStatus.NOT_FOUND
        joined = await get_lookup(fresh_engine, f"joining-{n}")
        assert joined is not None
        if joined.status is LookupStatus.PENDING:
            assert await job_row(fresh_engine, key_of(people[n])) is not None
        else:
            assert joined.status is LookupStatus.NOT_FOUND
