"""``x-request-id``: every error answer carries one in its trailing metadata (a sane one given by
the caller is echoed, anything else is replaced by a fresh one); a successful answer carries
none."""

from __future__ import annotations

import re
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.inn.v1 import inn_pb2
from tests.conftest import RunningServer, StartServer, random_client

SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


async def request_ids_of(call: grpc.aio.UnaryUnaryCall) -> list[str]:
    """The x-request-ids in the answer's trailing metadata, whether the call succeeded or
    failed."""
    try:
        await call
    except grpc.aio.AioRpcError:
        pass
    metadata = await call.trailing_metadata()
    return [v for k, v in (metadata or ()) if k == "x-request-id"]


async def request_id_of(call: grpc.aio.UnaryUnaryCall) -> str:
    values = await request_ids_of(call)
    assert len(values) == 1, f"x-request-id in trailing metadata: {values}"
    return values[0]


def get(server: RunningServer, **kwargs: object) -> grpc.aio.UnaryUnaryCall:
    request = pb.GetAgreementRequest(reference=str(uuid.uuid4()))
    return server.agreements.GetAgreement(request, timeout=5, **kwargs)


@pytest.mark.parametrize("given", [None, "billing-42"])
async def test_a_successful_answer_carries_no_request_id(
    server: RunningServer, given: str | None
) -> None:
    request = pb.ListAgreementsRequest(id_hash=random_client(), page_size=10)
    metadata = (("x-request-id", given),) if given else None

    call = server.agreements.ListAgreements(request, metadata=metadata, timeout=5)

    assert await request_ids_of(call) == []


async def test_an_error_answer_carries_a_request_id(server: RunningServer) -> None:
    rid = await request_id_of(get(server))  # NOT_FOUND

    assert SANE.fullmatch(rid)


async def test_an_invalid_request_answer_carries_a_request_id(server: RunningServer) -> None:
    call = server.agreements.GetAgreement(pb.GetAgreementRequest(reference="nope"), timeout=5)

    assert SANE.fullmatch(await request_id_of(call))


async def test_an_inn_error_answer_carries_a_request_id(server: RunningServer) -> None:
    inn_call = server.inn.GetInnLookup(
        inn_pb2.GetInnLookupRequest(request_id=str(uuid.uuid4())), timeout=5
    )  # NOT_FOUND

    assert SANE.fullmatch(await request_id_of(inn_call))


async def test_a_health_answer_carries_no_request_id(server: RunningServer) -> None:
    health_call = health_pb2_grpc.HealthStub(server.channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )

    assert await request_ids_of(health_call) == []


async def test_an_unauthenticated_answer_carries_a_request_id(start_server: StartServer) -> None:
    server = await start_server(auth_tokens="billing:billing-token-0123456789")

    rid = await request_id_of(get(server, metadata=(("x-request-id", "refused-1"),)))

    assert rid == "refused-1"


async def test_each_call_gets_its_own_request_id(server: RunningServer) -> None:
    ids = {await request_id_of(get(server)) for _ in range(5)}

    assert len(ids) == 5


@pytest.mark.parametrize(
    "given",
    ["abc", "req-2025.01:02_x", "A" * 64, str(uuid.uuid4())],
)
async def test_a_sane_request_id_is_echoed(server: RunningServer, given: str) -> None:
    rid = await request_id_of(get(server, metadata=(("x-request-id", given),)))

    assert rid == given


@pytest.mark.parametrize(
    "given",
    ["has spaces in it", "x" * 200, "A" * 65, "semi;colon", "<script>", "a/b"],
)
async def test_an_insane_request_id_is_replaced(server: RunningServer, given: str) -> None:
    rid = await request_id_of(get(server, metadata=(("x-request-id", given),)))

    assert rid != given
    assert SANE.fullmatch(rid)
