"""Read-only queries for the read model: no lock, one statement each."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import Uuid, bindparam, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from onboarding.adapters.db import direct
from onboarding.adapters.db.engine import for_reads
from onboarding.adapters.db.errors import database_errors
from onboarding.adapters.db.mapping import agreement_from_row
from onboarding.adapters.db.migrate import older_revisions
from onboarding.adapters.db.tables import agreements
from onboarding.adapters.db.types import UtcDateTime
from onboarding.domain.agreement import Agreement
from onboarding.service_layer.views import PageCursor

_COLUMNS = [c for c in agreements.c if c.name != "phone_sealed"]
# Built once; values are bound at execution (see repositories).
_BY_REFERENCE = select(*_COLUMNS).where(agreements.c.reference == bindparam("reference"))
_GET = direct.Statement(_BY_REFERENCE)
_BY_CLIENT = (
    select(*_COLUMNS)
    .where(agreements.c.id_hash == bindparam("id_hash"))
    .order_by(agreements.c.create_time.desc(), agreements.c.reference.desc())
    .limit(bindparam("limit"))
)
_BY_CLIENT_AFTER = _BY_CLIENT.where(
    tuple_(agreements.c.create_time, agreements.c.reference)
    < tuple_(bindparam("after_time", type_=UtcDateTime), bindparam("after_reference", type_=Uuid))
)
_SCHEMA_VERSION = text("SELECT version_num FROM alembic_version")


class SchemaNotMigrated(Exception):
    """The database's schema is older than this version's: ``onboarding migrate`` first."""


class SqlAgreementReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._point_engine = engine  # the driver reads in autocommit already (see direct)
        self._engine = for_reads(engine)
        self._older_revisions = older_revisions()

    async def get(self, reference: UUID) -> Agreement | None:
        with database_errors():
            row: Any = await direct.read_one(self._point_engine, _GET, {"reference": reference})
        return agreement_from_row(row) if row is not None else None

    async def list_by_client(
        self, id_hash: str, limit: int, after: PageCursor | None
    ) -> list[Agreement]:
        params: dict[str, object] = {"id_hash": id_hash, "limit": limit}
        stmt = _BY_CLIENT
        if after is not None:
            stmt = _BY_CLIENT_AFTER
            params.update(after_time=after.create_time, after_reference=after.reference)
        with database_errors():
            async with self._engine.connect() as conn:
                rows = (await conn.execute(stmt, params)).all()
        return [agreement_from_row(row) for row in rows]

    async def ping(self) -> None:
        """Raises unless the database answers, with the schema this version needs: migrated
        to this version's head, or past it (a later version migrated it during a rollout)."""
        with database_errors():
            async with self._engine.connect() as conn:
                versions = (await conn.execute(_SCHEMA_VERSION)).scalars().all()
        if not versions or not self._older_revisions.isdisjoint(versions):
            raise SchemaNotMigrated()
