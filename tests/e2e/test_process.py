"""The real command line: `onboarding migrate` and `onboarding serve` as a process, driven by
grpcurl as the README shows, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import (
    AGREEMENTS,
    ServerProcess,
    clean_env,
    free_port,
    grpcurl,
    run_onboarding,
)

pytestmark = pytest.mark.slow


def test_grpcurl_lists_services_by_reflection(served: ServerProcess) -> None:
    services = grpcurl(served.port, "list").split()
    assert AGREEMENTS in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1.ServerReflection" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    described = grpcurl(served.port, "describe", f"{AGREEMENTS}.CreateAgreement")
    assert "CreateAgreementRequest" in described


def test_grpcurl_walks_create_code_confirm_get(served: ServerProcess) -> None:
    created = json.loads(
        grpcurl(
            served.port,
            f"{AGREEMENTS}/CreateAgreement",
            data={"id_hash": "client-42", "phone": "+7 916 123-45-67"},
        )
    )["agreement"]
    assert created["status"] == "AGREEMENT_STATUS_PENDING"
    assert created["phone_masked"] == "+7916*****67"
    code = served.read_code()
    confirmed = json.loads(
        grpcurl(
            served.port,
            f"{AGREEMENTS}/ConfirmOtp",
            data={"reference": created["reference"], "code": code},
        )
    )["agreement"]
    assert confirmed["status"] == "AGREEMENT_STATUS_CONFIRMED"
    got = json.loads(
        grpcurl(served.port, f"{AGREEMENTS}/GetAgreement", data={"reference": created["reference"]})
    )["agreement"]
    assert got["status"] == "AGREEMENT_STATUS_CONFIRMED"
    health = json.loads(grpcurl(served.port, "grpc.health.v1.Health/Check", data={"service": ""}))
    assert health == {"status": "SERVING"}


def test_sigterm_turns_health_not_serving_then_exits_zero(served: ServerProcess) -> None:
    async def watch_until_not_serving() -> list[int]:
        seen: list[int] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=AGREEMENTS)
            )
            async for reply in stream:
                seen.append(reply.status)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    served.process.send_signal(signal.SIGTERM)
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
        return seen

    seen = asyncio.run(asyncio.wait_for(watch_until_not_serving(), 20))
    assert seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert served.process.wait(timeout=30) == 0


def test_a_bad_setting_stops_the_start_with_one_clear_line(tmp_path: Path) -> None:
    result = run_onboarding(
        "serve", cwd=tmp_path, env=clean_env(tmp_path, ONBOARDING_OTP_LENGTH="six")
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "ONBOARDING_OTP_LENGTH" in lines[0]


def test_postgres_without_a_secret_key_does_not_start(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, ONBOARDING_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1/test"
    )
    result = run_onboarding("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "ONBOARDING_SECRET_KEY" in result.stderr


def test_sigterm_while_starting_drains_and_exits_zero(tmp_path: Path) -> None:
    # The first database check of a start can take the whole database timeout (here a
    # database that accepts connections and never answers). A stop asked for meanwhile is a
    # clean stop, not death by the signal.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        env = clean_env(
            tmp_path,
            ONBOARDING_DATABASE_URL=(
                f"postgresql+asyncpg://postgres@127.0.0.1:{silent.getsockname()[1]}/none"
            ),
            ONBOARDING_SECRET_KEY="test-secret-key-0123456789abcdef",
            ONBOARDING_DATABASE_TIMEOUT_SECONDS="3",
        )
        starting = ServerProcess(tmp_path, env, free_port())
        starting.wait_serving()  # the port is open; the database check still runs
        code, stderr = starting.stop()
    assert code == 0, stderr
    assert "draining" in stderr
