"""One upstream lookup per person, however many callers ask at once, on both databases."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import grpc
import pytest

from tests.conftest import RunningServer, StartServer, eventually
from tests.e2e.test_inn_helpers import FOUND, find, get, number, person, request_id, wait_done
from tests.fakes.nalog import found, slow, valid_inn

PEOPLE = 20
REQUEST_IDS_PER_PERSON = 10


async def test_200_concurrent_finds_for_20_people_make_20_upstream_finds(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_wait_seconds=30)
    people = {number(): valid_inn() for _ in range(PEOPLE)}
    for doc, inn in people.items():
        server.nalog.script(doc, found(inn))
    calls = [(doc, request_id()) for doc in people for _ in range(REQUEST_IDS_PER_PERSON)]

    answers = await asyncio.gather(
        *(find(server, person(doc), rid, timeout=60) for doc, rid in calls),
        return_exceptions=True,
    )

    errors = [a for a in answers if isinstance(a, BaseException)]
    assert errors == []
    for (doc, rid), lookup in zip(calls, answers, strict=True):
        assert lookup.request_id == rid
        assert (lookup.status, lookup.inn) == (FOUND, people[doc]), lookup
    assert {doc: server.nalog.finds[doc] for doc in people} == dict.fromkeys(people, 1)
    upstream = sum(1 for a in answers if not a.cached)
    assert upstream >= PEOPLE  # the first of each person at least waited for the upstream
    assert server.nalog.protocol_errors == []


async def test_concurrent_finds_with_the_same_request_id_are_one_lookup(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_wait_seconds=30)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(0.3, then=found(inn)))
    rid = request_id()

    answers = await asyncio.gather(*(find(server, person(doc), rid) for _ in range(30)))

    assert {(a.request_id, a.status, a.inn, a.cached, a.attempts) for a in answers} == {
        (rid, FOUND, inn, False, 1)
    }
    assert len({a.create_time.ToNanoseconds() for a in answers}) == 1
    assert server.nalog.finds[doc] == 1


async def test_concurrent_conflicting_uses_of_a_request_id_keep_one_person(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_wait_seconds=30)
    docs = [number() for _ in range(5)]
    for doc in docs:
        server.nalog.script(doc, found(valid_inn()))

    await _one_person_keeps_the_request_id(server, docs, per_person=4)

    assert sum(server.nalog.finds[doc] for doc in docs) == 1


async def test_concurrent_cached_finds_with_one_request_id_are_one_lookup(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_wait_seconds=30)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    await find(server, person(doc), request_id())  # the answer is stored from here on
    rid = request_id()

    answers = await asyncio.gather(*(find(server, person(doc), rid) for _ in range(30)))

    assert {(a.request_id, a.status, a.inn, a.cached) for a in answers} == {(rid, FOUND, inn, True)}
    assert len({a.create_time.ToNanoseconds() for a in answers}) == 1
    assert server.nalog.finds[doc] == 1


async def test_concurrent_cached_finds_reusing_a_request_id_for_others_keep_one_person(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_wait_seconds=30)
    docs = [number() for _ in range(4)]
    for doc in docs:
        server.nalog.script(doc, found(valid_inn()))
        await find(server, person(doc), request_id())

    await _one_person_keeps_the_request_id(server, docs, per_person=5)


async def _one_person_keeps_the_request_id(
    server: RunningServer, docs: list[str], *, per_person: int
) -> None:
    """Everyone asks with one request_id at once: one person's calls all answer, and every
    other call is ALREADY_EXISTS."""
    rid = request_id()

    answers = await asyncio.gather(
        *(find(server, person(doc), rid) for doc in docs for _ in range(per_person)),
        return_exceptions=True,
    )

    outcomes = Counter(
        "ok" if not isinstance(a, BaseException) else a.code()
        for a in answers  # type: ignore[union-attr]
    )
    assert outcomes["ok"] == per_person, outcomes
    assert outcomes[grpc.StatusCode.ALREADY_EXISTS] == per_person * (len(docs) - 1), outcomes
    winners = {a.inn for a in answers if not isinstance(a, BaseException)}
    assert len(winners) == 1
    assert (await get(server, rid)).inn in winners


# -- a lookup arriving while an answer is being recorded -------------------------------------

POSTGRES_ONLY = [pytest.param("postgres", marks=pytest.mark.postgres)]


async def _waiting_on_locks(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'onboarding'"
        " AND wait_event_type = 'Lock'"
    )


@pytest.mark.parametrize("db_kind", POSTGRES_ONLY)
async def test_a_lookup_racing_the_recorded_answer_makes_no_second_upstream_call(
    start_server: StartServer,
) -> None:
    """A lookup that reads "no stored answer" just before the worker commits one must not
    start a second job for the person (READ COMMITTED on PostgreSQL). Row locks held by the
    test put the two transactions in exactly that order. At commit e0a17d2 this failed: the
    lookup started a new job and the upstream was asked twice."""
    server = await start_server()
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(1.0, then=found(inn)))
    first = request_id()
    await find(server, person(doc), first, timeout=0.5)
    await eventually(lambda: _true(server.nalog.finds[doc] == 1))  # the job is claimed

    dsn = server.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    blocker = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    try:
        # Hold the person's job row so that the worker's recording of the answer waits...
        lock = blocker.transaction()
        await lock.start()
        person_key = await blocker.fetchval(
            "SELECT person_key FROM inn_lookups WHERE request_id = $1", first
        )
        await blocker.execute("SELECT 1 FROM inn_jobs WHERE person_key = $1 FOR UPDATE", person_key)
        await eventually(lambda: _more_than(watcher, 0), timeout=10)
        # ...and a second lookup of the same person arrives meanwhile: it sees no stored
        # answer yet and queues behind the worker on the same row.
        second_rid = request_id()
        second = asyncio.create_task(find(server, person(doc), second_rid, timeout=30))
        await eventually(lambda: _more_than(watcher, 1), timeout=10)
        await lock.rollback()  # the worker records the answer first, then the lookup goes on
        await second
    finally:
        await blocker.close()
        await watcher.close()

    lookup = await wait_done(server, second_rid)
    assert (lookup.status, lookup.inn) == (FOUND, inn)
    assert server.nalog.finds[doc] == 1


async def _true(value: bool) -> bool:
    return value


async def _more_than(conn: asyncpg.Connection, count: int) -> bool:
    return await _waiting_on_locks(conn) > count


async def test_people_asked_for_while_their_lookup_runs_join_it(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_wait_seconds=30)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(1.0, then=found(inn)))  # everyone arrives before the answer

    answers = await asyncio.gather(*(find(server, person(doc)) for _ in range(10)))

    assert {(a.status, a.inn, a.cached, a.attempts) for a in answers} == {(FOUND, inn, False, 1)}
    assert len({a.request_id for a in answers}) == 10
    assert server.nalog.finds[doc] == 1
