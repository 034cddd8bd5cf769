"""Lookups live in the database: a server stopped while a lookup is PENDING leaves it to the
next server on the same database, which finishes it."""

from __future__ import annotations

from tests.conftest import StartServer, eventually
from tests.e2e.test_inn_helpers import (
    FOUND,
    PENDING,
    find,
    get,
    number,
    person,
    request_id,
    wait_done,
)
from tests.fakes.nalog import captcha, found, valid_inn


async def test_a_lookup_pending_across_a_restart_ends_found(start_server: StartServer) -> None:
    # A short lease (the settings want it longer than the SMS and database timeouts): should A
    # be stopped in the middle of a call, B takes the job over soon.
    a = await start_server(
        inn_captcha_pause_seconds=0.5,
        inn_wait_seconds=0,
        work_lease_seconds=3,
        sms_timeout_seconds=1,
        database_timeout_seconds=1.5,
    )
    doc, inn = number(), valid_inn()
    a.nalog.script(doc, captcha(1000))
    rid = request_id()

    assert (await find(a, person(doc), rid)).status == PENDING

    async def captcha_seen() -> bool:
        return (await get(a, rid)).attempts >= 1

    await eventually(captcha_seen)
    await a.server.stop(grace=0.1)
    finds_by_a = a.nalog.finds[doc]
    a.nalog.script(doc, found(inn))

    b = await start_server(inn_captcha_pause_seconds=0.5)
    assert (await get(b, rid)).status in (PENDING, FOUND)
    done = await wait_done(b, rid, timeout=30)

    assert (done.status, done.inn, done.cached) == (FOUND, inn, False)
    # Each claim counts one attempt; a call cut short by the stop may not have reached the fake.
    assert a.nalog.finds[doc] <= done.attempts <= a.nalog.finds[doc] + 1
    assert a.nalog.finds[doc] > finds_by_a
    assert a.nalog.protocol_errors == []
    # And the answer is now cached for the person.
    again = await find(b, person(doc))
    assert (again.status, again.inn, again.cached) == (FOUND, inn, True)


async def test_a_find_through_another_server_joins_the_pending_lookup(
    start_server: StartServer,
) -> None:
    a = await start_server(inn_captcha_pause_seconds=0.3, inn_wait_seconds=0)
    b = await start_server(inn_captcha_pause_seconds=0.3)
    doc, inn = number(), valid_inn()
    a.nalog.script(doc, captcha(2, then=found(inn)))
    rid = request_id()

    assert (await find(a, person(doc), rid)).status == PENDING
    through_b = await find(b, person(doc), rid)

    assert (through_b.request_id, through_b.status, through_b.inn) == (rid, FOUND, inn)
    assert a.nalog.finds[doc] == 3
