"""Alembic environment: migrations run on the connection ``migrate.upgrade`` passes in, or on
one made from ONBOARDING_DATABASE_URL when the alembic command line runs them."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from onboarding.adapters.db.tables import metadata

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_settings() -> None:
    from onboarding.adapters.db.engine import create_engine
    from onboarding.config import Settings

    engine = create_engine(Settings().database_url)
    async with engine.begin() as conn:
        await conn.run_sync(run_on)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `onboarding migrate`")

connection = config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    asyncio.run(run_from_settings())
