"""The gRPC service config we give callers (clients/service_config.json): every method has a
default deadline, and only those safe to repeat are retried, on UNAVAILABLE. Checked against a
real server whose database is down, with grpc's own retry machinery."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from onboarding import bootstrap
from onboarding.agreement.v1 import agreement_pb2, agreement_pb2_grpc
from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.entrypoints.grpc.server import OnboardingServer
from onboarding.inn.v1 import inn_pb2
from tests.conftest import eventually
from tests.conftest import test_settings as settings_for
from tests.e2e.helpers import details_of
from tests.fakes.tcp_proxy import TcpProxy
from tests.faults.conftest import target_of, through

CONFIG_FILE = Path(__file__).resolve().parents[2] / "clients" / "service_config.json"
SERVICE_CONFIG = json.loads(CONFIG_FILE.read_text())
#: Repeating these changes nothing a first call did not (FindInn and the reads by their key,
#: ConfirmOtp's correct code answers OK again, revoking is final).
RETRIED = {
    "GetAgreement",
    "ListAgreements",
    "ConfirmOtp",
    "RevokeAgreement",
    "FindInn",
    "GetInnLookup",
}
AGREEMENTS = agreement_pb2.DESCRIPTOR.services_by_name["AgreementService"]
INN = inn_pb2.DESCRIPTOR.services_by_name["InnService"]


def _configs_by_method() -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for config in SERVICE_CONFIG["methodConfig"]:
        for name in config["name"]:
            found.setdefault(f"{name['service']}/{name['method']}", []).append(config)
    return found


def test_every_method_has_one_config_with_a_deadline() -> None:
    methods = {f"{s.full_name}/{m.name}" for s in (AGREEMENTS, INN) for m in s.methods}
    found = _configs_by_method()

    assert set(found) == methods
    assert all(len(configs) == 1 and configs[0]["timeout"] for configs in found.values())


def test_only_methods_safe_to_repeat_are_retried_and_only_on_unavailable() -> None:
    found = _configs_by_method()
    retried = {name.split("/")[1] for name, [config] in found.items() if "retryPolicy" in config}
    policies = [config["retryPolicy"] for [config] in found.values() if "retryPolicy" in config]

    assert retried == RETRIED
    assert all(policy["retryableStatusCodes"] == ["UNAVAILABLE"] for policy in policies)


def _answered(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "onboarding_rpc_requests_total",
        {"service": AGREEMENTS.full_name, "method": method, "code": code, "caller": "anonymous"},
    )
    return value or 0.0


@pytest.fixture
async def database_down(fault_database: str) -> AsyncIterator[OnboardingServer]:
    """A real server in this process whose PostgreSQL (behind a proxy) refuses connections."""
    host, port = target_of(fault_database)
    async with TcpProxy(host, port) as proxy:
        settings = settings_for(
            through(fault_database, proxy.port), sms_gateway_url="", database_timeout_seconds=1
        )
        server = OnboardingServer(bootstrap.build(settings))
        await server.start()
        await proxy.down()
        try:
            yield server
        finally:
            await server.stop(grace=0.5)


async def _call(server: OnboardingServer, options: list[tuple[str, object]], rpc: str) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        stub = agreement_pb2_grpc.AgreementServiceStub(channel)
        reference = str(uuid.uuid4())
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            if rpc == "GetAgreement":
                await stub.GetAgreement(pb.GetAgreementRequest(reference=reference))
            else:
                await stub.SendOtp(pb.SendOtpRequest(reference=reference))
    return details_of(failed.value).reason


CONFIGURED = [("grpc.service_config", json.dumps(SERVICE_CONFIG))]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(
    ("rpc", "options", "attempts"),
    [
        ("GetAgreement", CONFIGURED, 3),
        ("SendOtp", CONFIGURED, 1),
        ("GetAgreement", [], 1),
    ],
    ids=["retried", "not-retried", "without-the-config"],
)
async def test_a_call_is_tried_as_the_config_says(
    database_down: OnboardingServer,
    rpc: str,
    options: list[tuple[str, object]],
    attempts: int,
) -> None:
    before = _answered(rpc, "UNAVAILABLE")

    reason = await _call(database_down, options, rpc)

    assert reason == "BACKEND_UNAVAILABLE"

    # An aborted call can reach the client a moment before the server has counted it.
    async def counted() -> bool:
        return _answered(rpc, "UNAVAILABLE") - before >= attempts

    await eventually(counted)
    assert _answered(rpc, "UNAVAILABLE") - before == attempts
