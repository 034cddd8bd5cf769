"""AgreementService end to end: creating, confirming with the SMS code, wrong and old codes."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, random_client, random_phone
from tests.e2e.test_agreement_support import (
    assert_error,
    code_for,
    confirm,
    create,
    error_of,
    get,
    other_code,
    send_otp,
)


async def test_create_answers_a_pending_agreement_with_its_first_code(
    server: RunningServer,
) -> None:
    phone, client = random_phone(), random_client()

    agreement = await create(server, phone=phone, client=client)

    assert str(UUID(agreement.reference)) == agreement.reference
    assert agreement.id_hash == client
    assert agreement.status == pb.AGREEMENT_STATUS_PENDING
    assert agreement.otp_attempts_remaining == 3
    assert agreement.otp_sends_remaining == 4
    assert agreement.otp_delivery_status in (
        pb.OTP_DELIVERY_STATUS_QUEUED,
        pb.OTP_DELIVERY_STATUS_SENT,
    )
    for name in ("create_time", "otp_send_time", "otp_expire_time", "otp_resend_time"):
        assert agreement.HasField(name), name
    for name in ("confirm_time", "revoke_time"):
        assert not agreement.HasField(name), name
    await code_for(server, phone)  # leave nothing queued for later tests


async def test_create_times_follow_the_code_rules(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)

    created = agreement.create_time.ToDatetime()
    sent = agreement.otp_send_time.ToDatetime()
    assert created <= sent
    assert agreement.otp_expire_time.ToDatetime() - sent == timedelta(seconds=600)
    # The test servers allow a new code at once (resend interval 0).
    assert agreement.otp_resend_time.ToDatetime() == sent
    await code_for(server, phone)


async def test_phone_masked_hides_the_middle_of_the_number(server: RunningServer) -> None:
    phone = random_phone()

    agreement = await create(server, phone=phone)

    assert agreement.phone_masked == phone[:5] + "*****" + phone[-2:]
    assert phone[5:-2] not in agreement.phone_masked
    await code_for(server, phone)


async def test_get_agreement_shows_what_create_answered(server: RunningServer) -> None:
    phone = random_phone()
    created = await create(server, phone=phone)
    await code_for(server, phone)

    fetched = await get(server, created.reference)

    assert fetched.reference == created.reference
    assert fetched.phone_masked == created.phone_masked
    assert fetched.create_time == created.create_time
    assert fetched.otp_send_time == created.otp_send_time
    assert fetched.otp_expire_time == created.otp_expire_time
    assert fetched.otp_attempts_remaining == 3
    assert fetched.otp_sends_remaining == 4


async def test_the_right_code_confirms_the_agreement(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)

    confirmed = await confirm(server, agreement.reference, await code_for(server, phone))

    assert confirmed.status == pb.AGREEMENT_STATUS_CONFIRMED
    assert confirmed.HasField("confirm_time")
    assert not confirmed.HasField("revoke_time")
    assert confirmed.confirm_time.ToDatetime() >= agreement.create_time.ToDatetime()
    fetched = await get(server, agreement.reference)
    assert fetched.status == pb.AGREEMENT_STATUS_CONFIRMED
    assert fetched.confirm_time == confirmed.confirm_time


async def test_confirmed_agreement_offers_no_more_codes(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await confirm(server, agreement.reference, await code_for(server, phone))

    fetched = await get(server, agreement.reference)

    assert fetched.otp_sends_remaining == 0
    assert not fetched.HasField("otp_resend_time")


async def test_repeating_the_right_code_after_success_answers_ok_with_the_same_time(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    first = await confirm(server, agreement.reference, code)

    again = await confirm(server, agreement.reference, code)

    assert again.status == pb.AGREEMENT_STATUS_CONFIRMED
    assert again.confirm_time == first.confirm_time


async def test_another_code_after_success_is_refused_as_not_pending(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    await confirm(server, agreement.reference, code)

    error = await error_of(confirm(server, agreement.reference, other_code(code)))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "AGREEMENT_NOT_PENDING")
    assert error.metadata["status"] == "AGREEMENT_STATUS_CONFIRMED"
    assert error.trailers["status"] == "AGREEMENT_STATUS_CONFIRMED"


async def test_send_otp_on_a_confirmed_agreement_is_refused_as_not_pending(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await confirm(server, agreement.reference, await code_for(server, phone))

    error = await error_of(send_otp(server, agreement.reference))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "AGREEMENT_NOT_PENDING")
    assert error.metadata["status"] == "AGREEMENT_STATUS_CONFIRMED"
    assert len(server.gateway.codes_for(phone)) == 1


async def test_each_wrong_code_uses_up_one_attempt(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    wrong = other_code(await code_for(server, phone))

    for expected in (2, 1, 0):
        error = await error_of(confirm(server, agreement.reference, wrong))
        assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "OTP_INVALID")
        assert error.metadata["attempts_remaining"] == str(expected)
        assert error.trailers["attempts_remaining"] == str(expected)
        assert (await get(server, agreement.reference)).otp_attempts_remaining == expected


async def test_wrong_code_error_does_not_show_the_code(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    wrong = other_code(code)

    error = await error_of(confirm(server, agreement.reference, wrong))

    shown = [error.message, *error.metadata.values(), *error.trailers.values()]
    assert not any(code in text or wrong in text for text in shown), shown


async def test_after_three_wrong_codes_even_the_right_one_is_refused(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    for _ in range(3):
        await error_of(confirm(server, agreement.reference, other_code(code)))

    error = await error_of(confirm(server, agreement.reference, code))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "OTP_ATTEMPTS_EXHAUSTED")
    fetched = await get(server, agreement.reference)
    assert fetched.status == pb.AGREEMENT_STATUS_PENDING
    assert fetched.otp_attempts_remaining == 0


async def test_send_otp_after_exhaustion_gives_a_fresh_code_that_works(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    old = await code_for(server, phone)
    for _ in range(3):
        await error_of(confirm(server, agreement.reference, other_code(old)))

    resent = await send_otp(server, agreement.reference)
    new = await code_for(server, phone, index=1)

    assert resent.otp_attempts_remaining == 3
    assert resent.otp_sends_remaining == 3
    confirmed = await confirm(server, agreement.reference, new)
    assert confirmed.status == pb.AGREEMENT_STATUS_CONFIRMED


async def test_the_old_code_stops_working_once_a_new_one_is_sent(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    old = await code_for(server, phone)
    await send_otp(server, agreement.reference)
    new = await code_for(server, phone, index=1)
    if new == old:  # one chance in a million: a random code may repeat; send once more
        await send_otp(server, agreement.reference)
        new = await code_for(server, phone, index=2)

    error = await error_of(confirm(server, agreement.reference, old))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "OTP_INVALID")
    assert error.metadata["attempts_remaining"] == "2"
    assert (await confirm(server, agreement.reference, new)).status == (
        pb.AGREEMENT_STATUS_CONFIRMED
    )


async def test_send_otp_moves_the_code_times_forward(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await code_for(server, phone)

    resent = await send_otp(server, agreement.reference)

    assert resent.status == pb.AGREEMENT_STATUS_PENDING
    assert resent.otp_send_time.ToDatetime() >= agreement.otp_send_time.ToDatetime()
    assert resent.otp_expire_time.ToDatetime() - resent.otp_send_time.ToDatetime() == (
        agreement.otp_expire_time.ToDatetime() - agreement.otp_send_time.ToDatetime()
    )
    assert resent.otp_delivery_status in (
        pb.OTP_DELIVERY_STATUS_QUEUED,
        pb.OTP_DELIVERY_STATUS_SENT,
    )
    await code_for(server, phone, index=1)
