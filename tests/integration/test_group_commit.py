"""SQLite's group commit (see ``inline_sqlite``): write transactions close together share one
COMMIT, each answers only after it, a failed one is undone alone, a failed COMMIT fails them
all, and nobody else reads a group's writes before they are committed.

Every assertion on what is stored reads through a connection of its own, which sees only
what is committed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, Uuid, insert, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db import direct
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.inline_sqlite import InlineEngine
from onboarding.adapters.db.reader import SqlAgreementReader
from onboarding.adapters.db.tables import outbox_messages
from tests.integration.conftest import MutableClock, new_agreement, unit_of_work
from tests.integration.test_outbox_store import enqueue, sms
from tests.integration.test_repositories import store

pytestmark = pytest.mark.parametrize("db_kind", ["sqlite"])

Engines = Callable[[float], InlineEngine]


@pytest.fixture
async def engines(fresh_database_url: str) -> AsyncIterator[Engines]:
    """Engines on the test's migrated SQLite database, with the commit delay given."""
    made: list[InlineEngine] = []

    def make(commit_delay: float) -> InlineEngine:
        engine = create_engine(fresh_database_url, sqlite_commit_delay=commit_delay)
        assert isinstance(engine, InlineEngine)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.dispose()


def stored_messages(engine: InlineEngine) -> int:
    """Outbox rows committed, as another connection sees them."""
    database = make_url(str(engine.url)).database
    assert database is not None
    with sqlite3.connect(database) as other:
        (count,) = other.execute("SELECT count(*) FROM outbox_messages").fetchone()
    return int(count)


async def traced(engine: InlineEngine) -> list[str]:
    """Every statement SQLite runs on the engine's connection from now on."""
    seen: list[str] = []
    async with engine.connect() as conn:
        conn.sync_connection.connection.driver_connection.set_trace_callback(seen.append)
    return seen


async def write(engine: AsyncEngine) -> None:
    await enqueue(engine, MutableClock(), sms())


async def test_writes_of_one_turn_share_one_commit(engines: Engines) -> None:
    engine = engines(0.0)
    seen = await traced(engine)

    await asyncio.gather(*(write(engine) for _ in range(5)))

    assert seen.count("COMMIT") == 1
    assert seen.count("SAVEPOINT work") == 4
    assert stored_messages(engine) == 5


async def test_each_write_answers_after_the_commit(engines: Engines) -> None:
    engine = engines(60.0)  # held until someone else needs the connection
    writes = [asyncio.create_task(write(engine)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in writes)
    assert stored_messages(engine) == 0

    await SqlAgreementReader(engine).ping()  # takes the connection: the group commits first

    await asyncio.wait_for(asyncio.gather(*writes), timeout=10)
    assert stored_messages(engine) == 3


async def test_nobody_else_reads_writes_not_yet_committed(engines: Engines) -> None:
    engine = engines(60.0)
    agreement = new_agreement()

    creating = asyncio.create_task(store(engine, agreement))
    await asyncio.sleep(0.05)
    assert not creating.done()

    found = await SqlAgreementReader(engine).get(agreement.reference)

    assert found is not None and found.reference == agreement.reference
    await asyncio.wait_for(creating, timeout=10)


async def test_a_failed_write_is_undone_alone_and_answers_after_the_commit(
    engines: Engines,
) -> None:
    engine = engines(0.0)
    seen_at_failure: list[int] = []

    async def failing() -> None:
        try:
            async with unit_of_work(engine) as uow:
                await uow.outbox.add(sms())
                await uow.flush()
                raise LookupError("the handler refused")
        except LookupError:
            seen_at_failure.append(stored_messages(engine))
            raise

    results = await asyncio.gather(write(engine), failing(), write(engine), return_exceptions=True)

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], LookupError)
    assert stored_messages(engine) == 2
    # It read the first write's row: it answered only once that row was committed.
    assert seen_at_failure == [2]


async def test_a_commit_that_fails_fails_every_write_in_it(engines: Engines) -> None:
    engine = engines(0.0)
    # A foreign key checked at COMMIT: a real way for a COMMIT to fail.
    children = Table(
        "group_commit_children",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column(
            "message_id",
            Uuid,
            ForeignKey(outbox_messages.c.message_id, deferrable=True, initially="DEFERRED"),
        ),
    )
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: children.create(sync))
    orphan = direct.Statement(insert(children))

    async def breaking() -> None:
        async with direct.transaction(engine) as tx:
            await tx.execute(orphan, {"id": 1, "message_id": sms().message_id})
            await tx.commit()

    results = await asyncio.gather(write(engine), breaking(), return_exceptions=True)

    assert all(isinstance(result, sqlite3.IntegrityError) for result in results), results
    assert stored_messages(engine) == 0
    await write(engine)  # the connection is usable again
    assert stored_messages(engine) == 1


async def test_a_caller_that_gives_up_does_not_cancel_the_commit(engines: Engines) -> None:
    engine = engines(60.0)
    leaving, staying = asyncio.create_task(write(engine)), asyncio.create_task(write(engine))
    await asyncio.sleep(0.05)

    leaving.cancel()
    await SqlAgreementReader(engine).ping()

    await asyncio.wait_for(staying, timeout=10)
    assert leaving.cancelled()
    # The COMMIT ran for both: a call cancelled at its commit may have been committed.
    assert stored_messages(engine) == 2


async def test_a_write_waits_for_company_only_while_writes_come_quickly(
    engines: Engines,
) -> None:
    engine = engines(0.3)
    seen = await traced(engine)

    async def two_apart() -> int:
        before = seen.count("COMMIT")
        first = asyncio.create_task(write(engine))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, write(engine))
        return seen.count("COMMIT") - before

    # After a quiet spell a write commits at the next turn: the second has a COMMIT of its own.
    assert await two_apart() == 2
    await asyncio.gather(*(write(engine) for _ in range(20)))
    # In a busy spell the first waits, and the second, 50 ms later, shares its COMMIT.
    assert await two_apart() == 1
    assert stored_messages(engine) == 24


async def test_disposing_of_the_engine_commits_the_open_group(engines: Engines) -> None:
    engine = engines(60.0)
    writes = [asyncio.create_task(write(engine)) for _ in range(2)]
    await asyncio.sleep(0.05)

    await engine.dispose()

    await asyncio.wait_for(asyncio.gather(*writes), timeout=10)
    assert stored_messages(engine) == 2
