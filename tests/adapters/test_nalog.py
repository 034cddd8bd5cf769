"""NalogClient against FakeNalog, and RateLimiter: real HTTP over loopback, no mocks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date

import aiohttp
import pytest

from onboarding.adapters.nalog import NalogClient
from onboarding.adapters.rate_limit import RateLimiter
from onboarding.domain.inn import PersonData, UpstreamAnswer, UpstreamVerdict, inn_is_valid
from tests.fakes.nalog import (
    VALID_INN,
    Behaviour,
    FakeNalog,
    bad_check_digits,
    broken_inn,
    captcha,
    empty_inn,
    found,
    garbage,
    http_error,
    make_valid_inn,
    not_found,
    not_ready,
    rejected,
    slow,
    upstream_error,
    valid_inn,
)

PERSON = PersonData(
    last_name="Иванова-Петрова",
    first_name="Анна",
    middle_name="Сергеевна",
    birth_date=date(1985, 3, 7),
    document_serial="4509",
    document_number="123456",
    document_date=date(2005, 4, 1),
)
NO_MIDDLE = PersonData(
    last_name="Ким",
    first_name="Виктор",
    middle_name="",
    birth_date=date(1990, 12, 31),
    document_serial="0102",
    document_number="654321",
    document_date=date(2010, 1, 15),
)
PERSONAL_STRINGS = (
    "Иванова",
    "Петрова",
    "Анна",
    "Сергеевна",
    "1985",
    "07.03",
    "4509",
    "45 09",
    "123456",
    "2005",
    "01.04",
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeNalog]:
    async with FakeNalog() as upstream:
        yield upstream


def nalog_client(
    fake: FakeNalog,
    *,
    poll_interval_seconds: float = 0.01,
    max_polls: int = 3,
    captcha_pause_seconds: float = 0.0,
) -> NalogClient:
    return NalogClient(
        fake.base_url,
        limiter=RateLimiter(1000),
        timeout_seconds=2.0,
        poll_interval_seconds=poll_interval_seconds,
        max_polls=max_polls,
        captcha_pause_seconds=captcha_pause_seconds,
    )


@pytest.fixture
async def client(fake: FakeNalog) -> AsyncIterator[NalogClient]:
    nalog = nalog_client(fake)
    yield nalog
    await nalog.close()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that is bound but not listening: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def assert_no_personal_data(answer: UpstreamAnswer) -> None:
    for secret in PERSONAL_STRINGS:
        assert secret not in answer.detail


async def lookup(fake: FakeNalog, client: NalogClient, behaviour: Behaviour) -> UpstreamAnswer:
    fake.script(PERSON.document_number, behaviour)
    answer = await client.find_inn(PERSON)
    assert fake.protocol_errors == []
    assert_no_personal_data(answer)
    return answer


# -- the protocol ----------------------------------------------------------------------------


async def test_found_follows_the_protocol(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, found(VALID_INN))

    assert answer.verdict is UpstreamVerdict.FOUND
    assert answer.inn == VALID_INN
    assert [r.path for r in fake.requests] == [
        "/static/personal-data-proc.json",
        "/inn-new-proc.do",
        "/inn-new-proc.json",
    ]
    consent, find, get = fake.requests
    assert consent.form == {"from": "/inn.do", "svc": "inn", "personalData": "1"}
    assert consent.cookies == {}
    assert find.form == {
        "c": "find",
        "fam": "Иванова-Петрова",
        "nam": "Анна",
        "otch": "Сергеевна",
        "opt_otch": "",
        "bdate": "07.03.1985",
        "bplace": "",
        "doctype": "21",
        "docno": "45 09 123456",
        "docdt": "01.04.2005",
        "captcha": "",
        "captchaToken": "",
    }
    assert set(get.form) == {"c", "requestId"}
    assert get.form["c"] == "get"
    for request in fake.requests:
        assert request.header("X-Requested-With") == "XMLHttpRequest"
        assert request.header("Referer") == f"{fake.base_url}/inn.do"
        assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    session = find.cookies["JSESSIONID"]
    assert session and get.cookies["JSESSIONID"] == session
    assert (fake.consents, fake.finds, fake.gets) == (1, {"123456": 1}, {"123456": 1})


async def test_no_middle_name_sets_opt_otch(fake: FakeNalog, client: NalogClient) -> None:
    fake.script(NO_MIDDLE.document_number, found(VALID_INN))

    answer = await client.find_inn(NO_MIDDLE)

    assert answer.verdict is UpstreamVerdict.FOUND
    assert fake.protocol_errors == []
    find = fake.requests[1].form
    assert (find["otch"], find["opt_otch"]) == ("", "1")
    assert find["docno"] == "01 02 654321"  # leading zeros kept
    assert (find["bdate"], find["docdt"]) == ("31.12.1990", "15.01.2010")


async def test_each_lookup_has_its_own_cookie_jar(fake: FakeNalog, client: NalogClient) -> None:
    fake.script(PERSON.document_number, found(VALID_INN))

    answers = await asyncio.gather(client.find_inn(PERSON), client.find_inn(PERSON))

    assert [a.verdict for a in answers] == [UpstreamVerdict.FOUND] * 2
    assert fake.protocol_errors == []  # the fake refuses a consent that already has a cookie
    sessions = {r.cookies["JSESSIONID"] for r in fake.requests if r.cookies}
    assert len(sessions) == 2
    assert fake.consents == 2


# -- answers ---------------------------------------------------------------------------------


async def test_state_0_is_not_found(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, not_found())

    assert answer.verdict is UpstreamVerdict.NOT_FOUND
    assert answer.inn is None


async def test_unscripted_people_are_not_found_by_default(
    fake: FakeNalog, client: NalogClient
) -> None:
    answer = await client.find_inn(NO_MIDDLE)

    assert answer.verdict is UpstreamVerdict.NOT_FOUND
    assert fake.protocol_errors == []


async def test_state_1_with_empty_inn_is_not_found(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, empty_inn())

    assert answer.verdict is UpstreamVerdict.NOT_FOUND
    assert answer.inn is None


async def test_errors_are_rejected_with_field_names_only(
    fake: FakeNalog, client: NalogClient
) -> None:
    answer = await lookup(fake, client, rejected(["docno", "bdate"]))

    assert answer == UpstreamAnswer(UpstreamVerdict.REJECTED, detail="fields: bdate, docno")
    assert fake.gets == {}


async def test_errors_sent_with_http_400_are_rejected_too(
    fake: FakeNalog, client: NalogClient
) -> None:
    # As the platform answers elsewhere: {"ERROR": "-", "ERRORS": {…}, "STATUS": 400}.
    answer = await lookup(fake, client, rejected(["docno", "bdate"], status=400))

    assert answer == UpstreamAnswer(UpstreamVerdict.REJECTED, detail="fields: bdate, docno")
    assert fake.finds[PERSON.document_number] == 1


async def test_a_captcha_demanded_as_errors_is_throttled_not_rejected(
    fake: FakeNalog, client: NalogClient
) -> None:
    # ERRORS naming only the captcha field (which we always send empty) asks for a captcha:
    # the person's data was not refused.
    answer = await lookup(fake, client, captcha(1, then=found(VALID_INN), as_errors=True))

    assert answer == UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="captcha")
    assert (await client.find_inn(PERSON)).inn == VALID_INN


async def test_after_a_captcha_no_call_goes_upstream_for_the_pause(fake: FakeNalog) -> None:
    nalog = nalog_client(fake, poll_interval_seconds=0.05, max_polls=20, captcha_pause_seconds=30)
    other = dataclasses.replace(PERSON, document_number="654321")
    fake.script(PERSON.document_number, captcha())
    fake.script(other.document_number, not_ready(10, then=found(VALID_INN)))
    try:
        # ``other`` is already waiting for its result when the captcha comes.
        polling = asyncio.create_task(nalog.find_inn(other))
        await asyncio.sleep(0.12)
        assert (await nalog.find_inn(PERSON)).detail == "captcha"
        calls = len(fake.requests)

        cut_short = await polling
        later = await nalog.find_inn(dataclasses.replace(PERSON, document_number="111111"))
    finally:
        await nalog.close()

    paused = UpstreamAnswer(UpstreamVerdict.PAUSED, detail="paused after a captcha")
    assert (cut_short, later) == (paused, paused)
    assert len(fake.requests) == calls  # nothing reached the upstream after the captcha


async def test_captcha_is_throttled(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, captcha(1, then=found(VALID_INN)))

    assert answer == UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="captcha")
    assert (await client.find_inn(PERSON)).verdict is UpstreamVerdict.FOUND
    assert fake.finds[PERSON.document_number] == 2


async def test_captcha_while_polling_is_throttled(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, not_ready(1, then=captcha()))

    assert answer == UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="captcha")
    assert fake.gets[PERSON.document_number] == 2


async def test_http_429_is_throttled(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, http_error(1, 429))

    assert answer == UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="http 429")


@pytest.mark.parametrize("status", [500, 503, 404, 302])
async def test_other_http_statuses_are_faults(
    fake: FakeNalog, client: NalogClient, status: int
) -> None:
    answer = await lookup(fake, client, http_error(1, status, then=found(VALID_INN)))

    assert answer == UpstreamAnswer(UpstreamVerdict.FAULT, detail=f"http {status}")
    assert (await client.find_inn(PERSON)).inn == VALID_INN  # the script moved on


async def test_upstream_error_is_a_fault(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, upstream_error(1))

    assert answer == UpstreamAnswer(UpstreamVerdict.FAULT, detail="upstream error 500")


async def test_garbage_is_a_fault(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, garbage(1))

    assert answer == UpstreamAnswer(UpstreamVerdict.FAULT, detail="bad response")


async def test_slow_answer_is_a_timeout(fake: FakeNalog) -> None:
    client = NalogClient(fake.base_url, limiter=RateLimiter(1000), timeout_seconds=0.2)
    try:
        answer = await lookup(fake, client, slow(2.0, then=found(VALID_INN)))
    finally:
        await client.close()

    assert answer == UpstreamAnswer(UpstreamVerdict.FAULT, detail="timeout")


async def test_not_ready_then_found(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, not_ready(2, then=found(VALID_INN)))

    assert answer == UpstreamAnswer(UpstreamVerdict.FOUND, inn=VALID_INN)
    assert fake.gets[PERSON.document_number] == 3


async def test_not_ready_beyond_max_polls_is_a_fault(fake: FakeNalog, client: NalogClient) -> None:
    answer = await lookup(fake, client, not_ready(5, then=found(VALID_INN)))

    assert answer == UpstreamAnswer(UpstreamVerdict.FAULT, detail="result not ready")
    assert fake.gets[PERSON.document_number] == 3  # max_polls


async def test_bad_check_digits_are_a_fault_without_the_inn(
    fake: FakeNalog, client: NalogClient
) -> None:
    answer = await lookup(fake, client, bad_check_digits())

    assert answer == UpstreamAnswer(UpstreamVerdict.FAULT, detail="bad check digits")
    assert answer.inn is None
    assert broken_inn() not in answer.detail


async def test_refused_connection_is_a_fault(dead_port: int) -> None:
    client = NalogClient(f"http://127.0.0.1:{dead_port}", limiter=RateLimiter(1000))
    try:
        answer = await client.find_inn(PERSON)
    finally:
        await client.close()

    assert answer == UpstreamAnswer(UpstreamVerdict.FAULT, detail="connection error")


async def test_upstream_gone_after_a_lookup_is_a_fault() -> None:
    fake = FakeNalog(default=found(VALID_INN))
    await fake.start()
    client = NalogClient(fake.base_url, limiter=RateLimiter(1000), timeout_seconds=2.0)
    try:
        assert (await client.find_inn(PERSON)).verdict is UpstreamVerdict.FOUND
        await fake.stop()
        answer = await client.find_inn(PERSON)
    finally:
        await client.close()
        await fake.stop()

    assert answer.verdict is UpstreamVerdict.FAULT
    assert answer.detail == "connection error"


@pytest.mark.parametrize(
    "behaviour",
    [
        found(VALID_INN),
        not_found(),
        empty_inn(),
        rejected(["fam", "nam", "otch", "bdate", "docno", "docdt"]),
        captcha(1),
        http_error(1, 429),
        http_error(1, 503),
        upstream_error(1),
        garbage(1),
        not_ready(9),
        bad_check_digits(),
    ],
    ids=lambda b: b.kind.value,
)
async def test_details_and_logs_hold_no_personal_data(
    fake: FakeNalog,
    client: NalogClient,
    behaviour: Behaviour,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        answer = await lookup(fake, client, behaviour)  # checks the detail

    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (*PERSONAL_STRINGS, VALID_INN, broken_inn()):
        assert secret not in logged
    assert answer.verdict.value in logged


async def test_close_is_idempotent_and_a_lookup_after_it_works(
    fake: FakeNalog, client: NalogClient
) -> None:
    fake.set_default(found(VALID_INN))
    assert (await client.find_inn(PERSON)).verdict is UpstreamVerdict.FOUND
    await client.close()
    await client.close()

    assert (await client.find_inn(PERSON)).verdict is UpstreamVerdict.FOUND
    assert fake.protocol_errors == []


async def test_every_call_waits_for_the_limiter(fake: FakeNalog) -> None:
    fake.set_default(not_ready(1, then=found(VALID_INN)))
    client = NalogClient(
        fake.base_url, limiter=RateLimiter(20), poll_interval_seconds=0.0, max_polls=3
    )
    started = time.monotonic()
    try:
        answer = await client.find_inn(PERSON)
    finally:
        await client.close()

    assert answer.verdict is UpstreamVerdict.FOUND
    assert len(fake.requests) == 4  # consent, find, two polls: three gaps of 1/20 s
    assert time.monotonic() - started >= 0.15


# -- the fake itself -------------------------------------------------------------------------


async def test_fake_refuses_requests_that_break_the_contract(fake: FakeNalog) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/inn-new-proc.do"
        async with session.post(url, data={"c": "find", "docno": "4509123456"}) as response:
            assert response.status == 400
        async with session.get(f"{fake.base_url}/inn-proc.do") as response:
            assert response.status == 400

    assert any("X-Requested-With" in error for error in fake.protocol_errors)
    assert any("form fields" in error for error in fake.protocol_errors)
    assert any("JSESSIONID" in error for error in fake.protocol_errors)
    assert any("unexpected GET /inn-proc.do" in error for error in fake.protocol_errors)
    assert fake.gets == {}


def test_generated_inns_are_valid() -> None:
    assert inn_is_valid(VALID_INN)
    assert not inn_is_valid(broken_inn())
    inns = {make_valid_inn(seed) for seed in range(200)} | {valid_inn() for _ in range(20)}
    assert all(len(inn) == 12 and inn_is_valid(inn) for inn in inns)
    assert not any(inn_is_valid(broken_inn(inn)) for inn in inns)
    assert make_valid_inn(7) == make_valid_inn(7)


# -- RateLimiter -----------------------------------------------------------------------------


async def test_rate_limiter_spaces_acquisitions() -> None:
    limiter = RateLimiter(10)
    started = time.monotonic()

    for _ in range(5):
        await limiter.acquire()

    assert time.monotonic() - started >= 0.4


async def test_rate_limiter_at_a_high_rate_completes() -> None:
    limiter = RateLimiter(1000)

    await asyncio.gather(*(limiter.acquire() for _ in range(5)))


async def test_rate_limiter_serves_concurrent_callers_in_order() -> None:
    limiter = RateLimiter(50)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(take(i)))
        await asyncio.sleep(0)  # each queues before the next one starts
    await asyncio.gather(*tasks)

    assert order == [0, 1, 2, 3, 4]


async def test_rate_limiter_survives_a_cancelled_waiter() -> None:
    limiter = RateLimiter(10)
    await limiter.acquire()  # the next slot is 0.1 s away
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    started = time.monotonic()

    await limiter.acquire()  # gets the slot the cancelled one was waiting for
    await limiter.acquire()

    assert time.monotonic() - started >= 0.1  # still spaced: one interval between the two


def test_rate_limiter_needs_a_positive_rate() -> None:
    for rate in (0, -1):
        with pytest.raises(ValueError):
            RateLimiter(rate)
