"""The code rules hold under concurrent calls: tries, sends and phone quota are never overrun."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, StartServer, random_client, random_phone
from tests.e2e.helpers import details_of
from tests.e2e.test_agreement_support import (
    code_for,
    confirm,
    create,
    get,
    other_code,
    send_otp,
    sms_to,
)


async def _outcomes(calls: list[Any]) -> list[Any]:
    """Each call's result, or the (code, reason, metadata) of its error."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    outcomes = []
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            error = details_of(result)
            outcomes.append((error.code, error.reason, tuple(sorted(error.metadata.items()))))
        elif isinstance(result, BaseException):
            raise result
        else:
            outcomes.append(result)
    return outcomes


async def test_ten_concurrent_wrong_codes_get_exactly_three_tries(server: RunningServer) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    wrong = other_code(await code_for(server, phone))

    outcomes = await _outcomes([confirm(server, agreement.reference, wrong) for _ in range(10)])

    invalid = grpc.StatusCode.INVALID_ARGUMENT, "OTP_INVALID"
    exhausted = grpc.StatusCode.FAILED_PRECONDITION, "OTP_ATTEMPTS_EXHAUSTED", ()
    assert Counter(outcomes) == {
        (*invalid, (("attempts_remaining", "2"),)): 1,
        (*invalid, (("attempts_remaining", "1"),)): 1,
        (*invalid, (("attempts_remaining", "0"),)): 1,
        exhausted: 7,
    }
    assert (await get(server, agreement.reference)).otp_attempts_remaining == 0


async def test_ten_concurrent_right_codes_all_answer_confirmed_at_one_time(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)

    outcomes = await _outcomes([confirm(server, agreement.reference, code) for _ in range(10)])

    assert all(isinstance(o, pb.Agreement) for o in outcomes), outcomes
    assert {o.status for o in outcomes} == {pb.AGREEMENT_STATUS_CONFIRMED}
    assert len({o.confirm_time.ToNanoseconds() for o in outcomes}) == 1


async def test_ten_concurrent_send_otp_never_pass_the_agreement_limit(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)

    outcomes = await _outcomes([send_otp(server, agreement.reference) for _ in range(10)])

    sent = [o for o in outcomes if isinstance(o, pb.Agreement)]
    refused = [o for o in outcomes if not isinstance(o, pb.Agreement)]
    assert len(sent) == 4  # the first of the five codes went with CreateAgreement
    assert set(refused) == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_SEND_LIMIT", ())}
    assert sorted(o.otp_sends_remaining for o in sent) == [0, 1, 2, 3]
    await code_for(server, phone, index=4)
    await asyncio.sleep(0.3)
    assert len(sms_to(server, phone)) == 5


async def test_concurrent_creates_for_one_phone_never_pass_the_phone_limit(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_max_sends_per_phone_per_hour=3)
    phone = random_phone()

    outcomes = await _outcomes(
        [create(server, phone=phone, client=random_client()) for _ in range(6)]
    )

    created = [o for o in outcomes if isinstance(o, pb.Agreement)]
    refused = [o for o in outcomes if not isinstance(o, pb.Agreement)]
    assert len(created) == 3
    assert set(refused) == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "OTP_SEND_LIMIT", ())}
    await code_for(server, phone, index=2)
    await asyncio.sleep(0.3)
    assert len(sms_to(server, phone)) == 3
