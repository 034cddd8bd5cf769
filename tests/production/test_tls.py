"""TLS (ONBOARDING_TLS_CERT_FILE + _KEY_FILE) and mutual TLS (+ _CLIENT_CA_FILE), with
certificates made by the test; and the settings that refuse half a TLS configuration."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from onboarding.agreement.v1 import agreement_pb2 as pb
from onboarding.agreement.v1 import agreement_pb2_grpc
from onboarding.config import Settings
from tests.conftest import SECRET_KEY, RunningServer, StartServer
from tests.production.conftest import Certs

Channels = Callable[..., grpc.aio.Channel]


@pytest.fixture
async def channels() -> AsyncIterator[Channels]:
    """Makes channels to 127.0.0.1:port, closed at the end of the test."""
    made: list[grpc.aio.Channel] = []

    def make(port: int, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
        target = f"127.0.0.1:{port}"
        channel = (
            grpc.aio.insecure_channel(target)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials)
        )
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


async def tls_server(start_server: StartServer, certs: Certs, **extra: Path) -> RunningServer:
    return await start_server(
        tls_cert_file=certs.server_cert, tls_key_file=certs.server_key, **extra
    )


async def get_agreement(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """GetAgreement of an unknown reference: NOT_FOUND means the call got through."""
    stub = agreement_pb2_grpc.AgreementServiceStub(channel)
    try:
        await stub.GetAgreement(pb.GetAgreementRequest(reference=str(uuid.uuid4())), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_tls_serves_a_client_trusting_the_ca(
    start_server: StartServer, certs: Certs, channels: Channels
) -> None:
    server = await tls_server(start_server, certs)
    channel = channels(server.server.port, grpc.ssl_channel_credentials(certs.read("ca")))

    assert await get_agreement(channel) == grpc.StatusCode.NOT_FOUND


async def test_tls_serves_health(
    start_server: StartServer, certs: Certs, channels: Channels
) -> None:
    server = await tls_server(start_server, certs)
    channel = channels(server.server.port, grpc.ssl_channel_credentials(certs.read("ca")))

    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_tls_refuses_a_plaintext_client(
    start_server: StartServer, certs: Certs, channels: Channels
) -> None:
    server = await tls_server(start_server, certs)

    assert await get_agreement(channels(server.server.port)) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_not_trusting_the_ca_fails(
    start_server: StartServer, certs: Certs, channels: Channels
) -> None:
    server = await tls_server(start_server, certs)
    # The rogue client certificate as the only root: the server's certificate does not chain.
    channel = channels(server.server.port, grpc.ssl_channel_credentials(certs.read("rogue_cert")))

    assert await get_agreement(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    start_server: StartServer, certs: Certs, channels: Channels
) -> None:
    server = await tls_server(start_server, certs, tls_client_ca_file=certs.ca)
    channel = channels(server.server.port, grpc.ssl_channel_credentials(certs.read("ca")))

    assert await get_agreement(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_serves_a_client_with_a_certificate_of_the_ca(
    start_server: StartServer, certs: Certs, channels: Channels
) -> None:
    server = await tls_server(start_server, certs, tls_client_ca_file=certs.ca)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.read("ca"),
        private_key=certs.read("client_key"),
        certificate_chain=certs.read("client_cert"),
    )

    assert await get_agreement(channels(server.server.port, credentials)) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_mutual_tls_refuses_a_certificate_of_another_ca(
    start_server: StartServer, certs: Certs, channels: Channels
) -> None:
    server = await tls_server(start_server, certs, tls_client_ca_file=certs.ca)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.read("ca"),
        private_key=certs.read("rogue_key"),
        certificate_chain=certs.read("rogue_cert"),
    )

    assert await get_agreement(channels(server.server.port, credentials)) == (
        grpc.StatusCode.UNAVAILABLE
    )


# -- settings --------------------------------------------------------------------------------


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, secret_key=SECRET_KEY, **values)  # type: ignore[call-arg]


def refusal(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    return str(caught.value)


def test_settings_accept_a_certificate_with_its_key(certs: Certs) -> None:
    accepted = settings(tls_cert_file=certs.server_cert, tls_key_file=certs.server_key)

    assert accepted.tls_cert_file == certs.server_cert


def test_settings_refuse_a_certificate_without_a_key(certs: Certs) -> None:
    assert "ONBOARDING_TLS_KEY_FILE" in refusal(tls_cert_file=certs.server_cert)


def test_settings_refuse_a_key_without_a_certificate(certs: Certs) -> None:
    assert "ONBOARDING_TLS_CERT_FILE" in refusal(tls_key_file=certs.server_key)


def test_settings_refuse_a_client_ca_without_a_certificate(certs: Certs) -> None:
    assert "ONBOARDING_TLS_CLIENT_CA_FILE" in refusal(tls_client_ca_file=certs.ca)


@pytest.mark.parametrize("missing", ["tls_cert_file", "tls_key_file", "tls_client_ca_file"])
def test_settings_refuse_a_missing_file(certs: Certs, tmp_path: Path, missing: str) -> None:
    values: dict[str, object] = {
        "tls_cert_file": certs.server_cert,
        "tls_key_file": certs.server_key,
        "tls_client_ca_file": certs.ca,
    }
    absent = tmp_path / "absent.pem"
    values[missing] = absent

    assert str(absent) in refusal(**values)


def test_settings_refuse_a_directory_as_a_tls_file(certs: Certs, tmp_path: Path) -> None:
    assert "does not exist" in refusal(tls_cert_file=tmp_path, tls_key_file=certs.server_key)
