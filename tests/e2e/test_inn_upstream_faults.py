"""When service.nalog.ru refuses or fails: ERRORS end the lookup at once; faults are retried in
the background up to ONBOARDING_INN_MAX_ATTEMPTS; an INN whose check digits fail is never
returned. FAILED answers are not cached."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest

from tests.conftest import RunningServer, StartServer
from tests.e2e.test_inn_helpers import (
    FAILED,
    FOUND,
    PENDING,
    find,
    get,
    number,
    person,
    request_id,
    wait_done,
)
from tests.fakes.nalog import (
    Behaviour,
    bad_check_digits,
    found,
    garbage,
    http_error,
    rejected,
    slow,
    upstream_error,
    valid_inn,
)

MAX_ATTEMPTS = 3

# -- ERRORS: the upstream rejects the data ---------------------------------------------------


async def test_rejected_data_fails_at_once_without_a_retry(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, rejected(["docno", "bdate"]))

    lookup = await find(server, person(doc))

    assert lookup.status == FAILED
    assert lookup.inn == ""
    assert lookup.cached is False
    assert lookup.attempts == 1
    assert lookup.HasField("finish_time")
    assert not lookup.HasField("next_attempt_time")
    assert "docno" in lookup.details and "bdate" in lookup.details
    assert server.nalog.finds[doc] == 1
    assert server.nalog.protocol_errors == []


async def test_rejection_details_name_fields_only_never_the_echoed_data(
    server: RunningServer,
) -> None:
    doc = number()
    server.nalog.script(doc, rejected(["docno", "fam", "bdate", "docdt"]))
    rid = request_id()

    lookup = await find(server, person(doc), rid)
    later = await get(server, rid)

    for details in (lookup.details, later.details):
        assert details
        for secret in (doc, "45 08", "Иванов", "17.05.1990", "01.06.2010", "Неверное"):
            assert secret not in details, details


async def test_a_rejection_naming_many_long_fields_still_ends_the_lookup(
    server: RunningServer,
) -> None:
    # Its details would outgrow the stored column: on PostgreSQL the answer could then never be
    # recorded, and the lookup stayed PENDING while the upstream was asked again and again.
    doc = number()
    server.nalog.script(doc, rejected([f"field_number_{n:02d}_of_the_form_x" for n in range(12)]))

    lookup = await find(server, person(doc))

    assert lookup.status == FAILED
    assert len(lookup.details) <= 300
    assert "field_number_00_of_the_form_x" in lookup.details
    assert server.nalog.finds[doc] == 1


async def test_a_failed_lookup_stays_failed_and_is_not_retried(server: RunningServer) -> None:
    doc = number()
    server.nalog.script(doc, rejected())
    rid = request_id()
    await find(server, person(doc), rid)

    await asyncio.sleep(0.5)  # background retries would have happened by now
    got = await get(server, rid)

    assert (got.status, got.attempts) == (FAILED, 1)
    assert server.nalog.finds[doc] == 1


async def test_failed_is_not_cached_a_new_request_id_asks_upstream_again(
    server: RunningServer,
) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, rejected())
    rid = request_id()
    assert (await find(server, person(doc), rid)).status == FAILED

    server.nalog.script(doc, found(inn))
    again = await find(server, person(doc))

    assert (again.status, again.inn, again.cached, again.attempts) == (FOUND, inn, False, 1)
    assert server.nalog.finds[doc] == 2
    assert (await get(server, rid)).status == FAILED  # the old lookup keeps its answer


async def test_asking_a_failed_request_id_again_answers_the_failure_without_a_call(
    server: RunningServer,
) -> None:
    doc = number()
    server.nalog.script(doc, rejected())
    rid = request_id()
    await find(server, person(doc), rid)

    again = await find(server, person(doc), rid)

    assert (again.status, again.attempts) == (FAILED, 1)
    assert server.nalog.finds[doc] == 1


# -- faults: retried in the background, then FAILED ------------------------------------------

FAULTS: dict[str, tuple[Behaviour, str]] = {
    "http 503": (http_error(100, status=503), "http 503"),
    "http 500": (http_error(100, status=500), "http 500"),
    "upstream error": (upstream_error(100), "upstream error"),
    "garbage": (garbage(100), "bad response"),
}


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
async def test_a_fault_is_retried_then_fails_after_max_attempts(
    start_server: StartServer, fault: str
) -> None:
    server = await start_server(inn_max_attempts=MAX_ATTEMPTS, inn_wait_seconds=0)
    behaviour, detail = FAULTS[fault]
    doc = number()
    server.nalog.script(doc, behaviour)
    rid = request_id()

    first = await find(server, person(doc), rid)
    assert first.status == PENDING
    done = await wait_done(server, rid)

    assert done.status == FAILED
    assert done.inn == ""
    assert done.attempts == MAX_ATTEMPTS
    assert f"after {MAX_ATTEMPTS} attempts" in done.details
    assert detail in done.details
    assert done.HasField("finish_time")
    assert not done.HasField("next_attempt_time")
    assert server.nalog.finds[doc] == MAX_ATTEMPTS
    assert server.nalog.protocol_errors == []


async def test_a_pending_fault_shows_progress(start_server: StartServer) -> None:
    server = await start_server(inn_max_attempts=MAX_ATTEMPTS, inn_retry_delay_seconds=2)
    doc = number()
    server.nalog.script(doc, http_error(100, status=503))
    rid = request_id()

    lookup = await find(server, person(doc), rid, timeout=1.0)

    assert lookup.status == PENDING
    assert lookup.attempts == 1
    assert "http 503" in lookup.details
    assert lookup.HasField("next_attempt_time")
    assert lookup.next_attempt_time.ToDatetime() > lookup.create_time.ToDatetime()
    assert not lookup.HasField("finish_time")
    assert lookup.elapsed_time >= 0
    server.nalog.script(doc, found(valid_inn()))
    assert (await wait_done(server, rid)).status == FOUND  # leaves no job for later tests


async def test_an_upstream_slower_than_the_timeout_is_a_fault(start_server: StartServer) -> None:
    server = await start_server(
        inn_max_attempts=MAX_ATTEMPTS, nalog_timeout_seconds=0.3, inn_wait_seconds=0
    )
    server.nalog.set_default(slow(30))  # every search of an unscripted person hangs
    doc = number()
    rid = request_id()

    await find(server, person(doc), rid)
    done = await wait_done(server, rid)

    assert done.status == FAILED
    assert done.attempts == MAX_ATTEMPTS
    assert "timeout" in done.details
    assert server.nalog.finds[doc] == MAX_ATTEMPTS


async def test_a_fault_then_an_answer_ends_found(start_server: StartServer) -> None:
    server = await start_server(inn_max_attempts=MAX_ATTEMPTS)
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, http_error(1, then=upstream_error(1, then=found(inn))))

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn, lookup.attempts, lookup.cached) == (FOUND, inn, 3, False)
    assert server.nalog.finds[doc] == 3
    assert server.nalog.protocol_errors == []


async def test_a_slow_answer_within_the_timeout_is_fine(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, slow(0.3, then=found(inn)))

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn, lookup.attempts) == (FOUND, inn, 1)


async def test_http_429_counts_as_throttled(start_server: StartServer) -> None:
    server = await start_server(inn_max_attempts=MAX_ATTEMPTS, inn_wait_seconds=0)
    doc = number()
    server.nalog.script(doc, http_error(100, status=429))
    rid = request_id()

    await find(server, person(doc), rid)
    done = await wait_done(server, rid)

    assert done.status == FAILED
    assert done.attempts == MAX_ATTEMPTS
    assert "http 429" in done.details
    assert server.nalog.finds[doc] == MAX_ATTEMPTS
    times = sorted(_find_times(server, doc))
    pause = server.settings.inn_captcha_pause_seconds
    # Throttled: each retry waits out the captcha pause, not just the retry delay.
    assert all(b - a >= pause * 0.9 for a, b in itertools.pairwise(times)), times


def _find_times(server: RunningServer, doc: str) -> list[float]:
    return [
        r.received_at
        for r in server.nalog.requests
        if r.path == "/inn-new-proc.do" and r.form.get("docno", "").endswith(doc)
    ]


# -- check digits ----------------------------------------------------------------------------


async def test_an_inn_whose_check_digits_fail_is_never_returned(
    start_server: StartServer,
) -> None:
    server = await start_server(inn_max_attempts=MAX_ATTEMPTS, inn_wait_seconds=0)
    doc = number()
    server.nalog.script(doc, bad_check_digits(valid_inn()))
    rid = request_id()

    await find(server, person(doc), rid)
    done = await wait_done(server, rid)

    assert done.status == FAILED
    assert done.inn == ""
    assert done.attempts == MAX_ATTEMPTS
    assert "check digits" in done.details
    assert server.nalog.finds[doc] == MAX_ATTEMPTS
    # Nor is anything cached: the next lookup asks again.
    server.nalog.script(doc, found(valid_inn()))
    assert (await find(server, person(doc))).cached is False


async def test_bad_check_digits_then_a_valid_inn_ends_found(start_server: StartServer) -> None:
    server = await start_server(inn_max_attempts=MAX_ATTEMPTS)
    doc, inn = number(), valid_inn()
    once_bad = dataclasses.replace(bad_check_digits(inn), times=1, then=found(inn))
    server.nalog.script(doc, once_bad)

    lookup = await find(server, person(doc))

    assert (lookup.status, lookup.inn, lookup.attempts) == (FOUND, inn, 2)
    assert server.nalog.finds[doc] == 2
