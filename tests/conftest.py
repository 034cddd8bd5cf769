"""Fixtures shared by every test: databases of both kinds, a fake SMS gateway, real servers.

PostgreSQL tests run against 127.0.0.1:5432 (override with ONBOARDING_TEST_POSTGRES_URL); each
session gets a database of its own, dropped at the end. Without a reachable server they are
skipped with the reason shown, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from onboarding import bootstrap
from onboarding.adapters.db import migrate
from onboarding.agreement.v1 import agreement_pb2_grpc
from onboarding.config import Settings
from onboarding.entrypoints.grpc.server import OnboardingServer
from onboarding.inn.v1 import inn_pb2_grpc
from tests.fakes.nalog import FakeNalog
from tests.fakes.sms_gateway import FakeSmsGateway

SECRET_KEY = "test-secret-key-0123456789abcdef"
POSTGRES_ADMIN_URL = os.environ.get(
    "ONBOARDING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
DATABASE_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

_postgres_problem: str | None = None
_postgres_checked = False


async def _postgres_unavailable() -> str | None:
    global _postgres_checked, _postgres_problem
    if not _postgres_checked:
        _postgres_checked = True
        try:
            conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
            await conn.close()
        except Exception as error:
            _postgres_problem = f"PostgreSQL at {POSTGRES_ADMIN_URL} unreachable: {error!r}"
    return _postgres_problem


async def require_postgres() -> None:
    problem = await _postgres_unavailable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true and {problem}", pytrace=False)
        pytest.skip(problem)


class Databases:
    """Makes empty databases of either kind and drops the PostgreSQL ones at the end."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._created: list[str] = []

    async def create(self, kind: str) -> str:
        name = f"onboarding_t_{secrets.token_hex(6)}"
        if kind == "sqlite":
            return f"sqlite+aiosqlite:///{self._tmp / name}.db"
        await require_postgres()
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self._created.append(name)
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace(
            "postgresql://", "postgresql+asyncpg://"
        )
        return f"{base}/{name}"

    async def drop_all(self) -> None:
        if not self._created:
            return
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            for name in self._created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def databases(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("db"))
    yield dbs
    await dbs.drop_all()


@pytest.fixture(params=DATABASE_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def empty_database_url(databases: Databases, db_kind: str) -> str:
    """A new database with no schema."""
    return await databases.create(db_kind)


_migrated: dict[str, str] = {}


@pytest.fixture
async def database_url(databases: Databases, db_kind: str) -> str:
    """A migrated database of the kind under test, shared by the session's tests of that kind
    (tests keep apart by using their own clients, phones and references)."""
    if db_kind not in _migrated:
        url = await databases.create(db_kind)
        await migrate.upgrade(url)
        _migrated[db_kind] = url
    return _migrated[db_kind]


@pytest.fixture
async def nalog() -> AsyncIterator[FakeNalog]:
    async with FakeNalog() as fake:
        yield fake


@pytest.fixture
async def sms_gateway() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway(token="gateway-token") as gateway:
        yield gateway


def random_phone() -> str:
    """A valid Russian mobile number no other test uses (the per-phone quota is shared)."""
    return f"+7916{secrets.randbelow(10**7):07d}"


def random_client() -> str:
    return f"client-{uuid.uuid4().hex}"


def test_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": SECRET_KEY,
        "grpc_port": 0,
        "otp_resend_interval_seconds": 0,
        "sms_retry_first_delay_seconds": 0.05,
        "sms_retry_max_delay_seconds": 0.2,
        "outbox_poll_seconds": 0.2,
        "health_check_interval_seconds": 0.5,
        "shutdown_grace_seconds": 1,
        "nalog_max_rps": 1000,
        "nalog_poll_interval_seconds": 0.01,
        "nalog_timeout_seconds": 2,
        "inn_wait_seconds": 5,
        "inn_retry_delay_seconds": 0.1,
        "inn_captcha_pause_seconds": 0.2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class RunningServer:
    server: OnboardingServer
    channel: grpc.aio.Channel
    agreements: agreement_pb2_grpc.AgreementServiceStub
    inn: inn_pb2_grpc.InnServiceStub
    gateway: FakeSmsGateway
    nalog: FakeNalog
    settings: Settings

    @property
    def container(self) -> bootstrap.Container:
        return self.server.container

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server(
    database_url: str, sms_gateway: FakeSmsGateway, nalog: FakeNalog
) -> AsyncIterator[StartServer]:
    """Starts real servers (in this process, on an ephemeral port, talking to the fake gateway)
    with the test settings plus any overrides, and optionally a clock the test moves; all are
    stopped at the end of the test."""
    running: list[RunningServer] = []

    async def start(
        *, clock: Callable[[], datetime] | None = None, **overrides: Any
    ) -> RunningServer:
        settings = test_settings(
            database_url,
            sms_gateway_url=sms_gateway.url,
            sms_gateway_token="gateway-token",
            nalog_base_url=nalog.base_url,
            **overrides,
        )
        container = bootstrap.build(settings, clock=clock or bootstrap.utc_now)
        server = OnboardingServer(container)
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        item = RunningServer(
            server,
            channel,
            agreement_pb2_grpc.AgreementServiceStub(channel),
            inn_pb2_grpc.InnServiceStub(channel),
            sms_gateway,
            nalog,
            settings,
        )
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.server.stop(grace=0.5)


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    """A server with the test defaults."""
    return await start_server()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Waits until ``check`` holds; fails with a timeout otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
