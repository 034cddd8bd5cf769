"""The attempt counter and the resend rule hold under concurrent calls, on both databases."""

import asyncio
from collections import Counter

import grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, StartServer, random_client, random_phone
from tests.e2e.helpers import details_of
from tests.fakes.clock import FakeClock

CALLS = 50


async def _create(server: RunningServer) -> tuple[str, str, str]:
    phone = random_phone()
    created = await server.agreements.CreateAgreement(
        pb.CreateAgreementRequest(id_hash=random_client(), phone=phone)
    )
    await server.gateway.wait_for(1)
    return created.agreement.reference, phone, server.gateway.codes_for(phone)[-1]


async def _reasons(calls: list) -> tuple[Counter[str], list]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    unexpected = [r for r in results if isinstance(r, BaseException) and r not in errors]
    assert not unexpected, unexpected
    reasons = Counter(details_of(e).reason for e in errors)
    reasons["OK"] = len(results) - len(errors)
    return reasons, errors


async def test_concurrent_wrong_codes_use_exactly_the_allowed_tries(server: RunningServer) -> None:
    reference, _, code = await _create(server)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    reasons, errors = await _reasons(
        [
            server.agreements.ConfirmOtp(pb.ConfirmOtpRequest(reference=reference, code=wrong))
            for _ in range(CALLS)
        ]
    )
    assert reasons == Counter({"OTP_INVALID": 3, "OTP_ATTEMPTS_EXHAUSTED": CALLS - 3, "OK": 0})
    remaining = sorted(
        details_of(e).metadata["attempts_remaining"]
        for e in errors
        if details_of(e).reason == "OTP_INVALID"
    )
    assert remaining == ["0", "1", "2"]

    got = await server.agreements.GetAgreement(pb.GetAgreementRequest(reference=reference))
    assert got.agreement.status == pb.AGREEMENT_STATUS_PENDING
    assert got.agreement.otp_attempts_remaining == 0
    try:
        await server.agreements.ConfirmOtp(pb.ConfirmOtpRequest(reference=reference, code=code))
        raise AssertionError("the right code must not confirm once the tries are used up")
    except grpc.aio.AioRpcError as error:
        assert details_of(error).reason == "OTP_ATTEMPTS_EXHAUSTED"


async def test_concurrent_resends_send_exactly_one_code(start_server: StartServer) -> None:
    clock = FakeClock()
    server = await start_server(clock=clock, otp_resend_interval_seconds=60)
    reference, phone, _ = await _create(server)
    clock.advance(60)
    reasons, _ = await _reasons(
        [server.agreements.SendOtp(pb.SendOtpRequest(reference=reference)) for _ in range(CALLS)]
    )
    assert reasons == Counter({"OK": 1, "OTP_RESEND_TOO_EARLY": CALLS - 1})
    await server.gateway.wait_for(2)
    await asyncio.sleep(0.3)  # anything sent twice would have arrived by now
    assert len(server.gateway.codes_for(phone)) == 2
    assert not server.gateway.duplicate_message_ids()
