"""A captcha demand from service.nalog.ru: the lookup goes on in the background, and no upstream
call at all is made, for anyone, until ONBOARDING_INN_CAPTCHA_PAUSE_SECONDS have passed."""

from __future__ import annotations

import asyncio
import itertools

from sqlalchemy import text

from tests.conftest import StartServer, eventually
from tests.e2e.test_inn_helpers import (
    FOUND,
    PENDING,
    find,
    finds_for,
    get,
    number,
    person,
    request_id,
    wait_done,
)
from tests.fakes.nalog import captcha, found, valid_inn


async def test_a_captcha_answers_pending_before_the_deadline_then_found(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_captcha_pause_seconds=1.0)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, captcha(2, then=found(inn)))
    rid = request_id()

    lookup = await find(server, person(doc), rid, timeout=1.0)  # no DEADLINE_EXCEEDED

    assert lookup.status == PENDING
    assert lookup.inn == ""
    assert lookup.attempts == 1
    assert "captcha" in lookup.details
    assert lookup.HasField("next_attempt_time")
    assert lookup.next_attempt_time.ToDatetime() > lookup.create_time.ToDatetime()
    assert not lookup.HasField("finish_time")
    assert lookup.elapsed_time >= 0

    done = await wait_done(server, rid, timeout=20)

    assert (done.status, done.inn, done.attempts, done.cached) == (FOUND, inn, 3, False)
    assert done.HasField("finish_time")
    assert not done.HasField("next_attempt_time")
    assert server.nalog.finds[doc] == 3
    assert server.nalog.protocol_errors == []


async def test_after_a_captcha_the_next_attempt_waits_out_the_pause(
    start_server: StartServer,
) -> None:
    pause = 0.6
    server = await start_server(inn_captcha_pause_seconds=pause)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, captcha(1, then=found(inn)))

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn, lookup.attempts) == (FOUND, inn, 2)
    first, second = finds_for(server, doc)
    assert second - first >= pause * 0.9


async def test_a_captcha_pauses_every_upstream_call(start_server: StartServer) -> None:
    pause = 1.0
    server = await start_server(inn_captcha_pause_seconds=pause, inn_wait_seconds=0.3)
    doc_a, doc_b = number(), number()
    inn_a, inn_b = valid_inn(), valid_inn()
    server.nalog.script(doc_a, captcha(1, then=found(inn_a)))
    server.nalog.script(doc_b, found(inn_b))
    rid_a, rid_b = request_id(), request_id()

    a = await find(server, person(doc_a), rid_a)
    assert a.status == PENDING

    async def captcha_recorded() -> bool:
        return "captcha" in (await get(server, rid_a)).details

    await eventually(captcha_recorded)
    b = await find(server, person(doc_b), rid_b, timeout=10)
    assert b.status == PENDING  # B is held back too, though its data is fine

    assert server.nalog.finds[doc_b] == 0
    await asyncio.sleep(0.2)
    if (await get(server, rid_a)).status == PENDING:  # still inside A's pause
        assert server.nalog.finds[doc_b] == 0

    done_a = await wait_done(server, rid_a)
    done_b = await wait_done(server, rid_b)
    assert (done_a.status, done_a.inn, done_a.attempts) == (FOUND, inn_a, 2)
    assert (done_b.status, done_b.inn, done_b.attempts) == (FOUND, inn_b, 1)
    (captcha_time, _) = finds_for(server, doc_a)
    (b_time,) = finds_for(server, doc_b)
    assert b_time - captcha_time >= pause * 0.9
    assert server.nalog.protocol_errors == []


async def test_lookups_already_under_way_make_no_call_after_a_captcha(
    start_server: StartServer,
) -> None:
    # The worker runs four lookups at once, and the rate limit spaces their searches out: the
    # first meets a captcha while the other three still wait for their turn. Not one of them
    # may go upstream during the pause.
    server = await start_server(inn_captcha_pause_seconds=5, nalog_max_rps=4, inn_wait_seconds=0.2)
    docs = [number() for _ in range(4)]
    for doc in docs:
        server.nalog.script(doc, captcha(1, then=found(valid_inn())))
    rids = [request_id() for _ in docs]
    try:
        lookups = await asyncio.gather(
            *(find(server, person(doc), rid) for doc, rid in zip(docs, rids, strict=True))
        )

        async def all_answered() -> bool:  # each lookup's first try has ended and is recorded
            details = [(await get(server, rid)).details for rid in rids]
            return all(d != "waiting for service.nalog.ru" for d in details)

        await eventually(all_answered)

        assert {lookup.status for lookup in lookups} == {PENDING}
        searches = sorted(t for doc in docs for t in finds_for(server, doc))
        assert len(searches) == 1, searches  # the first, which met the captcha
        assert server.nalog.protocol_errors == []
        # And the three spent no attempt: they made no call.
        attempts = sorted([(await get(server, rid)).attempts for rid in rids])
        assert attempts == [0, 0, 0, 1]
    finally:
        # The pause is kept in the database, which the next tests share: end it here.
        async with server.container.engine.begin() as conn:
            await conn.execute(text("DELETE FROM upstream_pauses"))


async def test_a_person_waiting_out_a_pause_keeps_pending_while_polled(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_captcha_pause_seconds=1.0, inn_wait_seconds=0)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, captcha(1, then=found(inn)))
    rid = request_id()
    await find(server, person(doc), rid)

    async def captcha_seen() -> bool:
        return (await get(server, rid)).attempts == 1

    await eventually(captcha_seen)
    pending = await get(server, rid)

    assert pending.status == PENDING
    assert pending.HasField("next_attempt_time")
    assert (await wait_done(server, rid)).status == FOUND


async def test_upstream_calls_keep_to_the_rate_limit(start_server: StartServer) -> None:
    rate = 5.0
    server = await start_server(nalog_max_rps=rate, inn_wait_seconds=30)
    docs = [number() for _ in range(3)]
    for doc in docs:
        server.nalog.script(doc, found(valid_inn()))

    answers = await asyncio.gather(*(find(server, person(doc)) for doc in docs))

    assert {a.status for a in answers} == {FOUND}
    times = sorted(r.received_at for r in server.nalog.requests)
    assert len(times) >= 3 * len(docs)  # consent, search and result for each person
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= (1 / rate) * 0.9, gaps
