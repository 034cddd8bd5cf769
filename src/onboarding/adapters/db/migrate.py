"""Schema migrations with Alembic, run on one of our own async connections.

``onboarding migrate`` calls :func:`upgrade`; the ``alembic`` command works too, from the
project root, with ``-c src/onboarding/adapters/db/alembic.ini``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from onboarding.adapters.db.engine import create_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def older_revisions() -> frozenset[str]:
    """The revisions before this version's head: a database at one of them is not migrated."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    return frozenset(r.revision for r in script.walk_revisions() if r.revision != head)


async def upgrade(database_url: str, revision: str = "head") -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
    finally:
        await engine.dispose()


async def downgrade(database_url: str, revision: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))
    finally:
        await engine.dispose()


async def current(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()
