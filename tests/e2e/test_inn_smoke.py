"""InnService is served: health, reflection, and one lookup end to end."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import RunningServer
from tests.e2e.test_inn_helpers import FOUND, find, get, number, person, request_id
from tests.fakes.nalog import found, valid_inn

INN_SERVICE = "onboarding.inn.v1.InnService"


async def test_health_answers_serving_for_the_inn_service(server: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)

    answer = await health.Check(health_pb2.HealthCheckRequest(service=INN_SERVICE), timeout=5)

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_turns_not_serving_for_the_inn_service_when_stopping(
    server: RunningServer,
) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=INN_SERVICE))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

    await server.server.stop(grace=0.5)

    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_inn_service(server: RunningServer) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )

    names = []
    async for answer in call:
        names.extend(s.name for s in answer.list_services_response.service)

    assert INN_SERVICE in names


async def test_find_then_get_a_lookup(server: RunningServer) -> None:
    doc, inn = number(), valid_inn()
    server.nalog.script(doc, found(inn))
    rid = request_id()

    lookup = await find(server, person(doc), rid)
    got = await get(server, rid)

    assert (lookup.status, lookup.inn) == (FOUND, inn)
    assert (got.status, got.inn) == (FOUND, inn)
    assert server.nalog.protocol_errors == []
