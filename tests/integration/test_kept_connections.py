"""PostgreSQL connections the direct path keeps between uses (``kept_connections``): used again,
never more than the pool's size, never a broken or an old one, and closed with the engine."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import pytest
from sqlalchemy import event, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from onboarding.adapters.db import direct
from onboarding.adapters.db.engine import RECYCLE_SECONDS, create_engine
from onboarding.adapters.db.kept_connections import _BORN, kept_by
from tests.conftest import eventually

pytestmark = pytest.mark.parametrize(
    "db_kind", [pytest.param("postgres", marks=pytest.mark.postgres)]
)

ONE = direct.Statement(select(literal_column("1").label("one")))
BACKEND_PID = direct.Statement(select(func.pg_backend_pid().label("pid")))


def checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]


async def backend_pid(engine: AsyncEngine) -> int:
    async with direct.autocommit(engine) as conn:
        row = await conn.fetch_one(BACKEND_PID)
        assert row is not None
        return int(row.pid)


async def test_a_connection_is_kept_and_used_again(fresh_engine: AsyncEngine, db_kind: str) -> None:
    first = await backend_pid(fresh_engine)
    assert kept_by(fresh_engine).idle == 1
    assert checked_out(fresh_engine) == 1  # kept out of the pool, not returned to it

    assert await backend_pid(fresh_engine) == first
    assert kept_by(fresh_engine).idle == 1


async def test_no_more_are_kept_than_the_pool_size_and_the_rest_go_back(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    size = fresh_engine.sync_engine.pool.size()  # type: ignore[attr-defined]
    connections = [await direct.connect(fresh_engine) for _ in range(size + 3)]
    assert checked_out(fresh_engine) == size + 3
    for connection in connections:
        await connection.close()

    assert kept_by(fresh_engine).idle == size
    assert checked_out(fresh_engine) == size
    async with fresh_engine.connect() as other:  # the pool still serves everyone else
        assert (await other.execute(text("SELECT 2"))).scalar() == 2


async def test_a_cancelled_call_drops_its_connection_instead_of_keeping_it(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    invalidated: list[object] = []
    event.listen(fresh_engine.sync_engine.pool, "invalidate", lambda *a: invalidated.append(a))
    first = await backend_pid(fresh_engine)
    slow = direct.Statement(select(func.pg_sleep(5).label("slept")))

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2), direct.autocommit(fresh_engine) as conn:
            await conn.fetch_one(slow)

    assert len(invalidated) == 1
    assert kept_by(fresh_engine).idle == 0
    assert checked_out(fresh_engine) == 0
    assert await backend_pid(fresh_engine) != first


async def test_a_refused_statement_keeps_its_connection(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    first = await backend_pid(fresh_engine)
    clash = direct.Statement(select(literal_column("1 / 0").label("never")))
    with pytest.raises(Exception, match="division by zero"):
        async with direct.transaction(fresh_engine) as tx:
            await tx.fetch_one(clash)
    assert await backend_pid(fresh_engine) == first


async def test_a_connection_past_the_recycle_time_goes_back_to_the_pool(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    connection = await direct.connect(fresh_engine)
    assert isinstance(connection, direct.PgConnection)
    connection._pooled.info[_BORN] = time.monotonic() - RECYCLE_SECONDS - 1
    await connection.close()

    assert kept_by(fresh_engine).idle == 0
    assert checked_out(fresh_engine) == 0


async def test_disposing_the_engine_closes_the_kept_connections(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    idle = await direct.connect(fresh_engine)
    busy = await direct.connect(fresh_engine)
    assert isinstance(idle, direct.PgConnection) and isinstance(busy, direct.PgConnection)
    await idle.close()
    driver = idle._db
    assert kept_by(fresh_engine).idle == 1

    await fresh_engine.dispose()

    assert driver.is_closed()
    assert kept_by(fresh_engine).idle == 0
    await busy.close()  # taken before the disposal: not kept after it
    assert kept_by(fresh_engine).idle == 0
    async with direct.autocommit(fresh_engine) as conn:  # the engine serves on, with new ones
        assert await conn.fetch_one(ONE) is not None


async def test_an_engine_made_elsewhere_keeps_nothing(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    other = create_async_engine(fresh_engine.url)
    try:
        async with direct.autocommit(other) as conn:
            assert await conn.fetch_one(ONE) is not None
        assert kept_by(other).idle == 0
        assert checked_out(other) == 0
    finally:
        await other.dispose()


def test_an_engine_let_go_is_not_held_by_its_keeper(db_kind: str) -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    assert kept_by(engine) is not None
    let_go = weakref.ref(engine.sync_engine)
    del engine
    gc.collect()
    assert let_go() is None


async def test_an_idle_connection_that_grew_too_old_is_not_handed_out(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    first = await backend_pid(fresh_engine)
    [idle] = kept_by(fresh_engine)._idle
    idle.info[_BORN] = time.monotonic() - RECYCLE_SECONDS - 1  # kept while young, idle since

    assert await backend_pid(fresh_engine) != first
    assert kept_by(fresh_engine).idle == 1
    assert checked_out(fresh_engine) == 1  # the old one went back to the pool


async def test_no_call_fails_after_the_server_closed_every_session(
    fresh_engine: AsyncEngine, db_kind: str
) -> None:
    # As after a restart or a failover: the idle kept connections and those back in the pool
    # are all closed by the server. None of them may be handed to a call.
    size = fresh_engine.sync_engine.pool.size()  # type: ignore[attr-defined]
    connections = [await direct.connect(fresh_engine) for _ in range(2 * size)]
    for connection in connections:
        await connection.close()
    assert (kept_by(fresh_engine).idle, checked_out(fresh_engine)) == (size, size)
    database = fresh_engine.url.database
    admin = create_async_engine(fresh_engine.url.set(database="postgres"))
    try:
        async with admin.connect() as conn:
            ended = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
    finally:
        await admin.dispose()
    assert ended == 2 * size
    kept = [c._db for c in connections if isinstance(c, direct.PgConnection)][:size]

    async def all_closed() -> bool:  # asyncpg has seen the server close them
        return all(driver.is_closed() for driver in kept)

    await eventually(all_closed)

    for _ in range(3 * size):
        async with direct.transaction(fresh_engine) as tx:
            assert await tx.fetch_one(ONE) is not None
            await tx.commit()
