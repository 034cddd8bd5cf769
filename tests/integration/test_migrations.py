"""The Alembic migrations, run on empty databases of both kinds."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from onboarding.adapters.db import migrate
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.reader import SchemaNotMigrated, SqlAgreementReader
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


# -- readiness: a server is not ready on a schema older than its own ---------------------------


async def test_the_readiness_check_wants_the_schema_at_this_versions_head(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    reader = SqlAgreementReader(engine)
    try:
        with pytest.raises(Exception):  # noqa: B017 - no alembic_version table: any error will do
            await reader.ping()
        await migrate.upgrade(empty_database_url, "0001")
        with pytest.raises(SchemaNotMigrated):
            await reader.ping()
        await migrate.upgrade(empty_database_url)
        await reader.ping()
    finally:
        await engine.dispose()


async def test_a_schema_past_this_versions_head_is_ready(empty_database_url: str) -> None:
    # During a rollout the next version's migration may run before the last pods of this one
    # are gone: they keep serving. A revision this version does not know is a later one.
    await migrate.upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await SqlAgreementReader(engine).ping()
    finally:
        await engine.dispose()
