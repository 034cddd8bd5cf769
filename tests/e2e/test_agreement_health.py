"""grpc.health.v1.Health for AgreementService: SERVING while up, NOT_SERVING once stopping."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onboarding import bootstrap
from onboarding.adapters.db import migrate
from onboarding.entrypoints.grpc.server import OnboardingServer
from tests.conftest import RunningServer, eventually
from tests.conftest import test_settings as settings_for
from tests.e2e.conftest import free_port
from tests.e2e.test_agreement_support import AGREEMENT_SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ["", AGREEMENT_SERVICE, "liveness"]


@pytest.mark.parametrize("name", NAMES, ids=["overall", "agreement-service", "liveness"])
async def test_a_running_server_is_serving(server: RunningServer, name: str) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)

    answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)

    assert answer.status == SERVING


async def test_an_unknown_service_name_is_not_found(server: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", NAMES, ids=["overall", "agreement-service", "liveness"])
async def test_a_watcher_sees_not_serving_when_the_server_stops(
    server: RunningServer, name: str
) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=name))
    assert (await asyncio.wait_for(watch.read(), 5)).status == SERVING

    await server.server.stop(grace=0.1)

    seen = []
    try:
        async with asyncio.timeout(5):
            while (answer := await watch.read()) is not grpc.aio.EOF:
                seen.append(answer.status)
    except grpc.aio.AioRpcError:
        pass  # the stream ends with the server
    assert NOT_SERVING in seen
    assert SERVING not in seen


async def test_a_stopped_server_answers_no_health_check(server: RunningServer) -> None:
    address = server.address
    await server.server.stop(grace=0.1)

    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)

    assert raised.value.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


async def test_health_is_not_serving_until_the_database_has_answered() -> None:
    # A database that accepts connections and never answers: the first check takes the whole
    # database timeout. The port is open meanwhile, and must not say SERVING.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent.getsockname()[1]}/none"
        port = free_port()
        settings = settings_for(url, grpc_port=port, database_timeout_seconds=2)
        server = OnboardingServer(bootstrap.build(settings))
        starting = asyncio.create_task(server.start())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service="")
                reply = await health.Check(request, wait_for_ready=True, timeout=5)
                assert not starting.done()  # the database has not answered yet
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
                liveness = await health.Check(health_pb2.HealthCheckRequest(service="liveness"))
                assert liveness.status == health_pb2.HealthCheckResponse.SERVING
            await starting
        finally:
            await server.stop(grace=0)


async def test_a_server_is_not_ready_until_its_migration_has_run(empty_database_url: str) -> None:
    # As when a rollout's pods start before its migration Job has finished.
    server = OnboardingServer(bootstrap.build(settings_for(empty_database_url)))
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(name: str) -> int:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                return reply.status

            assert await status("") == NOT_SERVING
            assert await status("liveness") == SERVING
            await migrate.upgrade(empty_database_url)

            async def ready() -> bool:
                return await status("") == SERVING

            await eventually(ready)
    finally:
        await server.stop(grace=0)
