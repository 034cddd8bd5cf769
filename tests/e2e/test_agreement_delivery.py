"""The SMS carrying a code: what the gateway receives, and how delivery ends (SENT or FAILED)
as the gateway accepts, refuses or keeps failing."""

from __future__ import annotations

import asyncio
import json
import re
from uuid import UUID

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, StartServer, eventually, random_phone
from tests.e2e.test_agreement_support import (
    code_for,
    create,
    delivery_becomes,
    national_notation,
    send_otp,
    sms_to,
)


async def _requests_to(server: RunningServer, phone: str, count: int) -> None:
    """Waits for ``count`` requests to ``phone``, then checks that no more come."""

    async def arrived() -> bool:
        return len(sms_to(server, phone)) >= count

    await eventually(arrived)
    await asyncio.sleep(0.5)  # longer than the test servers' retry delays and poll
    assert len(sms_to(server, phone)) == count


# -- what the gateway receives ---------------------------------------------------------------


async def test_the_gateway_gets_the_contract_json_with_the_phone_in_e164(
    server: RunningServer,
) -> None:
    phone = random_phone()
    await create(server, phone=national_notation(phone))
    await code_for(server, phone)

    [sms] = sms_to(server, phone)

    assert set(sms.body) == {"message_id", "phone", "text"}
    assert json.loads(sms.raw_body) == sms.body
    assert sms.body["phone"] == phone
    assert str(UUID(sms.body["message_id"])) == sms.body["message_id"]


async def test_the_sms_text_is_the_template_rendered_with_a_six_digit_code(
    server: RunningServer,
) -> None:
    phone = random_phone()
    await create(server, phone=phone)
    code = await code_for(server, phone)

    [sms] = sms_to(server, phone)

    assert re.fullmatch(r"\d{6}", code)
    assert sms.text == f"Код подтверждения: {code}"


async def test_the_gateway_gets_the_contract_headers(server: RunningServer) -> None:
    phone = random_phone()
    await create(server, phone=phone)
    await code_for(server, phone)

    [sms] = sms_to(server, phone)

    assert sms.header("Idempotency-Key") == sms.message_id
    assert sms.header("Authorization") == "Bearer gateway-token"
    content_type = sms.header("Content-Type") or ""
    assert content_type.split(";")[0].strip() == "application/json"


async def test_each_code_goes_out_under_its_own_message_id(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await code_for(server, phone)
    await server.agreements.SendOtp(pb.SendOtpRequest(reference=agreement.reference))
    await code_for(server, phone, index=1)

    first, second = sms_to(server, phone)

    assert first.message_id != second.message_id
    assert second.header("Idempotency-Key") == second.message_id


async def test_delivery_status_becomes_sent_once_the_gateway_accepts(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)

    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_SENT)

    assert len(sms_to(server, phone)) == 1


# -- refusals and retries --------------------------------------------------------------------


async def test_a_400_from_the_gateway_fails_delivery_at_once(server: RunningServer) -> None:
    server.gateway.reject_all(400)
    phone = random_phone()
    agreement = await create(server, phone=phone)

    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_FAILED)

    await _requests_to(server, phone, 1)


async def test_a_failed_delivery_leaves_the_agreement_pending_for_a_new_code(
    server: RunningServer,
) -> None:
    server.gateway.reject_all(400)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_FAILED)
    server.gateway.reset()

    resent = await server.agreements.SendOtp(pb.SendOtpRequest(reference=agreement.reference))
    code = await code_for(server, phone)

    assert resent.agreement.otp_delivery_status != pb.OTP_DELIVERY_STATUS_FAILED
    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_SENT)
    confirmed = await server.agreements.ConfirmOtp(
        pb.ConfirmOtpRequest(reference=agreement.reference, code=code)
    )
    assert confirmed.agreement.status == pb.AGREEMENT_STATUS_CONFIRMED


async def test_503_three_times_then_sent_with_one_message_id_delivered_once(
    server: RunningServer,
) -> None:
    server.gateway.fail_next(3, status=503)
    phone = random_phone()
    agreement = await create(server, phone=phone)

    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_SENT)

    await _requests_to(server, phone, 4)
    requests = sms_to(server, phone)
    assert [sms.status for sms in requests] == [503, 503, 503, 200]
    assert len({sms.message_id for sms in requests}) == 1
    assert {sms.header("Idempotency-Key") for sms in requests} == {requests[0].message_id}
    assert len({sms.text for sms in requests}) == 1
    assert [sms.message_id for sms in server.gateway.delivered].count(requests[0].message_id) == 1


async def test_429_is_retried_like_a_5xx(server: RunningServer) -> None:
    server.gateway.fail_next(2, status=429)
    phone = random_phone()
    agreement = await create(server, phone=phone)

    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_SENT)

    await _requests_to(server, phone, 3)


async def test_delivery_fails_after_sms_max_attempts_of_503(start_server: StartServer) -> None:
    server = await start_server(sms_max_attempts=2)
    server.gateway.reject_all(503)
    phone = random_phone()
    agreement = await create(server, phone=phone)

    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_FAILED)

    await _requests_to(server, phone, 2)
    assert len({sms.message_id for sms in sms_to(server, phone)}) == 1


# -- a new code while the last one waits for a retry ------------------------------------------


async def test_a_new_code_goes_out_after_the_last_one_never_before_it(
    start_server: StartServer,
) -> None:
    # The first code meets 503s and waits for its retries; the client asks for a new one.
    # Every code is handed to the gateway (the contract's "at least once"), and the one that
    # reaches the phone last is the one that works.
    server = await start_server(sms_max_attempts=50, sms_retry_max_delay_seconds=5)
    server.gateway.reject_all(503)
    phone = random_phone()
    agreement = await create(server, phone=phone)

    async def retried() -> bool:
        return len(sms_to(server, phone)) >= 3

    await eventually(retried)
    old = sms_to(server, phone)[0].message_id
    await send_otp(server, agreement.reference)
    server.gateway.reset()
    # The next request is answered late: sent side by side, the new code would overtake it.
    server.gateway.delay_next(1, 0.3)
    await delivery_becomes(server, agreement.reference, pb.OTP_DELIVERY_STATUS_SENT)

    delivered = [sms.message_id for sms in server.gateway.delivered if sms.phone == phone]
    assert len(delivered) == 2 and delivered[0] == old
    tried = [sms.message_id for sms in sms_to(server, phone)]
    assert old not in tried[tried.index(delivered[1]) :]  # nothing of the old one after the new
    code = await code_for(server, phone, index=1)
    confirmed = await server.agreements.ConfirmOtp(
        pb.ConfirmOtpRequest(reference=agreement.reference, code=code)
    )
    assert confirmed.agreement.status == pb.AGREEMENT_STATUS_CONFIRMED
