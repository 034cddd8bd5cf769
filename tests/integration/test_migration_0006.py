"""Migration 0006 keeps every agreement through the upgrade and back, and request_id stays
unique where given."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import IntegrityError

from onboarding.adapters.db import migrate
from onboarding.adapters.db.engine import create_engine
from onboarding.adapters.db.mapping import agreement_to_row
from onboarding.adapters.db.tables import agreements
from tests.integration.conftest import new_agreement


def row(request_id: str | None = None, *, with_code: bool = True) -> dict[str, object]:
    return agreement_to_row(new_agreement(request_id=request_id, with_otp=with_code))


async def insert_rows(url: str, rows: list[dict[str, object]]) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(agreements), rows)
    finally:
        await engine.dispose()


async def stored(url: str) -> set[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                select(agreements.c.reference, agreements.c.request_id, agreements.c.otp_message_id)
            )
            return {tuple(r) for r in found}
    finally:
        await engine.dispose()


async def agreement_indexes(url: str) -> tuple[set[str | None], set[str | None]]:
    """The names of the agreements' unique constraints and of their indexes."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def names(sync: object) -> tuple[set[str | None], set[str | None]]:
                found = inspect(sync)
                return (
                    {c["name"] for c in found.get_unique_constraints("agreements")},
                    {i["name"] for i in found.get_indexes("agreements")},
                )

            return await conn.run_sync(names)
    finally:
        await engine.dispose()


async def test_the_upgrade_keeps_the_agreements_and_drops_two_index_entries(
    empty_database_url: str,
) -> None:
    await migrate.upgrade(empty_database_url, "0005")
    rows = [row("req-1"), row(), row(with_code=False)]
    await insert_rows(empty_database_url, rows)
    before = await stored(empty_database_url)

    await migrate.upgrade(empty_database_url)

    assert await stored(empty_database_url) == before
    constraints, indexes = await agreement_indexes(empty_database_url)
    assert constraints == set()
    assert "ix_agreements_request_id" in indexes
    # Unique where given; any number without one.
    await insert_rows(empty_database_url, [row(with_code=False), row(with_code=False)])
    with pytest.raises(IntegrityError):
        await insert_rows(empty_database_url, [row("req-1", with_code=False)])


async def test_the_downgrade_restores_both_constraints_and_keeps_the_agreements(
    empty_database_url: str,
) -> None:
    await migrate.upgrade(empty_database_url)
    await insert_rows(empty_database_url, [row("req-1"), row(with_code=False)])
    before = await stored(empty_database_url)

    await migrate.downgrade(empty_database_url, "0005")

    assert await stored(empty_database_url) == before
    constraints, indexes = await agreement_indexes(empty_database_url)
    assert constraints == {"uq_agreements_request_id", "uq_agreements_otp_message_id"}
    assert "ix_agreements_request_id" not in indexes
