"""An unreachable database answers BackendUnavailable at once instead of hanging."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.outbox_store import SqlOutboxStore
from onboarding.adapters.db.reader import SqlAgreementReader
from onboarding.service_layer.errors import BackendUnavailable
from tests.integration.conftest import KEYRING, MutableClock, new_agreement, unit_of_work

CLOSED_PORT_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
QUICKLY = 5.0


@pytest.fixture
async def closed_port_engine() -> AsyncIterator[AsyncEngine]:
    engine = create_engine(CLOSED_PORT_URL, timeout=1)
    yield engine
    await engine.dispose()


async def assert_unavailable_quickly(call: Callable[[], Awaitable[object]]) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await call()
    assert time.monotonic() - started < QUICKLY


async def test_unit_of_work_on_a_closed_port_is_backend_unavailable(
    closed_port_engine: AsyncEngine,
) -> None:
    async def write() -> None:
        async with unit_of_work(closed_port_engine) as uow:
            await uow.agreements.add(new_agreement())
            await uow.commit()

    await assert_unavailable_quickly(write)


async def test_reader_get_on_a_closed_port_is_backend_unavailable(
    closed_port_engine: AsyncEngine,
) -> None:
    await assert_unavailable_quickly(lambda: SqlAgreementReader(closed_port_engine).get(uuid4()))


async def test_reader_list_on_a_closed_port_is_backend_unavailable(
    closed_port_engine: AsyncEngine,
) -> None:
    reader = SqlAgreementReader(closed_port_engine)
    await assert_unavailable_quickly(lambda: reader.list_by_client("client", 10, None))


async def test_reader_ping_on_a_closed_port_is_backend_unavailable(
    closed_port_engine: AsyncEngine,
) -> None:
    await assert_unavailable_quickly(SqlAgreementReader(closed_port_engine).ping)


async def test_outbox_claim_on_a_closed_port_is_backend_unavailable(
    closed_port_engine: AsyncEngine,
) -> None:
    store = SqlOutboxStore(
        closed_port_engine, KEYRING.sealer, MutableClock(), timedelta(seconds=30)
    )
    await assert_unavailable_quickly(lambda: store.claim(10))


async def test_unit_of_work_on_an_unopenable_sqlite_file_is_backend_unavailable(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    try:

        async def write() -> None:
            async with unit_of_work(engine) as uow:
                await uow.commit()

        await assert_unavailable_quickly(write)
    finally:
        await engine.dispose()
