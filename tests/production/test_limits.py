"""Limits that protect the service: concurrent RPCs (ONBOARDING_MAX_CONCURRENT_RPCS), message
size (max_message_bytes), and the caller's deadline, which ends the work without leaving half
of it behind."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.entrypoints.grpc.observer import ObservedServer, RpcObserver
from tests.conftest import StartServer, eventually, random_client, random_phone
from tests.e2e.helpers import details_of
from tests.e2e.test_agreement_support import other_code
from tests.e2e.test_inn_helpers import FOUND, find, number, person
from tests.fakes.nalog import found, slow, valid_inn
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.tcp_proxy import TcpProxy
from tests.faults.conftest import Servers, target_of, through


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def unknown_reference() -> pb.GetAgreementRequest:
    return pb.GetAgreementRequest(reference=str(uuid.uuid4()))


async def test_beyond_the_concurrency_limit_a_call_is_refused_at_once(
    start_server: StartServer,
) -> None:
    server = await start_server(max_concurrent_rpcs=2, inn_wait_seconds=5, nalog_timeout_seconds=5)
    docs = [number(), number()]
    for doc in docs:
        server.nalog.script(doc, slow(2, then=found(valid_inn())))
    holding = [asyncio.create_task(find(server, person(doc), timeout=10)) for doc in docs]
    try:

        async def both_searched() -> bool:
            return all(server.nalog.finds[doc] for doc in docs)

        await eventually(both_searched, timeout=5)

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server.agreements.GetAgreement(unknown_reference(), timeout=5)
        elapsed = time.monotonic() - started

        details = details_of(refused.value)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "TOO_MANY_CONCURRENT_RPCS"
        assert "x-request-id" in details.trailers
        assert elapsed < 1.0
    finally:
        lookups = await asyncio.wait_for(asyncio.gather(*holding), 15)
    assert [lookup.status for lookup in lookups] == [FOUND, FOUND]


async def test_a_freed_slot_serves_again(start_server: StartServer) -> None:
    server = await start_server(max_concurrent_rpcs=2, inn_wait_seconds=5, nalog_timeout_seconds=5)
    doc = number()
    server.nalog.script(doc, slow(1, then=found(valid_inn())))
    holding = [asyncio.create_task(find(server, person(doc), timeout=10)) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*holding), 15)

    code = await code_of(server.agreements.GetAgreement(unknown_reference(), timeout=5))

    assert code == grpc.StatusCode.NOT_FOUND


async def test_a_refused_call_is_logged_and_counted(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(max_concurrent_rpcs=1, inn_wait_seconds=5, nalog_timeout_seconds=5)
    doc = number()
    server.nalog.script(doc, slow(1, then=found(valid_inn())))
    refused_before = _rpcs_counted("GetAgreement", "RESOURCE_EXHAUSTED")
    holding = asyncio.create_task(find(server, person(doc), timeout=10))

    async def searched() -> bool:
        return bool(server.nalog.finds[doc])

    await eventually(searched, timeout=5)
    with caplog.at_level(logging.INFO, logger="onboarding.rpc"):
        code = await code_of(server.agreements.GetAgreement(unknown_reference(), timeout=5))
    await asyncio.wait_for(holding, 15)

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _rpcs_counted("GetAgreement", "RESOURCE_EXHAUSTED") == refused_before + 1
    lines = [r for r in caplog.records if getattr(r, "rpc_method", "").endswith("/GetAgreement")]
    assert [r.grpc_code for r in lines] == ["RESOURCE_EXHAUSTED"]  # type: ignore[attr-defined]


async def test_a_health_check_is_answered_at_the_limit(start_server: StartServer) -> None:
    server = await start_server(max_concurrent_rpcs=1, inn_wait_seconds=5, nalog_timeout_seconds=5)
    doc = number()
    server.nalog.script(doc, slow(1, then=found(valid_inn())))
    holding = asyncio.create_task(find(server, person(doc), timeout=10))

    async def searched() -> bool:
        return bool(server.nalog.finds[doc])

    await eventually(searched, timeout=5)
    health = health_pb2_grpc.HealthStub(server.channel)
    probes = [
        await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        for name in ("liveness", "")
    ]
    refused = await code_of(server.agreements.GetAgreement(unknown_reference(), timeout=5))
    await asyncio.wait_for(holding, 15)

    assert [probe.status for probe in probes] == [health_pb2.HealthCheckResponse.SERVING] * 2
    assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_open_health_watch_takes_no_place(start_server: StartServer) -> None:
    server = await start_server(max_concurrent_rpcs=1)
    health = health_pb2_grpc.HealthStub(server.channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(service="")) for _ in range(2)]
    firsts = [await asyncio.wait_for(watch.read(), 5) for watch in watches]

    code = await code_of(server.agreements.GetAgreement(unknown_reference(), timeout=5))
    for watch in watches:
        watch.cancel()

    assert [first.status for first in firsts] == [health_pb2.HealthCheckResponse.SERVING] * 2
    assert code == grpc.StatusCode.NOT_FOUND


async def test_an_open_reflection_stream_holds_a_place_too(start_server: StartServer) -> None:
    server = await start_server(max_concurrent_rpcs=1)
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    stream = stub.ServerReflectionInfo(timeout=10)
    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await asyncio.wait_for(stream.read(), 5)
    assert listed.list_services_response.service

    while_open = await code_of(server.agreements.GetAgreement(unknown_reference(), timeout=5))
    second = stub.ServerReflectionInfo(timeout=10)
    await second.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(second.read(), 5)
    await stream.done_writing()
    assert await asyncio.wait_for(stream.read(), 5) == grpc.aio.EOF

    async def served_again() -> bool:
        code = await code_of(server.agreements.GetAgreement(unknown_reference(), timeout=5))
        return code == grpc.StatusCode.NOT_FOUND

    assert while_open == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details_of(refused.value).reason == "TOO_MANY_CONCURRENT_RPCS"
    await eventually(served_again, timeout=5)


async def test_a_stream_written_by_a_coroutine_holds_a_place_too() -> None:
    """grpc runs a coroutine stream handler (one that writes with ``context.write``) differently
    from an async generator; the limit wraps either kind. Our one such handler is health's
    Watch, which takes no place, so this serves a handler of that kind of its own."""
    hold = asyncio.Event()

    async def stream(_request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.write(b"first")
        await hold.wait()

    async def unary(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return b"answer"

    handlers = grpc.method_handlers_generic_handler(
        "test.Limits",
        {
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
        },
    )
    server = grpc.aio.server()
    ObservedServer(server, RpcObserver(None, max_concurrent_rpcs=1)).add_generic_rpc_handlers(
        (handlers,)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call_stream = channel.unary_stream("/test.Limits/Stream")
            call_unary = channel.unary_unary("/test.Limits/Unary")
            open_stream = call_stream(b"", timeout=10)
            first = await asyncio.wait_for(open_stream.read(), 5)
            while_open = await code_of(call_unary(b"", timeout=5))
            hold.set()
            await open_stream.code()
            after = await call_unary(b"", timeout=5)
    finally:
        await server.stop(None)

    assert first == b"first"
    assert while_open == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert after == b"answer"


def _rpcs_counted(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "onboarding_rpc_requests_total",
        {
            "service": "onboarding.agreement.v1.AgreementService",
            "method": method,
            "code": code,
            "caller": "anonymous",
        },
    )
    return value or 0.0


async def test_an_oversized_request_is_refused_unprocessed(start_server: StartServer) -> None:
    server = await start_server(max_message_bytes=1024)
    phone = random_phone()
    request = pb.CreateAgreementRequest(id_hash="h" * 2000, phone=phone)

    code = await code_of(server.agreements.CreateAgreement(request, timeout=5))
    await asyncio.sleep(0.5)  # time for a (wrongly) queued SMS to go out

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [sms for sms in server.gateway.requests if sms.phone == phone] == []


async def test_a_request_under_the_size_limit_is_served(start_server: StartServer) -> None:
    server = await start_server(max_message_bytes=1024)
    phone = random_phone()
    request = pb.CreateAgreementRequest(id_hash=random_client(), phone=phone)

    answer = await server.agreements.CreateAgreement(request, timeout=5)

    assert answer.agreement.status == pb.AGREEMENT_STATUS_PENDING
    await server.gateway.wait_for(1)  # leave nothing queued for later tests


@pytest.mark.slow
@pytest.mark.postgres
async def test_a_deadline_passed_on_a_hanging_database_leaves_nothing_behind(
    servers: Servers, fault_database: str, gateway: FakeSmsGateway
) -> None:
    host, port = target_of(fault_database)
    async with TcpProxy(host, port) as proxy:
        server = await servers.start(through(fault_database, proxy.port))
        client, phone = random_client(), random_phone()
        await proxy.blackhole()

        started = time.monotonic()
        code = await code_of(
            server.agreements.CreateAgreement(
                pb.CreateAgreementRequest(id_hash=client, phone=phone), timeout=0.5
            )
        )
        elapsed = time.monotonic() - started

        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < 1.5
        await proxy.up()
        await server.wait_serving(timeout=30)
        listed = await _list_when_available(server.agreements, client)
        await asyncio.sleep(1.0)  # outbox poll is 0.2 s: a stray SMS would have gone by now

    assert list(listed.agreements) == []
    assert [sms for sms in gateway.requests if sms.phone == phone] == []


async def _list_when_available(stub: object, client: str) -> pb.ListAgreementsResponse:
    """ListAgreements, retried while the server's pool still holds connections the blackhole
    broke (UNAVAILABLE), for at most 20 s."""
    deadline = time.monotonic() + 20
    request = pb.ListAgreementsRequest(id_hash=client, page_size=10)
    while True:
        try:
            return await stub.ListAgreements(request, timeout=5)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_confirm_otp_racing_deadlines_keeps_attempts_consistent(
    start_server: StartServer,
) -> None:
    server = await start_server(otp_max_attempts=10)
    phone = random_phone()
    created = await server.agreements.CreateAgreement(
        pb.CreateAgreementRequest(id_hash=random_client(), phone=phone), timeout=5
    )
    reference = created.agreement.reference
    await server.gateway.wait_for(1)
    code = server.gateway.codes_for(phone)[-1]
    wrong = pb.ConfirmOtpRequest(reference=reference, code=other_code(code))
    answered_invalid = 0
    for timeout in (0.002, 0.005, 0.01, 0.02, 0.04, 0.08):
        try:
            await server.agreements.ConfirmOtp(wrong, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            assert error.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ), error
            answered_invalid += error.code() == grpc.StatusCode.INVALID_ARGUMENT
    await asyncio.sleep(0.3)  # whatever a cancelled handler was doing has ended

    get = await server.agreements.GetAgreement(
        pb.GetAgreementRequest(reference=reference), timeout=5
    )
    remaining = get.agreement.otp_attempts_remaining
    assert 10 - 6 <= remaining <= 10 - answered_invalid
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await server.agreements.ConfirmOtp(wrong, timeout=5)
    assert details_of(caught.value).metadata == {"attempts_remaining": str(remaining - 1)}
    confirmed = await server.agreements.ConfirmOtp(
        pb.ConfirmOtpRequest(reference=reference, code=code), timeout=5
    )
    assert confirmed.agreement.status == pb.AGREEMENT_STATUS_CONFIRMED
