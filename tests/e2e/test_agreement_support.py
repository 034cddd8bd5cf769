"""Helpers shared by the end-to-end tests of AgreementService (the ``test_agreement_*`` files).

This module holds no tests. The session database is shared by every test, and a message left
queued by an earlier test may reach a later test's gateway, so these helpers look at the SMS
sent to one (fresh) phone number rather than at everything the gateway received.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, eventually, random_client, random_phone
from tests.e2e.helpers import ErrorDetails, details_of
from tests.fakes.sms_gateway import ReceivedSms

AGREEMENT_SERVICE = "onboarding.agreement.v1.AgreementService"


async def create(
    server: RunningServer,
    *,
    phone: str | None = None,
    client: str | None = None,
    request_id: str = "",
) -> pb.Agreement:
    """CreateAgreement with a fresh client and phone unless given; the new agreement."""
    response = await server.agreements.CreateAgreement(
        pb.CreateAgreementRequest(
            id_hash=client or random_client(),
            phone=phone or random_phone(),
            request_id=request_id,
        )
    )
    return response.agreement


async def get(server: RunningServer, reference: str) -> pb.Agreement:
    response = await server.agreements.GetAgreement(pb.GetAgreementRequest(reference=reference))
    return response.agreement


async def confirm(server: RunningServer, reference: str, code: str) -> pb.Agreement:
    response = await server.agreements.ConfirmOtp(
        pb.ConfirmOtpRequest(reference=reference, code=code)
    )
    return response.agreement


async def send_otp(server: RunningServer, reference: str) -> pb.Agreement:
    response = await server.agreements.SendOtp(pb.SendOtpRequest(reference=reference))
    return response.agreement


async def revoke(server: RunningServer, reference: str) -> pb.Agreement:
    response = await server.agreements.RevokeAgreement(
        pb.RevokeAgreementRequest(reference=reference)
    )
    return response.agreement


async def error_of(call: Awaitable[Any]) -> ErrorDetails:
    """The rich details of the error the call must fail with."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return details_of(raised.value)


def assert_error(details: ErrorDetails, code: grpc.StatusCode, reason: str) -> None:
    assert (details.code, details.reason) == (code, reason), details


def violated_fields(details: ErrorDetails) -> list[str]:
    assert details.bad_request is not None, details
    return [violation.field for violation in details.bad_request.field_violations]


def sms_to(server: RunningServer, phone: str) -> list[ReceivedSms]:
    """Every request the gateway received for ``phone`` (E.164), whatever it answered."""
    return [sms for sms in server.gateway.requests if sms.phone == phone]


async def code_for(server: RunningServer, phone: str, index: int = 0) -> str:
    """The ``index``-th code delivered to ``phone``, waiting for it to arrive."""

    async def arrived() -> bool:
        return len(server.gateway.codes_for(phone)) > index

    await eventually(arrived)
    return server.gateway.codes_for(phone)[index]


async def delivery_becomes(server: RunningServer, reference: str, status: int) -> pb.Agreement:
    """Waits until GetAgreement shows this ``otp_delivery_status``; the agreement then."""
    seen: list[pb.Agreement] = []

    async def reached() -> bool:
        seen.append(await get(server, reference))
        return seen[-1].otp_delivery_status == status

    await eventually(reached)
    return seen[-1]


def other_code(code: str) -> str:
    """A well-formed code that is not ``code``."""
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def national_notation(e164: str) -> str:
    """``+79161234567`` as ``8 (916) 123-45-67``."""
    digits = e164.removeprefix("+7")
    return f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}"


def assert_no_phone_in(details: ErrorDetails, phone: str) -> None:
    """Neither the message nor any metadata or trailer holds the number (in any notation)."""
    digits = re.sub(r"\D", "", phone)
    shown = [details.message, *details.metadata.values(), *details.trailers.values()]
    for text in shown:
        assert digits[-10:] not in re.sub(r"\D", "", text), text
        assert phone not in text, text
