"""Codes that cannot be checked: expired ones, and malformed ones (a bad request, never a try)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, StartServer, random_phone
from tests.e2e.test_agreement_support import (
    assert_error,
    code_for,
    confirm,
    create,
    error_of,
    get,
    other_code,
    send_otp,
    violated_fields,
)

MALFORMED_CODES = ["12a456", "1234567", "12345", "", " 123456", "１２３４５６"]


async def test_the_right_code_is_refused_once_it_has_expired(start_server: StartServer) -> None:
    server = await start_server(otp_ttl_seconds=0.3)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    await asyncio.sleep(0.4)

    error = await error_of(confirm(server, agreement.reference, code))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "OTP_EXPIRED")
    assert (await get(server, agreement.reference)).status == pb.AGREEMENT_STATUS_PENDING


async def test_a_wrong_code_after_expiry_is_expired_too_and_costs_no_attempt(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_ttl_seconds=0.3)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    await asyncio.sleep(0.4)

    error = await error_of(confirm(server, agreement.reference, other_code(code)))

    assert_error(error, grpc.StatusCode.FAILED_PRECONDITION, "OTP_EXPIRED")
    assert (await get(server, agreement.reference)).otp_attempts_remaining == 3


async def test_send_otp_after_expiry_gives_a_code_that_works(start_server: StartServer) -> None:
    server = await start_server(otp_ttl_seconds=0.3)
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await code_for(server, phone)
    await asyncio.sleep(0.4)

    await send_otp(server, agreement.reference)
    new = await code_for(server, phone, index=1)

    confirmed = await confirm(server, agreement.reference, new)
    assert confirmed.status == pb.AGREEMENT_STATUS_CONFIRMED


async def test_expire_time_follows_the_configured_ttl(start_server: StartServer) -> None:
    server = await start_server(otp_ttl_seconds=0.3)
    phone = random_phone()

    agreement = await create(server, phone=phone)

    lifetime = agreement.otp_expire_time.ToDatetime() - agreement.otp_send_time.ToDatetime()
    assert lifetime.total_seconds() == pytest.approx(0.3)
    await code_for(server, phone)


@pytest.mark.parametrize("malformed", MALFORMED_CODES)
async def test_a_malformed_code_is_a_bad_request_on_field_code(
    server: RunningServer, malformed: str
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    await code_for(server, phone)

    error = await error_of(confirm(server, agreement.reference, malformed))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert violated_fields(error) == ["code"]


@pytest.mark.parametrize("malformed", ["12a456", "1234567", ""])
async def test_a_malformed_code_costs_no_attempt(server: RunningServer, malformed: str) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    await error_of(confirm(server, agreement.reference, other_code(code)))  # 2 tries left

    await error_of(confirm(server, agreement.reference, malformed))

    assert (await get(server, agreement.reference)).otp_attempts_remaining == 2
    confirmed = await confirm(server, agreement.reference, code)
    assert confirmed.status == pb.AGREEMENT_STATUS_CONFIRMED


async def test_a_malformed_code_is_a_bad_request_even_when_attempts_are_exhausted(
    server: RunningServer,
) -> None:
    phone = random_phone()
    agreement = await create(server, phone=phone)
    code = await code_for(server, phone)
    for _ in range(3):
        await error_of(confirm(server, agreement.reference, other_code(code)))

    error = await error_of(confirm(server, agreement.reference, "12a456"))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert violated_fields(error) == ["code"]
