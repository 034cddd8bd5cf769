"""Requests the service refuses: unknown references and malformed fields (INVALID_REQUEST with
one BadRequest violation per bad field, nothing created, nothing sent, no phone number shown)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, random_client, random_phone
from tests.e2e.test_agreement_support import (
    assert_error,
    assert_no_phone_in,
    code_for,
    confirm,
    error_of,
    get,
    national_notation,
    revoke,
    send_otp,
    sms_to,
    violated_fields,
)

ReferenceCall = Callable[[RunningServer, str], Awaitable[Any]]
REFERENCE_CALLS: dict[str, ReferenceCall] = {
    "GetAgreement": get,
    "SendOtp": send_otp,
    "ConfirmOtp": lambda server, reference: confirm(server, reference, "123456"),
    "RevokeAgreement": revoke,
}


async def _create_error(server: RunningServer, **fields: str) -> Any:
    request = {"id_hash": random_client(), "phone": random_phone(), "request_id": "", **fields}
    return await error_of(server.agreements.CreateAgreement(pb.CreateAgreementRequest(**request)))


async def _nothing_created_or_sent(server: RunningServer, client: str, phone: str) -> None:
    """``client``: a valid client id to list, or empty when the id itself was the bad field."""
    await asyncio.sleep(0.3)  # the relay would have sent a queued code by now
    assert sms_to(server, phone) == []
    if client:
        listed = await server.agreements.ListAgreements(pb.ListAgreementsRequest(id_hash=client))
        assert list(listed.agreements) == []


# -- unknown references ----------------------------------------------------------------------


@pytest.mark.parametrize("rpc", REFERENCE_CALLS)
async def test_an_unknown_reference_is_not_found(server: RunningServer, rpc: str) -> None:
    error = await error_of(REFERENCE_CALLS[rpc](server, str(uuid.uuid4())))

    assert_error(error, grpc.StatusCode.NOT_FOUND, "AGREEMENT_NOT_FOUND")


@pytest.mark.parametrize("rpc", REFERENCE_CALLS)
@pytest.mark.parametrize("reference", ["not-a-uuid", ""])
async def test_a_malformed_reference_is_a_bad_request_on_field_reference(
    server: RunningServer, rpc: str, reference: str
) -> None:
    error = await error_of(REFERENCE_CALLS[rpc](server, reference))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert violated_fields(error) == ["reference"]


# -- CreateAgreement with bad fields ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id_hash", ""),
        ("id_hash", "x" * 129),
        ("id_hash", "a\nb"),
        ("phone", "abc"),
        ("phone", ""),
        ("phone", "+7916123"),
        ("request_id", "r" * 65),
    ],
    ids=[
        "empty-id_hash",
        "long-id_hash",
        "control-char-id_hash",
        "letters-phone",
        "empty-phone",
        "short-phone",
        "long-request_id",
    ],
)
async def test_create_with_one_bad_field_names_just_that_field(
    server: RunningServer, field: str, value: str
) -> None:
    client, phone = random_client(), random_phone()
    fields = {"id_hash": client, "phone": phone, field: value}

    error = await _create_error(server, **fields)

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert violated_fields(error) == [field]
    await _nothing_created_or_sent(server, client if field != "id_hash" else "", phone)


async def test_create_with_three_bad_fields_gets_three_violations(server: RunningServer) -> None:
    error = await _create_error(server, id_hash="", phone="abc", request_id="r" * 65)

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert sorted(violated_fields(error)) == ["id_hash", "phone", "request_id"]


async def test_the_longest_allowed_fields_are_accepted(server: RunningServer) -> None:
    phone, client = random_phone(), "c" * 128

    created = await server.agreements.CreateAgreement(
        pb.CreateAgreementRequest(id_hash=client, phone=phone, request_id=uuid.uuid4().hex * 2)
    )

    assert created.agreement.id_hash == client
    await code_for(server, phone)
    await revoke(server, created.agreement.reference)


@pytest.mark.parametrize("bad", ["id_hash", "request_id"])
async def test_create_error_never_shows_the_phone_number(server: RunningServer, bad: str) -> None:
    phone = random_phone()
    given = national_notation(phone)
    fields = {"phone": given, bad: "" if bad == "id_hash" else "r" * 65}

    error = await _create_error(server, **fields)

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert_no_phone_in(error, given)
    assert_no_phone_in(error, phone)


@pytest.mark.parametrize("invalid_phone", ["+7916123", "+79161234567890123", "8 916 ABC-45-67"])
async def test_an_invalid_phone_is_not_echoed_in_the_error(
    server: RunningServer, invalid_phone: str
) -> None:
    error = await _create_error(server, phone=invalid_phone)

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert violated_fields(error) == ["phone"]
    assert_no_phone_in(error, invalid_phone)
    assert error.bad_request is not None
    for violation in error.bad_request.field_violations:
        assert invalid_phone not in violation.description


# -- ListAgreements with bad fields ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"page_size": -1}, ["page_size"]),
        ({"page_token": "garbage!"}, ["page_token"]),
        ({"id_hash": ""}, ["id_hash"]),
        ({"id_hash": "x" * 129}, ["id_hash"]),
        (
            {"id_hash": "", "page_size": -1, "page_token": "garbage!"},
            ["id_hash", "page_size", "page_token"],
        ),
    ],
    ids=["negative-size", "garbage-token", "empty-id_hash", "long-id_hash", "all-three"],
)
async def test_list_with_bad_fields_names_each_of_them(
    server: RunningServer, fields: dict[str, Any], expected: list[str]
) -> None:
    request = pb.ListAgreementsRequest(**{"id_hash": random_client(), **fields})

    error = await error_of(server.agreements.ListAgreements(request))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert sorted(violated_fields(error)) == expected
