"""HttpSmsGateway against FakeSmsGateway: real HTTP over loopback, no mocks."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from uuid import UUID, uuid4

import aiohttp
import pytest

from onboarding.adapters.sms import (
    ConsoleSmsBackend,
    DeliveryResult,
    HttpSmsGateway,
    SmsBackend,
    SmsOutcome,
)
from tests.fakes.sms_gateway import FakeSmsGateway

TOKEN = "gateway-secret-token"
PHONE = "+79161234567"
CODE = "482913"
TEXT = f"Код подтверждения: {CODE}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway(token=TOKEN) as gw:
        yield gw


@pytest.fixture
async def client(fake: FakeSmsGateway) -> AsyncIterator[HttpSmsGateway]:
    gateway = HttpSmsGateway(fake.url, TOKEN, timeout_seconds=2.0)
    yield gateway
    await gateway.close()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that is bound but not listening: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def assert_no_secrets(outcome: SmsOutcome) -> None:
    for secret in (PHONE, PHONE.lstrip("+"), TEXT, CODE):
        assert secret not in outcome.detail


async def test_posts_the_contract_body_and_headers(
    fake: FakeSmsGateway, client: HttpSmsGateway
) -> None:
    message_id = uuid4()

    outcome = await client.send(message_id, PHONE, TEXT)

    assert outcome == SmsOutcome(DeliveryResult.SENT, "http 200")
    [received] = fake.requests
    assert received.body == {"message_id": str(message_id), "phone": PHONE, "text": TEXT}
    assert json.loads(received.raw_body) == received.body
    assert (received.message_id, received.phone, received.text) == (str(message_id), PHONE, TEXT)
    assert received.header("Content-Type") == "application/json"
    assert received.header("Idempotency-Key") == str(message_id)
    assert received.header("Authorization") == f"Bearer {TOKEN}"
    assert fake.delivered == [received]
    assert fake.codes_for(PHONE) == [CODE]


async def test_no_authorization_header_without_a_token() -> None:
    async with FakeSmsGateway() as fake:
        client = HttpSmsGateway(fake.url, None)
        try:
            outcome = await client.send(uuid4(), PHONE, TEXT)
        finally:
            await client.close()

    assert outcome.result is DeliveryResult.SENT
    assert fake.requests[0].header("Authorization") is None


async def test_wrong_token_is_rejected_and_fails(fake: FakeSmsGateway) -> None:
    client = HttpSmsGateway(fake.url, "not-the-token")
    try:
        outcome = await client.send(uuid4(), PHONE, TEXT)
    finally:
        await client.close()

    assert outcome == SmsOutcome(DeliveryResult.FAILED, "http 401")
    assert fake.delivered == []


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_sent(fake: FakeSmsGateway, client: HttpSmsGateway, status: int) -> None:
    fake.set_default(status)

    outcome = await client.send(uuid4(), PHONE, TEXT)

    assert outcome == SmsOutcome(DeliveryResult.SENT, f"http {status}")


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_429_and_5xx_are_retried(
    fake: FakeSmsGateway, client: HttpSmsGateway, status: int
) -> None:
    fake.fail_next(1, status=status)
    message_id = uuid4()

    first = await client.send(message_id, PHONE, TEXT)
    second = await client.send(message_id, PHONE, TEXT)

    assert first == SmsOutcome(DeliveryResult.RETRY, f"http {status}")
    assert second == SmsOutcome(DeliveryResult.SENT, "http 200")
    assert fake.by_message_id(all_requests=True) == {str(message_id): 2}
    assert fake.duplicate_message_ids() == []
    assert_no_secrets(first)


@pytest.mark.parametrize("status", [302, 400, 403, 404, 409, 422])
async def test_other_statuses_fail(
    fake: FakeSmsGateway, client: HttpSmsGateway, status: int
) -> None:
    fake.reject_all(status)

    outcome = await client.send(uuid4(), PHONE, TEXT)

    assert outcome == SmsOutcome(DeliveryResult.FAILED, f"http {status}")
    assert len(fake.requests) == 1  # no redirect followed, nothing resent
    assert_no_secrets(outcome)


async def test_slow_answer_is_a_timeout_to_retry(fake: FakeSmsGateway) -> None:
    client = HttpSmsGateway(fake.url, TOKEN, timeout_seconds=0.2)
    fake.delay_next(1, 1.0)
    message_id = uuid4()
    try:
        outcome = await client.send(message_id, PHONE, TEXT)
        assert outcome == SmsOutcome(DeliveryResult.RETRY, "timeout")
        assert_no_secrets(outcome)

        # The gateway still sends the late one: a retry now is the duplicate the contract
        # tolerates ("at least once"), and the fake shows it.
        await fake.wait_for(1, timeout=3.0)
        assert (await client.send(message_id, PHONE, TEXT)).result is DeliveryResult.SENT
        assert fake.duplicate_message_ids() == [str(message_id)]
    finally:
        await client.close()


async def test_refused_connection_is_retried(dead_port: int) -> None:
    client = HttpSmsGateway(f"http://127.0.0.1:{dead_port}/sms", TOKEN, timeout_seconds=2.0)
    try:
        outcome = await client.send(uuid4(), PHONE, TEXT)
    finally:
        await client.close()

    assert outcome == SmsOutcome(DeliveryResult.RETRY, "connection refused")
    assert_no_secrets(outcome)


async def test_gateway_gone_after_first_send_is_retried() -> None:
    fake = FakeSmsGateway()
    await fake.start()
    client = HttpSmsGateway(fake.url, None, timeout_seconds=2.0)
    try:
        assert (await client.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
        await fake.stop()

        outcome = await client.send(uuid4(), PHONE, TEXT)
    finally:
        await client.close()
        await fake.stop()

    assert outcome.result is DeliveryResult.RETRY
    assert_no_secrets(outcome)


async def test_an_answer_that_is_not_http_is_retried() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"220 smtp.example ESMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = HttpSmsGateway(f"http://127.0.0.1:{port}/sms", TOKEN, timeout_seconds=2.0)
        outcome = await client.send(uuid4(), PHONE, TEXT)
        await client.close()
    assert outcome.result is DeliveryResult.RETRY
    assert outcome.detail.startswith("bad response")
    assert_no_secrets(outcome)


@pytest.mark.parametrize(
    ("url", "token"),
    [("ftp://sms.example/", None), ("http://sms.example/", "token\r\nX-Injected: 1")],
)
def test_a_gateway_no_request_can_reach_is_refused_at_once(url: str, token: str | None) -> None:
    with pytest.raises(ValueError):
        HttpSmsGateway(url, token)


async def test_one_session_is_reused_and_close_is_idempotent(
    fake: FakeSmsGateway, client: HttpSmsGateway
) -> None:
    for _ in range(3):
        assert (await client.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
    await client.close()
    await client.close()

    # A send after close opens a fresh session rather than raising.
    assert (await client.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
    assert len(fake.delivered) == 4
    ports = [sms.client_port for sms in fake.delivered]
    assert ports[0] == ports[1] == ports[2] != ports[3]  # one kept-alive connection per session


async def test_fake_rejects_a_body_that_is_not_the_contract(fake: FakeSmsGateway) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": str(uuid4())}
    async with aiohttp.ClientSession() as session:
        for body in ({"phone": PHONE, "text": TEXT}, {"message_id": "x", "phone": PHONE}):
            async with session.post(fake.url, json=body, headers=headers) as response:
                assert response.status == 400
    assert fake.delivered == []


async def test_console_backend_prints_the_sms_and_logs_nothing(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    backend: SmsBackend = ConsoleSmsBackend()
    message_id = UUID("0b0e5a51-7a53-4f0c-9a49-8f1cfa1d2e3b")

    with caplog.at_level(logging.DEBUG):
        outcome = await backend.send(message_id, PHONE, TEXT)
    await backend.close()

    assert outcome.result is DeliveryResult.SENT
    assert capsys.readouterr().out == f"SMS to {PHONE} [message {message_id}]: {TEXT}\n"
    assert caplog.records == []
