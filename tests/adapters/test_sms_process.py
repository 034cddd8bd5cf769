"""SmsSenderProcess: a real helper process sending to FakeSmsGateway over loopback HTTP, with the
helper's own faults (killed, stopped, unable to start) made by signals, not mocks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest

from onboarding.adapters import sms_process
from onboarding.adapters.sms import DeliveryResult, SmsOutcome
from onboarding.adapters.sms_process import SmsSenderProcess
from tests.fakes.sms_gateway import FakeSmsGateway

TOKEN = "gateway-secret-token"
PHONE = "+79161234567"
CODE = "482913"
TEXT = f"Код подтверждения: {CODE}"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway(token=TOKEN) as gw:
        yield gw


@pytest.fixture
async def sender(fake: FakeSmsGateway) -> AsyncIterator[SmsSenderProcess]:
    backend = SmsSenderProcess(fake.url, TOKEN, timeout_seconds=2.0, restart_interval_seconds=0)
    yield backend
    await backend.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - no event tells of a pid
        await asyncio.sleep(0.02)
    return not alive(pid)


async def given_up(sender: SmsSenderProcess, within: float = 5.0) -> bool:
    """Until the sender has seen its helper's end."""
    deadline = time.monotonic() + within
    while sender.helper_pid is not None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return sender.helper_pid is None


async def helper_killed(sender: SmsSenderProcess) -> int:
    """A helper started by one send, then killed and seen gone by the sender: its pid."""
    assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
    helper = sender.helper_pid
    assert helper is not None
    os.kill(helper, signal.SIGKILL)
    assert await given_up(sender)
    return helper


async def test_the_helper_posts_the_contract_body_and_headers(
    fake: FakeSmsGateway, sender: SmsSenderProcess
) -> None:
    message_id = uuid4()

    outcome = await sender.send(message_id, PHONE, TEXT)

    assert outcome == SmsOutcome(DeliveryResult.SENT, "http 200")
    [received] = fake.requests
    assert received.body == {"message_id": str(message_id), "phone": PHONE, "text": TEXT}
    assert received.header("Content-Type") == "application/json"
    assert received.header("Idempotency-Key") == str(message_id)
    assert received.header("Authorization") == f"Bearer {TOKEN}"
    assert fake.codes_for(PHONE) == [CODE]
    assert sender.helper_pid is not None and sender.helper_pid != os.getpid()


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (202, DeliveryResult.SENT),
        (429, DeliveryResult.RETRY),
        (503, DeliveryResult.RETRY),
        (400, DeliveryResult.FAILED),
    ],
)
async def test_the_gateways_answer_is_classified_as_inline(
    fake: FakeSmsGateway, sender: SmsSenderProcess, status: int, result: DeliveryResult
) -> None:
    fake.set_default(status)

    assert await sender.send(uuid4(), PHONE, TEXT) == SmsOutcome(result, f"http {status}")


async def test_a_gateway_timeout_is_retried_and_the_helper_stays(fake: FakeSmsGateway) -> None:
    sender = SmsSenderProcess(fake.url, TOKEN, timeout_seconds=0.5)
    try:
        assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
        helper = sender.helper_pid
        fake.delay_next(1, 2.0)

        outcome = await sender.send(uuid4(), PHONE, TEXT)

        assert outcome == SmsOutcome(DeliveryResult.RETRY, "timeout")
        assert sender.helper_pid == helper
    finally:
        await sender.close()


async def test_many_side_by_side_each_go_once_through_one_helper(
    fake: FakeSmsGateway, sender: SmsSenderProcess
) -> None:
    ids = [uuid4() for _ in range(300)]

    outcomes = await asyncio.gather(
        *(sender.send(i, PHONE, f"code {n:06d}") for n, i in enumerate(ids))
    )

    assert {o.result for o in outcomes} == {DeliveryResult.SENT}
    assert fake.by_message_id() == {str(i): 1 for i in ids}
    texts = {r.message_id: r.text for r in fake.delivered}
    assert all(texts[str(i)] == f"code {n:06d}" for n, i in enumerate(ids))


async def test_a_helper_killed_mid_send_retries_its_sends_and_a_new_one_takes_over(
    fake: FakeSmsGateway,
) -> None:
    starts: list[str] = []
    sender = SmsSenderProcess(
        fake.url, TOKEN, timeout_seconds=2.0, restart_interval_seconds=0, on_start=starts.append
    )
    assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
    first = sender.helper_pid
    assert first is not None
    fake.delay_next(5, 3.0)
    sends = [asyncio.create_task(sender.send(uuid4(), PHONE, TEXT)) for _ in range(5)]
    await fake.wait_for_requests(6)

    os.kill(first, signal.SIGKILL)
    outcomes = await asyncio.gather(*sends)

    assert outcomes == [SmsOutcome(DeliveryResult.RETRY, "sender process exited")] * 5
    assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
    assert sender.helper_pid not in (None, first)
    assert await gone(first)
    assert starts == ["started", "started"]
    await sender.close()


async def test_a_helper_that_stops_answering_is_killed_and_replaced(fake: FakeSmsGateway) -> None:
    # The first send's wait takes in the helper's start (a quarter of a second, more on a busy
    # machine): the margin leaves room for it.
    sender = SmsSenderProcess(
        fake.url, TOKEN, timeout_seconds=0.5, answer_margin_seconds=1.0, restart_interval_seconds=0
    )
    try:
        assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
        stuck = sender.helper_pid
        assert stuck is not None
        os.kill(stuck, signal.SIGSTOP)
        started = time.monotonic()

        outcome = await sender.send(uuid4(), PHONE, TEXT)

        assert outcome == SmsOutcome(DeliveryResult.RETRY, "timeout")
        assert time.monotonic() - started < 5.0
        assert await gone(stuck)
        assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
        assert sender.helper_pid not in (None, stuck)
    finally:
        await sender.close()


async def test_without_pidfds_a_helpers_exit_is_awaited_in_a_thread(
    fake: FakeSmsGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a system other than Linux."""
    monkeypatch.delattr(os, "pidfd_open")
    sender = SmsSenderProcess(fake.url, TOKEN, restart_interval_seconds=0)
    try:
        helper = await helper_killed(sender)
        assert await gone(helper)

        assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
    finally:
        await sender.close()


async def test_helpers_are_started_at_most_once_per_restart_interval(
    fake: FakeSmsGateway,
) -> None:
    sender = SmsSenderProcess(fake.url, TOKEN, restart_interval_seconds=60)
    try:
        helper = await helper_killed(sender)

        outcome = await sender.send(uuid4(), PHONE, TEXT)

        assert outcome == SmsOutcome(DeliveryResult.RETRY, "sender process unavailable")
        assert sender.helper_pid is None
        assert await gone(helper)
    finally:
        await sender.close()


async def test_a_helper_that_cannot_start_is_a_retry(
    fake: FakeSmsGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    starts: list[str] = []
    sender = SmsSenderProcess(fake.url, TOKEN, on_start=starts.append)

    outcome = await sender.send(uuid4(), PHONE, TEXT)

    assert outcome == SmsOutcome(DeliveryResult.RETRY, "sender process unavailable")
    assert fake.requests == []
    assert starts == ["failed"]
    await sender.close()


@pytest.mark.parametrize("program", ["/bin/false", "/bin/true"])
async def test_a_helper_that_exits_before_it_is_ready_is_a_retry(
    fake: FakeSmsGateway, monkeypatch: pytest.MonkeyPatch, program: str
) -> None:
    monkeypatch.setattr(sys, "executable", program)
    sender = SmsSenderProcess(fake.url, TOKEN)

    outcome = await sender.send(uuid4(), PHONE, TEXT)

    assert outcome == SmsOutcome(DeliveryResult.RETRY, "sender process unavailable")
    await sender.close()


async def test_a_helper_slower_to_start_than_allowed_is_a_retry(
    fake: FakeSmsGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sms_process, "STARTUP_SECONDS", 0.01)
    sender = SmsSenderProcess(fake.url, TOKEN)

    outcome = await sender.send(uuid4(), PHONE, TEXT)

    assert outcome == SmsOutcome(DeliveryResult.RETRY, "sender process unavailable")
    assert sender.helper_pid is None
    assert fake.requests == []
    await sender.close()


async def test_the_token_and_our_settings_are_in_neither_argv_nor_environment(
    fake: FakeSmsGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONBOARDING_SECRET_KEY", "a-secret-key-of-the-server-0123")
    monkeypatch.setenv("ONBOARDING_SMS_GATEWAY_TOKEN", TOKEN)
    sender = SmsSenderProcess(fake.url, TOKEN)
    try:
        assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
        pid = sender.helper_pid
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode()  # noqa: ASYNC240
        environment = Path(f"/proc/{pid}/environ").read_bytes().decode()  # noqa: ASYNC240
    finally:
        await sender.close()

    assert argv.split("\0")[1:3] == ["-m", "onboarding.entrypoints.sms_sender"]
    for secret in (TOKEN, "a-secret-key-of-the-server-0123", "ONBOARDING_"):
        assert secret not in argv
        assert secret not in environment


async def test_the_helper_logs_neither_phone_nor_text(
    fake: FakeSmsGateway, capfd: pytest.CaptureFixture[str]
) -> None:
    sender = SmsSenderProcess(fake.url, TOKEN, log_level="DEBUG")
    fake.fail_next(1, 503)
    try:
        await sender.send(uuid4(), PHONE, TEXT)
        await sender.send(uuid4(), PHONE, TEXT)
    finally:
        await sender.close()

    out, err = capfd.readouterr()
    for secret in (PHONE, PHONE.lstrip("+"), CODE, TOKEN):
        assert secret not in out + err


async def test_close_ends_the_helper_after_what_it_holds(
    fake: FakeSmsGateway,
) -> None:
    sender = SmsSenderProcess(fake.url, TOKEN)
    assert sender.helper_pid is None  # started by the first send, not before
    assert (await sender.send(uuid4(), PHONE, TEXT)).result is DeliveryResult.SENT
    helper = sender.helper_pid
    assert helper is not None
    fake.delay_next(1, 0.3)
    held = asyncio.create_task(sender.send(uuid4(), PHONE, TEXT))
    await fake.wait_for_requests(2)

    await sender.close()
    await sender.close()

    assert (await held).result is DeliveryResult.SENT
    assert not alive(helper)
    assert sender.helper_pid is None


def test_no_helper_outlives_a_server_killed_outright(tmp_path: Path) -> None:
    """The server side killed with SIGKILL: the helper reads the end of its input and exits."""

    async def run() -> None:
        async with FakeSmsGateway() as fake:
            script = tmp_path / "server.py"
            script.write_text(
                textwrap.dedent(
                    f"""
                    import asyncio, sys, uuid
                    from onboarding.adapters.sms_process import SmsSenderProcess

                    async def main():
                        sender = SmsSenderProcess({fake.url!r}, None)
                        await sender.send(uuid.uuid4(), "+79161234567", "code 123456")
                        print(sender.helper_pid, flush=True)
                        await asyncio.sleep(60)

                    asyncio.run(main())
                    """
                )
            )
            server = await asyncio.create_subprocess_exec(
                sys.executable, str(script), stdout=subprocess.PIPE, cwd=ROOT
            )
            assert server.stdout is not None
            helper = int(await asyncio.wait_for(server.stdout.readline(), 10))
            assert alive(helper)

            server.kill()
            await server.wait()

            assert await gone(helper)

    asyncio.run(run())
