"""How long FindInn waits: ONBOARDING_INN_WAIT_SECONDS, but never past the caller's deadline;
then PENDING, and the lookup goes on in the background. Only lower bounds of durations are
asserted, except "answered before the deadline", which is the point of the rule."""

from __future__ import annotations

import asyncio

from tests.conftest import RunningServer, StartServer
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
from tests.fakes.nalog import found, slow, valid_inn


async def test_a_deadline_shorter_than_the_wait_answers_pending_in_time(
    server: RunningServer,
) -> None:
    assert server.settings.inn_wait_seconds > 1.0
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(1.5, then=found(inn)))  # within nalog_timeout_seconds (2)
    rid = request_id()

    lookup = await find(server, person(doc), rid, timeout=1.0)  # raises DEADLINE_EXCEEDED if late

    assert lookup.status == PENDING
    assert lookup.request_id == rid
    assert lookup.details != ""
    assert not lookup.HasField("finish_time")
    done = await wait_done(server, rid)
    assert (done.status, done.inn, done.attempts) == (FOUND, inn, 1)


async def test_several_short_deadlines_all_answer_in_time(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, slow(1.6, then=found(valid_inn())))
    rid = request_id()

    answers = await asyncio.gather(
        *(find(server, person(doc), rid, timeout=t) for t in (0.6, 0.8, 1.0, 1.5))
    )

    assert {a.status for a in answers} == {PENDING}
    assert (await wait_done(server, rid)).status == FOUND  # leaves no job for later tests
    assert server.nalog.finds[doc] == 1


async def test_the_configured_wait_answers_pending_without_a_deadline(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_wait_seconds=0.3)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(2, then=found(inn)))
    rid = request_id()
    loop = asyncio.get_running_loop()
    started = loop.time()

    lookup = await find(server, person(doc), rid, timeout=None)

    assert lookup.status == PENDING
    assert loop.time() - started >= 0.3  # it did wait
    assert (await wait_done(server, rid)).inn == inn


async def test_a_wait_of_zero_answers_pending_at_once(start_server: StartServer) -> None:
    server = await start_server(inn_wait_seconds=0)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(0.5, then=found(inn)))
    rid = request_id()

    lookup = await find(server, person(doc), rid)

    assert lookup.status == PENDING
    assert lookup.attempts in (0, 1)
    done = await wait_done(server, rid)
    assert (done.status, done.inn, done.attempts) == (FOUND, inn, 1)


async def test_the_answer_arrives_as_soon_as_it_is_known(server: RunningServer) -> None:
    """Within the wait, FindInn answers FOUND once the upstream has answered."""
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(0.5, then=found(inn)))

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn) == (FOUND, inn)
    assert lookup.elapsed_time >= 0.4


async def test_a_second_find_with_the_same_request_id_joins_the_pending_lookup(
    server: RunningServer,
) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(1.0, then=found(inn)))
    rid = request_id()

    first = await find(server, person(doc), rid, timeout=0.6)
    assert first.status == PENDING
    second = await find(server, person(doc), rid)

    assert (second.request_id, second.status, second.inn) == (rid, FOUND, inn)
    assert second.create_time == first.create_time
    assert server.nalog.finds[doc] == 1


async def test_a_pending_lookup_can_be_read_without_personal_data(
    server: RunningServer,
) -> None:
    doc = number()
    server.nalog.script(doc, slow(1.0, then=found(valid_inn())))
    rid = request_id()
    await find(server, person(doc), rid, timeout=0.5)

    pending = await get(server, rid)

    assert pending.request_id == rid
    assert pending.status == PENDING
    assert pending.inn == ""
    assert not pending.HasField("finish_time")
    assert pending.HasField("create_time")
    assert pending.elapsed_time >= 0
    assert (await wait_done(server, rid)).status == FOUND  # leaves no job for later tests


async def test_a_find_waiting_when_the_server_stops_answers_pending_within_the_grace(
    start_server: StartServer,
) -> None:
    # The wait (20 s) is longer than the shutdown's grace: cut off by the stop, the call would
    # end UNAVAILABLE instead of with the lookup the caller needs to poll.
    server = await start_server(inn_wait_seconds=20, nalog_timeout_seconds=10)
    doc = number()
    server.nalog.script(doc, slow(8, then=found(valid_inn())))
    rid = request_id()
    waiting = asyncio.create_task(find(server, person(doc), rid))
    await asyncio.sleep(0.5)  # the call waits for the upstream now
    assert not waiting.done()

    await server.server.stop(grace=3)

    lookup = await waiting
    assert (lookup.status, lookup.request_id) == (PENDING, rid)
