"""How often codes may be sent: the interval between sends, per-agreement and per-phone limits."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, StartServer, random_client, random_phone
from tests.e2e.test_agreement_support import (
    assert_error,
    assert_no_phone_in,
    code_for,
    create,
    error_of,
    get,
    national_notation,
    send_otp,
    sms_to,
)


async def _sent(server: RunningServer, phone: str, count: int) -> None:
    """Waits until ``count`` codes reached ``phone``, then checks no more arrive."""
    await code_for(server, phone, index=count - 1)
    await asyncio.sleep(0.3)
    assert len(sms_to(server, phone)) == count


# -- the interval between sends -------------------------------------------------------------


async def test_send_otp_right_after_create_is_too_early(start_server: StartServer) -> None:
    server = await start_server(otp_resend_interval_seconds=60)
    phone = random_phone()
    agreement = await create(server, phone=phone)

    error = await error_of(send_otp(server, agreement.reference))

    assert_error(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_RESEND_TOO_EARLY")
    assert error.retry_info is not None
    delay = error.retry_info.retry_delay.ToTimedelta()
    assert timedelta(seconds=55) <= delay <= timedelta(seconds=60)
    await _sent(server, phone, 1)


async def test_create_announces_when_the_next_code_may_be_sent(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_resend_interval_seconds=60)
    phone = random_phone()

    agreement = await create(server, phone=phone)

    wait = agreement.otp_resend_time.ToDatetime() - agreement.otp_send_time.ToDatetime()
    assert wait == timedelta(seconds=60)
    await code_for(server, phone)


async def test_a_refused_early_send_keeps_the_current_code_and_counts_nothing(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_resend_interval_seconds=60)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await error_of(send_otp(server, agreement.reference))

    fetched = await get(server, agreement.reference)

    assert fetched.otp_send_time == agreement.otp_send_time
    assert fetched.otp_sends_remaining == 4
    assert fetched.otp_attempts_remaining == 3
    await _sent(server, phone, 1)


# -- at most N codes per agreement ----------------------------------------------------------


async def test_the_send_after_the_agreement_limit_is_refused(start_server: StartServer) -> None:
    server = await start_server(otp_max_sends_per_agreement=2)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await send_otp(server, agreement.reference)

    error = await error_of(send_otp(server, agreement.reference))

    assert_error(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_SEND_LIMIT")
    assert error.quota_failure is not None
    assert [v.subject for v in error.quota_failure.violations] == ["agreement"]
    await _sent(server, phone, 2)


async def test_agreement_at_its_send_limit_shows_no_sends_left_and_no_resend_time(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_max_sends_per_agreement=2)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    assert agreement.otp_sends_remaining == 1

    resent = await send_otp(server, agreement.reference)

    assert resent.otp_sends_remaining == 0
    assert not resent.HasField("otp_resend_time")
    await error_of(send_otp(server, agreement.reference))
    fetched = await get(server, agreement.reference)
    assert fetched.otp_sends_remaining == 0
    assert not fetched.HasField("otp_resend_time")
    assert fetched.status == pb.AGREEMENT_STATUS_PENDING
    await _sent(server, phone, 2)


async def test_the_last_code_still_confirms_at_the_send_limit(start_server: StartServer) -> None:
    server = await start_server(otp_max_sends_per_agreement=2)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await send_otp(server, agreement.reference)
    await error_of(send_otp(server, agreement.reference))

    code = await code_for(server, phone, index=1)
    confirmed = await server.agreements.ConfirmOtp(
        pb.ConfirmOtpRequest(reference=agreement.reference, code=code)
    )

    assert confirmed.agreement.status == pb.AGREEMENT_STATUS_CONFIRMED


# -- at most N codes per phone per hour -----------------------------------------------------


async def _phone_at_its_limit(server: RunningServer) -> tuple[str, pb.Agreement, pb.Agreement]:
    """Two agreements for one phone that have used up a quota of three codes between them."""
    phone = random_phone()
    first = await create(server, phone=phone)
    second = await create(server, phone=phone)
    await send_otp(server, first.reference)
    await code_for(server, phone, index=2)
    return phone, first, second


async def test_the_fourth_code_to_one_phone_is_refused_whichever_agreement_asks(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_max_sends_per_phone_per_hour=3)
    phone, first, second = await _phone_at_its_limit(server)

    for agreement in (second, first):
        error = await error_of(send_otp(server, agreement.reference))
        assert_error(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_SEND_LIMIT")
        assert error.quota_failure is not None
        assert [v.subject for v in error.quota_failure.violations] == ["phone"]
        assert_no_phone_in(error, phone)
    await _sent(server, phone, 3)


async def test_a_phone_limit_refusal_counts_no_send_for_the_agreement(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_max_sends_per_phone_per_hour=3)
    phone, _, second = await _phone_at_its_limit(server)
    await error_of(send_otp(server, second.reference))

    fetched = await get(server, second.reference)

    assert fetched.otp_sends_remaining == 4
    assert fetched.otp_send_time == second.otp_send_time
    await _sent(server, phone, 3)


async def test_create_whose_first_code_would_pass_the_phone_limit_creates_nothing(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_max_sends_per_phone_per_hour=3)
    phone, _, _ = await _phone_at_its_limit(server)
    client = random_client()

    error = await error_of(create(server, phone=phone, client=client))

    assert_error(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_SEND_LIMIT")
    assert error.quota_failure is not None
    assert [v.subject for v in error.quota_failure.violations] == ["phone"]
    assert_no_phone_in(error, phone)
    listed = await server.agreements.ListAgreements(pb.ListAgreementsRequest(id_hash=client))
    assert list(listed.agreements) == []
    await _sent(server, phone, 3)


async def test_the_phone_limit_counts_one_number_in_any_notation(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_max_sends_per_phone_per_hour=3)
    phone = random_phone()
    for notation in (phone, national_notation(phone), phone[1:]):
        await create(server, phone=notation)

    error = await error_of(create(server, phone=f"+7 {phone[2:5]} {phone[5:]}"))

    assert_error(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_SEND_LIMIT")
    await _sent(server, phone, 3)


async def test_the_phone_limit_does_not_touch_other_phones(start_server: StartServer) -> None:
    server = await start_server(otp_max_sends_per_phone_per_hour=3)
    await _phone_at_its_limit(server)
    other = random_phone()

    agreement = await create(server, phone=other)

    assert agreement.status == pb.AGREEMENT_STATUS_PENDING
    await code_for(server, other)
