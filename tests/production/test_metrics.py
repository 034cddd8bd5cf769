"""Prometheus /metrics of a real `onboarding serve` (ONBOARDING_METRICS_PORT): what was done is
what is counted, in one process and summed over the workers of `serve --workers 2`."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.mmap_dict import MmapedDict

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.agreement.v1 import agreement_pb2_grpc
from onboarding.inn.v1 import inn_pb2
from tests.conftest import eventually, random_client, random_phone
from tests.e2e.conftest import free_port
from tests.e2e.test_inn_helpers import FOUND, number, person
from tests.fakes.nalog import FakeNalog, found, valid_inn
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.faults.conftest import Servers, child_pids
from tests.production.conftest import LocalServer, Scrape, scrape, start_local_server

pytestmark = pytest.mark.slow

AGREEMENTS = "onboarding.agreement.v1.AgreementService"
INNS = "onboarding.inn.v1.InnService"
HEALTH = "grpc.health.v1.Health"
RPCS = "onboarding_rpc_requests_total"
DURATION_COUNT = "onboarding_rpc_duration_seconds_count"

NOT_FOUND_CALLS = 3
INVALID_CALLS = 2
HEALTH_CALLS = 4


@dataclass
class Session:
    """What one real server was asked, and its /metrics before and after."""

    before: Scrape
    after: Scrape
    stderr: str

    def delta(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)


async def _code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _exercise(server: LocalServer, nalog: FakeNalog) -> None:
    for _ in range(NOT_FOUND_CALLS):
        request = pb.GetAgreementRequest(reference=str(uuid.uuid4()))
        assert await _code_of(server.agreements.GetAgreement(request, timeout=5)) == (
            grpc.StatusCode.NOT_FOUND
        )
    for _ in range(INVALID_CALLS):
        request = pb.GetAgreementRequest(reference="not-a-reference")
        assert await _code_of(server.agreements.GetAgreement(request, timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    for _ in range(HEALTH_CALLS):
        await server.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    doc = number()
    nalog.script(doc, found(valid_inn()))
    answer = await server.inn.FindInn(
        inn_pb2.FindInnRequest(request_id=str(uuid.uuid4()), **person(doc)), timeout=15
    )
    assert answer.lookup.status == FOUND


@pytest.fixture(scope="module")
async def session(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    """One server on SQLite with metrics on, asked a known set of calls."""
    async with FakeNalog() as nalog:
        server = await start_local_server(
            tmp_path_factory.mktemp("metrics") / "server", nalog_base_url=nalog.base_url
        )
        try:
            before = await scrape(server.metrics_port)
            await _exercise(server, nalog)
            after = await scrape(server.metrics_port)
        finally:
            await server.close()
        yield Session(before, after, server.stderr())


def test_rpcs_are_counted_by_service_method_code_and_caller(session: Session) -> None:
    def rpcs(service: str, method: str, code: str) -> float:
        return session.delta(RPCS, service=service, method=method, code=code, caller="anonymous")

    assert rpcs(AGREEMENTS, "GetAgreement", "NOT_FOUND") == NOT_FOUND_CALLS
    assert rpcs(AGREEMENTS, "GetAgreement", "INVALID_ARGUMENT") == INVALID_CALLS
    assert rpcs(AGREEMENTS, "GetAgreement", "OK") == 0
    assert rpcs(HEALTH, "Check", "OK") == HEALTH_CALLS
    assert rpcs(INNS, "FindInn", "OK") == 1


def test_the_duration_histogram_counts_every_rpc(session: Session) -> None:
    assert session.delta(DURATION_COUNT, service=AGREEMENTS, method="GetAgreement") == (
        NOT_FOUND_CALLS + INVALID_CALLS
    )
    assert session.delta(DURATION_COUNT, service=HEALTH, method="Check") == HEALTH_CALLS
    assert session.delta(DURATION_COUNT, service=INNS, method="FindInn") == 1


def test_the_duration_histogram_has_its_buckets(session: Session) -> None:
    inf = session.after.value(
        "onboarding_rpc_duration_seconds_bucket", service=INNS, method="FindInn", le="+Inf"
    )

    assert inf == session.after.value(DURATION_COUNT, service=INNS, method="FindInn")


def test_the_inn_lookup_is_counted(session: Session) -> None:
    assert session.delta("onboarding_nalog_calls_total", outcome="found") == 1
    assert session.delta("onboarding_inn_lookups_total", status="found", cached="false") == 1


def test_the_outbox_gauges_are_exported(session: Session) -> None:
    assert "onboarding_outbox_backlog" in session.after.names()
    assert "onboarding_outbox_oldest_age_seconds" in session.after.names()
    assert session.after.value("onboarding_outbox_backlog") == 0


def test_a_server_without_tokens_warns_at_start(session: Session) -> None:
    warnings = [line for line in session.stderr.splitlines() if "WARNING" in line]

    assert any("ONBOARDING_AUTH_TOKENS" in line for line in warnings), session.stderr[-2000:]


# -- several workers on PostgreSQL -------------------------------------------------------------


@pytest.mark.postgres
async def test_two_workers_count_every_call_in_one_metrics(
    servers: Servers, fault_database: str
) -> None:
    metrics_port = free_port()
    server = await servers.start(fault_database, workers=2, ONBOARDING_METRICS_PORT=metrics_port)

    # SERVING means one worker is up; the other may still be starting, and connections made
    # before it listens all go to the first.
    async def both_serving() -> bool:
        return server.log().count("serving on port") == 2

    await eventually(both_serving, timeout=10)
    before = await scrape(metrics_port)
    channels = [server.new_channel() for _ in range(16)]  # the kernel spreads connections
    calls_per_channel = 3

    async def ask(channel: grpc.aio.Channel) -> None:
        stub = agreement_pb2_grpc.AgreementServiceStub(channel)
        for _ in range(calls_per_channel):
            request = pb.GetAgreementRequest(reference=str(uuid.uuid4()))
            assert await _code_of(stub.GetAgreement(request, timeout=10)) == (
                grpc.StatusCode.NOT_FOUND
            )

    await asyncio.gather(*(ask(channel) for channel in channels))
    health_stub = health_pb2_grpc.HealthStub(channels[0])
    await health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    after = await scrape(metrics_port)

    labels = {"service": AGREEMENTS, "method": "GetAgreement", "code": "NOT_FOUND"}
    counted = after.value(RPCS, caller="anonymous", **labels) - before.value(
        RPCS, caller="anonymous", **labels
    )
    timed = after.value(DURATION_COUNT, service=AGREEMENTS, method="GetAgreement") - (
        before.value(DURATION_COUNT, service=AGREEMENTS, method="GetAgreement")
    )
    assert counted == len(channels) * calls_per_channel
    assert timed == len(channels) * calls_per_channel
    assert "onboarding_outbox_backlog" in after.names()
    # Not vacuous: each worker answered some of them (16 connections all on one worker: 2**-15).
    per_worker = [_rpcs_counted_by(pid) for pid in child_pids(server.process.pid)]
    assert len(per_worker) == 2
    assert all(count > 0 for count in per_worker), per_worker
    assert sum(per_worker) >= counted
    await server.stop()


def _rpcs_counted_by(pid: int) -> float:
    """The RPCs one worker counted, read from its own sample file (found through the files it
    maps: the supervisor made the directory)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    files = set(re.findall(rf"(/\S+/counter_{pid}\.db)$", maps, re.MULTILINE))
    assert len(files) == 1, f"worker {pid} maps {files}"
    values = MmapedDict(files.pop(), read_mode=True).read_all_values()
    return sum(value for key, value, _ in values if json.loads(key)[1] == RPCS)


async def test_sms_hand_overs_and_helper_starts_are_counted(tmp_path: Path) -> None:
    async with FakeSmsGateway() as gateway:
        server = await start_local_server(tmp_path / "server", sms_gateway_url=gateway.url)
        try:
            request = pb.CreateAgreementRequest(id_hash=random_client(), phone=random_phone())
            await server.agreements.CreateAgreement(request, timeout=5)
            await gateway.wait_for(1, timeout=10)

            async def counted() -> bool:
                scraped = await scrape(server.metrics_port)
                return scraped.value("onboarding_sms_deliveries_total", outcome="sent") == 1

            await eventually(counted, timeout=10)
            after = await scrape(server.metrics_port)
        finally:
            await server.close()

    assert after.value("onboarding_sms_sender_starts_total", result="started") == 1
    assert after.value("onboarding_sms_sender_starts_total", result="failed") == 0
