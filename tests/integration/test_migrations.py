"""The Alembic migrations, run on empty databases of both kinds."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from onboarding.adapters.db import migrate
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.tables import metadata

TABLES = set(metadata.tables)

HEAD = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


async def schema_diff(url: str) -> list[object]:
    def compare(sync: Connection) -> list[object]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_an_empty_database_has_no_revision(empty_database_url: str) -> None:
    assert await migrate.current(empty_database_url) is None


async def test_upgrade_reaches_the_head_revision(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)

    assert await migrate.current(empty_database_url) == HEAD
    assert await table_names(empty_database_url) == TABLES | {"alembic_version"}


async def test_migrated_schema_matches_the_tables_exactly(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)

    assert await schema_diff(empty_database_url) == []


async def test_upgrade_again_at_head_changes_nothing(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)
    await migrate.upgrade(empty_database_url)

    assert await migrate.current(empty_database_url) == HEAD
    assert await schema_diff(empty_database_url) == []


async def test_downgrade_to_base_leaves_only_the_version_table(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)

    await migrate.downgrade(empty_database_url, "base")

    assert await table_names(empty_database_url) == {"alembic_version"}
    assert await migrate.current(empty_database_url) is None


async def test_upgrade_after_downgrade_restores_the_schema(empty_database_url: str) -> None:
    await migrate.upgrade(empty_database_url)
    await migrate.downgrade(empty_database_url, "base")

    await migrate.upgrade(empty_database_url)

    assert await migrate.current(empty_database_url) == HEAD
    assert await schema_diff(empty_database_url) == []
