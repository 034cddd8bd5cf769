"""Leased claims of background work: the outbox's messages and the INN jobs.

A claim is one statement: take up to ``limit`` due rows that nobody holds (or whose holder's
lease ran out), oldest first, give them a lease until ``until`` and count the attempt. On
PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several processes claim disjoint rows at once; on
SQLite the statement's write lock serialises claims.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Table, bindparam, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from onboarding.adapters.crypto import Sealer
from onboarding.adapters.db import direct
from onboarding.adapters.db.errors import database_errors


def claim_statement(
    table: Table,
    key: Column[Any],
    *conditions: ColumnElement[bool],
    returning: Sequence[Column[Any]],
) -> direct.Statement:
    """Built once; executed with ``now``, ``until`` and ``limit``."""
    due = (
        select(key)
        .where(
            table.c.next_attempt_time <= bindparam("now"),
            or_(table.c.lease_expire_time.is_(None), table.c.lease_expire_time < bindparam("now")),
            *conditions,
        )
        .order_by(table.c.next_attempt_time)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return direct.Statement(
        update(table)
        .where(key.in_(due.scalar_subquery()))
        .values(lease_expire_time=bindparam("until"), attempts=table.c.attempts + 1)
        .returning(*returning)
    )


class LeasedStore:
    """What the outbox store and the INN job store share: an engine, the sealer for what the
    claimed rows hold, a clock, and the lease a claim gives."""

    def __init__(
        self,
        engine: Any,
        sealer: Sealer,
        clock: Callable[[], datetime],
        lease: timedelta,
    ) -> None:
        self._engine = engine
        self._sealer = sealer
        self._clock = clock
        self._lease = lease

    async def _claim(self, statement: direct.Statement, limit: int) -> list[Any]:
        now = self._clock()
        parameters = {"now": now, "until": now + self._lease, "limit": limit}
        # One statement, atomic on its own: no BEGIN and COMMIT around it.
        with database_errors():
            async with direct.autocommit(self._engine) as conn:
                return await conn.fetch_all(statement, parameters)
