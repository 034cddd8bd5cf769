"""The SQL unit of work: one connection, one transaction, the repositories over it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.crypto import Sealer
from onboarding.adapters.db import direct
from onboarding.adapters.db.errors import database_errors, translate
from onboarding.adapters.db.inline_sqlite import InlineEngine
from onboarding.adapters.db.inn_repositories import (
    SqlInnJobRepository,
    SqlInnLookupRepository,
    SqlInnResultRepository,
    SqlUpstreamPauses,
)
from onboarding.adapters.db.repositories import (
    SqlAgreementRepository,
    SqlOutbox,
    SqlPhoneQuotaRepository,
)


class _SqlWork:
    """One connection from ``__aenter__`` to ``__aexit__``, given back either way; the database's
    errors leave as the service layer's."""

    _conn: direct.Connection | None = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()  # rolls back whatever was not committed
            except Exception:  # noqa: S110 - the connection is gone; the pool discards it
                pass
        if exc is not None:
            translated = translate(exc)
            if translated is not None:
                raise translated from exc


class SqlUnitOfWork(_SqlWork):
    """One transaction (see ``direct.begin``) and every repository over it."""

    agreements: SqlAgreementRepository
    phone_quotas: SqlPhoneQuotaRepository
    outbox: SqlOutbox
    inn_lookups: SqlInnLookupRepository
    inn_jobs: SqlInnJobRepository
    inn_results: SqlInnResultRepository
    upstream_pauses: SqlUpstreamPauses

    def __init__(
        self,
        engine: AsyncEngine | InlineEngine,
        sealer: Sealer,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._sealer = sealer
        self._clock = clock

    async def __aenter__(self) -> SqlUnitOfWork:
        # Every unit of work writes: on SQLite the write lock is taken at BEGIN; on PostgreSQL
        # the BEGIN waits for a statement that needs it, and may never be sent (see
        # ``PgConnection``). A BEGIN that fails gives its connection back.
        with database_errors():
            conn = await direct.begin_when_needed(self._engine)
        self._conn = conn
        self.agreements = SqlAgreementRepository(conn, self._sealer)
        self.phone_quotas = SqlPhoneQuotaRepository(conn)
        self.outbox = SqlOutbox(conn, self._sealer, self._clock)
        self.inn_lookups = SqlInnLookupRepository(conn)
        self.inn_jobs = SqlInnJobRepository(conn, self._sealer)
        self.inn_results = SqlInnResultRepository(conn)
        self.upstream_pauses = SqlUpstreamPauses(conn)
        return self

    async def flush(self) -> None:
        """Writes every change now, without committing."""
        assert self._conn is not None
        await self._queue_changes()
        await self._conn.send_deferred()

    async def commit(self) -> None:
        assert self._conn is not None
        await self._queue_changes()
        try:
            await self._conn.commit()  # sends the queued writes: perhaps as the only statement
        except direct.StaleRead:
            self.phone_quotas.lost_race()
            raise

    async def _queue_changes(self) -> None:
        """The repositories' changes, as writes queued on the connection (see ``direct``)."""
        await self.agreements.flush()
        await self.phone_quotas.flush()


class SqlAutocommitWork(_SqlWork):
    """The INN repositories over a connection without a transaction: each statement commits
    on its own (see ``AutocommitWork``)."""

    inn_lookups: SqlInnLookupRepository

    def __init__(self, engine: AsyncEngine | InlineEngine) -> None:
        self._engine = engine

    async def __aenter__(self) -> SqlAutocommitWork:
        with database_errors():
            conn = await direct.connect(self._engine)
        self._conn = conn
        self.inn_lookups = SqlInnLookupRepository(conn)
        return self
