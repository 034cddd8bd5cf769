"""Authentication by bearer token (ONBOARDING_AUTH_TOKENS): who may call, and who called.

Every RPC but health needs ``authorization: Bearer <token>``; a missing or wrong token gets
UNAUTHENTICATED with reason UNAUTHENTICATED. The caller's name (the part before ``:``) goes into
the RPC's log record and its metrics.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.inn.v1 import inn_pb2
from tests.conftest import RunningServer, StartServer, eventually
from tests.e2e.helpers import details_of

TOKENS = "billing:billing-token-0123456789,bare-token-abcdefghij"
BILLING = (("authorization", "Bearer billing-token-0123456789"),)
BARE = (("authorization", "Bearer bare-token-abcdefghij"),)
AGREEMENTS = "onboarding.agreement.v1.AgreementService"
INNS = "onboarding.inn.v1.InnService"
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server(auth_tokens=TOKENS)


def get_request() -> pb.GetAgreementRequest:
    """A call that reaches the service: a reference nobody has (NOT_FOUND once let in)."""
    return pb.GetAgreementRequest(reference=str(uuid.uuid4()))


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def refusal(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code(), details_of(error).reason
    raise AssertionError("the call was let in")


async def test_a_call_without_a_token_is_unauthenticated(server: RunningServer) -> None:
    code, reason = await refusal(server.agreements.GetAgreement(get_request(), timeout=5))

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_a_wrong_token_is_unauthenticated(server: RunningServer) -> None:
    wrong = (("authorization", "Bearer billing-token-0123456788"),)

    code, reason = await refusal(
        server.agreements.GetAgreement(get_request(), metadata=wrong, timeout=5)
    )

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_a_token_without_the_bearer_scheme_is_unauthenticated(
    server: RunningServer,
) -> None:
    bare_header = (("authorization", "billing-token-0123456789"),)

    code, reason = await refusal(
        server.agreements.GetAgreement(get_request(), metadata=bare_header, timeout=5)
    )

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_the_right_bearer_token_is_let_in(server: RunningServer) -> None:
    code = await code_of(server.agreements.GetAgreement(get_request(), metadata=BILLING, timeout=5))

    assert code == grpc.StatusCode.NOT_FOUND  # past authentication, into the service


async def test_a_bare_token_is_let_in(server: RunningServer) -> None:
    code = await code_of(server.agreements.GetAgreement(get_request(), metadata=BARE, timeout=5))

    assert code == grpc.StatusCode.NOT_FOUND


async def test_the_inn_service_needs_a_token_too(server: RunningServer) -> None:
    request = inn_pb2.GetInnLookupRequest(request_id=str(uuid.uuid4()))

    without = await refusal(server.inn.GetInnLookup(request, timeout=5))
    with_token = await code_of(server.inn.GetInnLookup(request, metadata=BILLING, timeout=5))

    assert without == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert with_token == grpc.StatusCode.NOT_FOUND


async def test_health_needs_no_token(server: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)

    answer = await health.Check(health_pb2.HealthCheckRequest(service=AGREEMENTS), timeout=5)

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_watch_needs_no_token(server: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)

    first = await watch.read()
    watch.cancel()

    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def list_services(call: grpc.aio.StreamStreamCall) -> list[str]:
    names = []
    async for answer in call:
        names.extend(s.name for s in answer.list_services_response.service)
    return names


def reflection_request() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    return requests()


# The refused stream calls send no request. The server refuses before reading any, and a client
# still writing one when the refusal lands may report its own failed write (INTERNAL, "Failed
# execute_batch") instead of the server's status: CI saw that once in grpcio's aio client.


async def test_reflection_without_a_token_is_unauthenticated(server: RunningServer) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)

    code, reason = await refusal(stub.ServerReflectionInfo(timeout=5).read())

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_reflection_with_a_token_lists_the_services(server: RunningServer) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)

    names = await list_services(
        stub.ServerReflectionInfo(reflection_request(), metadata=BILLING, timeout=5)
    )

    assert {AGREEMENTS, INNS} <= set(names)


async def test_reflection_v1_without_a_token_is_unauthenticated(server: RunningServer) -> None:
    call = server.channel.stream_stream(
        REFLECTION_V1,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(timeout=5)

    code, reason = await refusal(call.read())

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_without_tokens_configured_no_token_is_needed(start_server: StartServer) -> None:
    open_server = await start_server()

    code = await code_of(open_server.agreements.GetAgreement(get_request(), timeout=5))

    assert code == grpc.StatusCode.NOT_FOUND


def rpc_count(method: str, code: str, caller: str) -> float:
    labels = {"service": AGREEMENTS, "method": method, "code": code, "caller": caller}
    return REGISTRY.get_sample_value("onboarding_rpc_requests_total", labels) or 0.0


async def test_the_caller_is_counted_in_the_rpc_metrics(server: RunningServer) -> None:
    billing_before = rpc_count("GetAgreement", "NOT_FOUND", "billing")
    default_before = rpc_count("GetAgreement", "NOT_FOUND", "default")
    refused_before = rpc_count("GetAgreement", "UNAUTHENTICATED", "anonymous")

    for _ in range(3):
        await code_of(server.agreements.GetAgreement(get_request(), metadata=BILLING, timeout=5))
    await code_of(server.agreements.GetAgreement(get_request(), metadata=BARE, timeout=5))
    await code_of(server.agreements.GetAgreement(get_request(), timeout=5))

    # An aborted call can reach the client a moment before the server has counted it.
    async def counted() -> bool:
        return (
            rpc_count("GetAgreement", "NOT_FOUND", "billing") - billing_before == 3
            and rpc_count("GetAgreement", "NOT_FOUND", "default") - default_before == 1
            and rpc_count("GetAgreement", "UNAUTHENTICATED", "anonymous") - refused_before == 1
        )

    await eventually(counted, timeout=5)


async def rpc_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The access log's records. A failed call's line is written just after its status has
    been sent, so it may trail the client's answer by a moment: wait for it."""

    async def logged() -> bool:
        return any(r.name == "onboarding.rpc" for r in caplog.records)

    await eventually(logged, timeout=5)
    return [r for r in caplog.records if r.name == "onboarding.rpc"]


async def test_the_caller_is_named_in_the_rpc_log_record(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onboarding.rpc")

    await code_of(server.agreements.GetAgreement(get_request(), metadata=BILLING, timeout=5))

    records = await rpc_records(caplog)
    assert records, "no RPC log record"
    assert getattr(records[-1], "caller", None) == "billing"


async def test_the_rpc_log_record_names_method_and_code(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="onboarding.rpc")

    await code_of(server.agreements.GetAgreement(get_request(), metadata=BILLING, timeout=5))

    records = await rpc_records(caplog)
    assert records, "no RPC log record"
    record = records[-1]
    assert getattr(record, "rpc_method", None) == f"/{AGREEMENTS}/GetAgreement"
    assert getattr(record, "grpc_code", None) == "NOT_FOUND"
    assert isinstance(getattr(record, "duration_ms", None), float)
