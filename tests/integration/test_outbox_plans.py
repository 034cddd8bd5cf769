"""How the outbox's statements find their rows with a history of finished messages behind them:
through the primary key or the queue's partial indexes, never by reading that history.

On PostgreSQL the plan checked is the generic one, made once for any values: asyncpg prepares
each statement, and PostgreSQL comes to use a generic plan for it. Before the partial indexes,
the generic plan of the relay's "record the delivery status" found its one message by reading
every finished message through the status index (seen under bench load: 2 ms at 5,000 sent
messages, and growing with the history). The table is left without statistics, as a new
deployment's is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db.tables import outbox_messages
from onboarding.domain.agreement import DeliveryStatus
from onboarding.service_layer.outbox_relay import DeliveryOutcome
from tests.integration.conftest import T0, MutableClock, new_agreement, statements, unit_of_work
from tests.integration.test_outbox_store import enqueue_code_of, outbox_store

HISTORY = 5_000
#: What may serve a statement on the outbox: the primary key, and indexes that hold one entry
#: per queued message.
ALLOWED = {
    "pk_outbox_messages",
    "sqlite_autoindex_outbox_messages_1",  # SQLite's name for the primary key's index
    "ix_outbox_messages_queued_next_attempt_time",
    "ix_outbox_messages_queued_agreement_reference",
}
PRIMARY_KEY = {"pk_outbox_messages", "sqlite_autoindex_outbox_messages_1"}
OUTBOX_NAMES = {"outbox_messages", "earlier"}


async def add_history(engine: AsyncEngine) -> None:
    """Finished messages, as a server that has run a while has them."""
    rows = [
        {
            "message_id": uuid4(),
            "agreement_reference": uuid4(),
            "status": DeliveryStatus.SENT.value,
            "payload_sealed": None,
            "attempts": 1,
            "next_attempt_time": T0 - timedelta(seconds=n),
            "lease_expire_time": None,
            "create_time": T0 - timedelta(seconds=n),
            "finish_time": T0 - timedelta(seconds=n),
            "last_error": "http 200",
        }
        for n in range(1, HISTORY + 1)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(outbox_messages), rows)


async def outbox_statements(engine: AsyncEngine, clock: MutableClock) -> list[str]:
    """The SQL of all the outbox work: a new code expediting the one before, a claim, the record
    of a sent message and of a retry, and the backlog."""
    agreement = new_agreement(T0)
    sent_id = await enqueue_code_of(engine, clock, agreement)
    retried_id = await enqueue_code_of(engine, clock, new_agreement(T0))
    store = outbox_store(engine, clock)
    with statements(engine) as seen:
        async with unit_of_work(engine, clock) as uow:
            await uow.outbox.expedite(sent_id)
            await uow.commit()
        assert len(await store.claim(10)) == 2
        await store.record(
            [
                DeliveryOutcome(sent_id, DeliveryStatus.SENT, "http 200"),
                DeliveryOutcome(retried_id, None, "http 503", T0 + timedelta(seconds=5)),
            ]
        )
        await store.backlog()
    found = [sql for sql in seen if "outbox_messages" in sql]
    assert len(found) >= 5, found
    return found


class PostgresPlans:
    """Each statement prepared on one connection while the table is still empty, as on a new
    deployment's kept connections, and its generic plan made then; ``plan`` shows the plan it
    keeps using later (adding rows does not make PostgreSQL plan it again)."""

    def __init__(self, driver: Any, table: str = "outbox_messages") -> None:
        self._driver = driver
        self._table = table
        self._names: dict[str, str] = {}

    async def prepare(self, sqls: list[str]) -> None:
        await self._driver.execute("SET plan_cache_mode = force_generic_plan")
        for n, sql in enumerate(sqls):
            self._names[sql] = f"planned_{n}"
            await self._driver.execute(f"PREPARE planned_{n} AS {sql}")
            await self.plan(sql)

    async def plan(self, sql: str) -> list[tuple[str, str | None]]:
        """(node type, index name) of every node of the statement's generic plan that reads the
        table: a scan of the table (no index), or of one of its indexes."""
        count = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
        nulls = f"({', '.join(['NULL'] * count)})" if count else ""
        [row] = await self._driver.fetch(f"EXPLAIN (FORMAT JSON) EXECUTE {self._names[sql]}{nulls}")
        explained = row[0] if isinstance(row[0], list) else json.loads(row[0])  # json codec or not
        return [
            (node["Node Type"], node.get("Index Name"))
            for node in _nodes(explained[0]["Plan"])
            if self._table in node.get("Index Name", "")
            or (node["Node Type"] == "Seq Scan" and node.get("Relation Name") == self._table)
        ]


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def sqlite_plan(
    driver: Any, sql: str, names: set[str] = OUTBOX_NAMES
) -> list[tuple[str, str | None]]:
    """("SCAN" or "SEARCH", index name) of every step of SQLite's plan that reads a table of
    these names (the outbox's, by default)."""
    steps = []
    for *_ids, detail in driver.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")):
        words = detail.split()
        if len(words) > 1 and words[0] in ("SCAN", "SEARCH") and words[1] in names:
            index = re.search(r"USING (?:COVERING )?INDEX (\w+)", detail)
            primary = "USING PRIMARY KEY" in detail or "INTEGER PRIMARY KEY" in detail
            steps.append((words[0], index.group(1) if index else "rowid" if primary else None))
    return steps


async def test_every_outbox_statement_reads_only_the_queue_or_one_row(
    fresh_engine: AsyncEngine, clock: MutableClock
) -> None:
    sqls = [
        sql
        for sql in await outbox_statements(fresh_engine, clock)
        if not sql.lstrip().upper().startswith("INSERT")
    ]

    if fresh_engine.dialect.name == "postgresql":
        async with fresh_engine.connect() as conn:
            raw = await conn.get_raw_connection()
            postgres = PostgresPlans(raw.driver_connection)
            await postgres.prepare(sqls)
            await add_history(fresh_engine)
            plans = {sql: await postgres.plan(sql) for sql in sqls}
    else:  # SQLite plans a statement by its shape alone (no statistics are kept)
        await add_history(fresh_engine)
        async with fresh_engine.connect() as conn:
            driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            plans = {sql: sqlite_plan(driver, sql) for sql in sqls}

    for sql, plan in plans.items():
        assert plan, f"no read of the outbox in the plan of {sql}"
        # A statement on one message reads it by its key, whatever the size of the queue.
        one_message = re.search(r"message_id = (\$\d|\?)", sql) and "IN (SELECT" not in sql
        allowed = PRIMARY_KEY if one_message else ALLOWED
        for _step, index in plan:
            assert index in allowed, f"{sql}\nreads the outbox by {index}: {plan}"
