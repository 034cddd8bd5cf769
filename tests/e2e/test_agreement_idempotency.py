"""CreateAgreement with a request_id: repeats return the first agreement and send nothing more;
the same key with other fields is a conflict."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from tests.conftest import RunningServer, random_client, random_phone
from tests.e2e.test_agreement_support import (
    assert_error,
    assert_no_phone_in,
    code_for,
    confirm,
    create,
    error_of,
    national_notation,
    sms_to,
)


def _request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


async def _only_one_sms(server: RunningServer, phone: str) -> None:
    await code_for(server, phone)
    await asyncio.sleep(0.3)  # a second code, had one been queued, would be sent by now
    assert len(sms_to(server, phone)) == 1


async def test_a_repeat_with_the_same_fields_returns_the_same_agreement(
    server: RunningServer,
) -> None:
    phone, client, request_id = random_phone(), random_client(), _request_id()
    first = await create(server, phone=phone, client=client, request_id=request_id)

    again = await create(
        server, phone=national_notation(phone), client=client, request_id=request_id
    )

    assert again.reference == first.reference
    assert again.create_time == first.create_time
    assert again.otp_send_time == first.otp_send_time
    await _only_one_sms(server, phone)


async def test_a_repeat_sends_no_second_code(server: RunningServer) -> None:
    phone, client, request_id = random_phone(), random_client(), _request_id()
    first = await create(server, phone=phone, client=client, request_id=request_id)
    code = await code_for(server, phone)

    await create(server, phone=phone, client=client, request_id=request_id)

    await _only_one_sms(server, phone)
    confirmed = await confirm(server, first.reference, code)
    assert confirmed.status == pb.AGREEMENT_STATUS_CONFIRMED


async def test_a_repeat_after_confirmation_returns_the_confirmed_agreement(
    server: RunningServer,
) -> None:
    phone, client, request_id = random_phone(), random_client(), _request_id()
    first = await create(server, phone=phone, client=client, request_id=request_id)
    await confirm(server, first.reference, await code_for(server, phone))

    again = await create(server, phone=phone, client=client, request_id=request_id)

    assert again.reference == first.reference
    assert again.status == pb.AGREEMENT_STATUS_CONFIRMED
    await _only_one_sms(server, phone)


async def test_the_same_request_id_with_another_phone_is_a_conflict(
    server: RunningServer,
) -> None:
    phone, client, request_id = random_phone(), random_client(), _request_id()
    await create(server, phone=phone, client=client, request_id=request_id)
    other_phone = random_phone()

    error = await error_of(create(server, phone=other_phone, client=client, request_id=request_id))

    assert_error(error, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT")
    assert_no_phone_in(error, other_phone)
    assert_no_phone_in(error, phone)
    assert sms_to(server, other_phone) == []
    await _only_one_sms(server, phone)


async def test_the_same_request_id_with_another_client_is_a_conflict(
    server: RunningServer,
) -> None:
    phone, client, request_id = random_phone(), random_client(), _request_id()
    await create(server, phone=phone, client=client, request_id=request_id)
    other_client = random_client()

    error = await error_of(create(server, phone=phone, client=other_client, request_id=request_id))

    assert_error(error, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT")
    listed = await server.agreements.ListAgreements(pb.ListAgreementsRequest(id_hash=other_client))
    assert list(listed.agreements) == []
    await _only_one_sms(server, phone)


async def test_without_a_request_id_each_create_makes_a_new_agreement(
    server: RunningServer,
) -> None:
    phone, client = random_phone(), random_client()

    first = await create(server, phone=phone, client=client)
    second = await create(server, phone=phone, client=client)

    assert first.reference != second.reference
    await code_for(server, phone, index=1)


async def test_twenty_concurrent_creates_with_one_request_id_make_one_agreement(
    server: RunningServer,
) -> None:
    phone, client, request_id = random_phone(), random_client(), _request_id()

    results = await asyncio.gather(
        *(create(server, phone=phone, client=client, request_id=request_id) for _ in range(20))
    )

    assert len({agreement.reference for agreement in results}) == 1
    listed = await server.agreements.ListAgreements(pb.ListAgreementsRequest(id_hash=client))
    assert [a.reference for a in listed.agreements] == [results[0].reference]
    await _only_one_sms(server, phone)
