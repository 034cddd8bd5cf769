"""Fixtures of the production-readiness tests (issue 6): certificates made on the spot, real
`onboarding serve` processes on SQLite started with asyncio (so that the fakes keep answering in
this loop), a /metrics scraper, and the fault-test fixtures (PostgreSQL servers, TcpProxy).

In-process servers here run on SQLite only: authentication, request ids, TLS and transport
limits live in front of the database, and the PostgreSQL paths are exercised by the process
tests (``servers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from onboarding.adapters.db import migrate
from onboarding.agreement.v1 import agreement_pb2_grpc
from onboarding.inn.v1 import inn_pb2_grpc
from tests.conftest import SECRET_KEY
from tests.e2e.conftest import BIN, clean_env, free_port

# The fault tests' fixtures: PostgreSQL `onboarding serve` processes and their fake gateway.
from tests.faults.conftest import (  # noqa: F401
    fault_database,
    gateway,
    pytest_runtest_makereport,
    servers,
)

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def db_kind() -> str:
    """In-process servers of these tests run on SQLite (see the module docstring)."""
    return "sqlite"


# -- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A client certificate signed by another CA, which the server must not accept.
    rogue_cert: Path
    rogue_key: Path

    def read(self, name: str) -> bytes:
        path: Path = getattr(self, name)
        return path.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA; a server certificate for 127.0.0.1, ::1 and localhost; a client certificate of
    the same CA; and a client certificate of another CA. PEM files in a temporary directory."""
    directory = tmp_path_factory.mktemp("tls")
    ca, ca_key = _ca("onboarding test CA")
    server, server_key = _leaf(
        "onboarding test server",
        ca,
        ca_key,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ],
    )
    client, client_key = _leaf("billing", ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue_ca, rogue_ca_key = _ca("somebody else's CA")
    rogue, rogue_key = _leaf("intruder", rogue_ca, rogue_ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    return Certs(
        ca=_write_cert(ca, directory / "ca.pem"),
        server_cert=_write_cert(server, directory / "server.pem"),
        server_key=_write_key(server_key, directory / "server-key.pem"),
        client_cert=_write_cert(client, directory / "client.pem"),
        client_key=_write_key(client_key, directory / "client-key.pem"),
        rogue_cert=_write_cert(rogue, directory / "rogue.pem"),
        rogue_key=_write_key(rogue_key, directory / "rogue-key.pem"),
    )


# -- /metrics --------------------------------------------------------------------------------


class Scrape:
    """One reading of /metrics: sample values by name and labels, and the family names."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families: set[str] = set()
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when it is not there (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def _get_metrics(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()


async def scrape(port: int, timeout: float = 20.0) -> Scrape:
    """GET /metrics (retrying while the endpoint is not up yet), parsed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return Scrape(await asyncio.to_thread(_get_metrics, port))
        except (urllib.error.URLError, ConnectionError) as error:
            if loop.time() > deadline:
                raise AssertionError(f"/metrics on port {port} not reachable: {error}") from None
            await asyncio.sleep(0.1)


# -- real processes on SQLite ----------------------------------------------------------------


class LocalServer:
    """One `onboarding serve` on SQLite; stdout and stderr go to files."""

    def __init__(
        self, process: asyncio.subprocess.Process, port: int, workdir: Path, metrics_port: int
    ) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir
        self.metrics_port = metrics_port
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.agreements = agreement_pb2_grpc.AgreementServiceStub(self.channel)
        self.inn = inn_pb2_grpc.InnServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.log"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    async def wait_serving(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request = health_pb2.HealthCheckRequest(service="")
        while True:
            if self.process.returncode is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode}:\n{self.stderr()[-3000:]}"
                )
            with contextlib.suppress(grpc.aio.AioRpcError):
                if (await self.health.Check(request, timeout=1.0)).status == SERVING:
                    return
            if loop.time() > deadline:
                raise AssertionError(f"server not SERVING in {timeout}s:\n{self.stderr()[-3000:]}")
            await asyncio.sleep(0.1)

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM; the exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"server did not exit within {timeout}s of SIGTERM") from None

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 10)

    async def close(self) -> None:
        await self.channel.close()
        if self.process.returncode is None:
            await self.kill()


def _sqlite_in(workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{workdir / 'onboarding.db'}"


async def start_local_server(workdir: Path, **settings: Any) -> LocalServer:
    """`onboarding serve` on a fresh migrated SQLite file in ``workdir``, metrics on a free
    port; ``settings`` are ONBOARDING_* values (``log_format="json"``). SERVING when returned."""
    database_url = _sqlite_in(workdir)
    await migrate.upgrade(database_url)
    port, metrics_port = free_port(), free_port()
    env = clean_env(workdir)
    env.update(
        {
            "ONBOARDING_DATABASE_URL": database_url,
            "ONBOARDING_SECRET_KEY": SECRET_KEY,
            "ONBOARDING_GRPC_PORT": str(port),
            "ONBOARDING_METRICS_PORT": str(metrics_port),
            "ONBOARDING_SHUTDOWN_GRACE_SECONDS": "1",
            "ONBOARDING_HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
            "ONBOARDING_OUTBOX_POLL_SECONDS": "0.2",
            "ONBOARDING_OTP_RESEND_INTERVAL_SECONDS": "0",
            "ONBOARDING_NALOG_MAX_RPS": "100",
            "ONBOARDING_NALOG_POLL_INTERVAL_SECONDS": "0.05",
        }
    )
    for key, value in settings.items():
        env[key if key.startswith("ONBOARDING_") else f"ONBOARDING_{key.upper()}"] = str(value)
    with (
        (workdir / "stdout.log").open("wb") as stdout,
        (workdir / "stderr.log").open("wb") as stderr,
    ):
        process = await asyncio.create_subprocess_exec(
            str(BIN / "onboarding"),
            "serve",
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    server = LocalServer(process, port, workdir, metrics_port)
    try:
        await server.wait_serving()
    except BaseException:
        await server.close()
        raise
    return server


@pytest.fixture
async def local_servers(tmp_path: Path) -> AsyncIterator[Any]:
    """Starts `onboarding serve` processes on SQLite (see :func:`start_local_server`); every
    one is ended at the end of the test."""
    started: list[LocalServer] = []

    async def start(**settings: Any) -> LocalServer:
        server = await start_local_server(tmp_path / f"server{len(started) + 1}", **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()
