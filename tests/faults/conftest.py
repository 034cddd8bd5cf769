"""Fault tests: real `onboarding serve` processes on one PostgreSQL database, killed, starved
of their database or of the SMS gateway, while the fakes answer in this test's event loop.

Servers are subprocesses started with asyncio (the loop keeps serving the fakes meanwhile), in
a process group of their own so that a supervisor's children never outlive the test. Their
output goes to a log file per server, shown when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onboarding.adapters.db import migrate
from onboarding.agreement.v1 import agreement_pb2_grpc
from onboarding.inn.v1 import inn_pb2_grpc
from tests.conftest import SECRET_KEY, Databases, random_phone
from tests.e2e.conftest import BIN, clean_env, free_port
from tests.fakes.sms_gateway import FakeSmsGateway

GATEWAY_TOKEN = "fault-gateway-token"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

#: What every server under test runs with, unless a test overrides it.
BASE_SETTINGS: dict[str, str] = {
    "ONBOARDING_SMS_RETRY_FIRST_DELAY_SECONDS": "0.05",
    "ONBOARDING_SMS_RETRY_MAX_DELAY_SECONDS": "0.5",
    "ONBOARDING_OUTBOX_POLL_SECONDS": "0.2",
    # The lease must outlast a send and its record (settings refuse less): 4 > 1.5 + 2. The
    # database timeout leaves room for a loaded machine while an outage still answers fast.
    "ONBOARDING_WORK_LEASE_SECONDS": "4",
    "ONBOARDING_SMS_TIMEOUT_SECONDS": "1.5",
    "ONBOARDING_DATABASE_TIMEOUT_SECONDS": "2",
    "ONBOARDING_OTP_RESEND_INTERVAL_SECONDS": "0",
    "ONBOARDING_SHUTDOWN_GRACE_SECONDS": "1",
    "ONBOARDING_HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
    "ONBOARDING_METRICS_PORT": "0",
    "ONBOARDING_NALOG_MAX_RPS": "100",
    "ONBOARDING_NALOG_POLL_INTERVAL_SECONDS": "0.05",
    "ONBOARDING_INN_RETRY_DELAY_SECONDS": "0.2",
    "ONBOARDING_LOG_LEVEL": "INFO",
}


def sync_url(url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def through(url: str, port: int, host: str = "127.0.0.1") -> str:
    """``url`` with its host and port replaced (to go through a proxy)."""
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}:{port}"))


def target_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def unique_phones(count: int) -> list[str]:
    """``count`` distinct random phones (random_phone alone may repeat one in a few hundred)."""
    phones: dict[str, None] = {}
    while len(phones) < count:
        phones[random_phone()] = None
    return list(phones)


async def outbox_statuses(url: str) -> dict[str, int]:
    """How many outbox messages stand in each status, read straight from the database."""
    conn = await asyncpg.connect(sync_url(url), timeout=5)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM outbox_messages GROUP BY 1")
    finally:
        await conn.close()
    return {row["status"]: row["n"] for row in rows}


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the workers of a supervisor), oldest first."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append((int(fields[19]), int(entry.name)))  # start time, pid
    return [child for _, child in sorted(children)]


class ServerProcess:
    """One `onboarding serve` (maybe a supervisor with workers), seen from the test."""

    def __init__(
        self, name: str, port: int, process: asyncio.subprocess.Process, log_path: Path
    ) -> None:
        self.name = name
        self.port = port
        self.process = process
        self.log_path = log_path
        self._channels: list[grpc.aio.Channel] = []
        self.channel = self.new_channel()
        self.agreements = agreement_pb2_grpc.AgreementServiceStub(self.channel)
        self.inn = inn_pb2_grpc.InnServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def new_channel(self) -> grpc.aio.Channel:
        """A channel with a TCP connection of its own (gRPC shares subchannels otherwise),
        so that several of them spread over the workers sharing a port."""
        channel = grpc.aio.insecure_channel(
            self.address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._channels.append(channel)
        return channel

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    async def health(self, service: str = "", timeout: float = 2.0) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        reply = await self.health_stub.Check(request, timeout=timeout)
        return reply.status

    async def wait_serving(self, timeout: float = 30.0) -> None:
        """Until health for "" answers SERVING; fails at once if the process ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.running:
                raise AssertionError(
                    f"server {self.name} exited with {self.process.returncode} before serving:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(grpc.aio.AioRpcError):
                if await self.health(timeout=1.0) == SERVING:
                    return
            if loop.time() > deadline:
                raise AssertionError(
                    f"server {self.name} not SERVING in {timeout}s:\n" + self.log_tail()
                )
            await asyncio.sleep(0.1)

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit status (the process group is killed if it hangs)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill_group()
            raise AssertionError(
                f"server {self.name} did not exit within {timeout}s of SIGTERM:\n" + self.log_tail()
            ) from None

    async def stop(self) -> None:
        """SIGTERM; the server must drain and exit 0."""
        code = await self.terminate()
        assert code == 0, f"server {self.name} exited with {code}:\n{self.log_tail()}"

    async def kill(self) -> None:
        """kill -9 of the server process itself, as a crash would end it."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), 10)

    async def kill_group(self) -> None:
        """kill -9 of the server and every process it started (its own process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 10)

    async def close_channels(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()


class Servers:
    """Starts `onboarding serve` processes against the fakes; cleans every one of them up."""

    def __init__(self, tmp_path: Path, gateway: FakeSmsGateway) -> None:
        self._tmp = tmp_path
        self.gateway = gateway
        self.started: list[ServerProcess] = []

    def environment(self, database_url: str, port: int, **settings: Any) -> dict[str, str]:
        env = clean_env(self._tmp)
        env.update(BASE_SETTINGS)
        env.update(
            {
                "ONBOARDING_DATABASE_URL": database_url,
                "ONBOARDING_SECRET_KEY": SECRET_KEY,
                "ONBOARDING_GRPC_PORT": str(port),
                "ONBOARDING_SMS_GATEWAY_URL": self.gateway.url,
                "ONBOARDING_SMS_GATEWAY_TOKEN": GATEWAY_TOKEN,
            }
        )
        for key, value in settings.items():
            name = key if key.startswith("ONBOARDING_") else f"ONBOARDING_{key.upper()}"
            env[name] = str(value)
        return env

    async def start(
        self,
        database_url: str,
        *,
        name: str | None = None,
        workers: int | None = None,
        wait: bool = True,
        **settings: Any,
    ) -> ServerProcess:
        """`onboarding serve` on a free port with the fault settings plus ``settings``
        (``nalog_base_url=...`` or ``ONBOARDING_NALOG_BASE_URL=...``), SERVING when returned."""
        name = name or f"server{len(self.started) + 1}"
        port = free_port()
        workdir = self._tmp / f"{name}-{secrets.token_hex(3)}"  # no .env to pick up
        workdir.mkdir()
        log_path = workdir / "server.log"
        args = [str(BIN / "onboarding"), "serve", "--port", str(port)]
        if workers is not None:
            args += ["--workers", str(workers)]
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *args,
                cwd=workdir,
                env=self.environment(database_url, port, **settings),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        server = ServerProcess(name, port, process, log_path)
        self.started.append(server)
        if wait:
            await server.wait_serving()
        return server

    async def cleanup(self) -> None:
        for server in self.started:
            if server.running:
                await server.kill_group()
            else:
                # A supervisor killed alone leaves its workers behind: end them too.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(server.process.pid, signal.SIGKILL)
            await server.close_channels()


@pytest.fixture
async def fault_database(databases: Databases) -> str:
    """A fresh PostgreSQL database of this test's own, migrated."""
    url = await databases.create("postgres")
    await migrate.upgrade(url)
    return url


@pytest.fixture
async def gateway() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway(token=GATEWAY_TOKEN) as fake:
        yield fake


@pytest.fixture
async def servers(tmp_path: Path, gateway: FakeSmsGateway) -> AsyncIterator[Servers]:
    started = Servers(tmp_path, gateway)
    try:
        yield started
    finally:
        await started.cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report carries the logs of the servers it started."""
    report = yield
    started = getattr(item, "funcargs", {}).get("servers")
    if report.when == "call" and report.failed and isinstance(started, Servers):
        for server in started.started:
            report.sections.append(
                (f"log of {server.name} (port {server.port})", server.log_tail(200))
            )
    return report
