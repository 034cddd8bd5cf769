"""The lookups' index by person holds only pending lookups, not every lookup ever made.

It serves one statement: an answer from service.nalog.ru finishing its person's pending
lookups. Before, every lookup had an entry, so a cached FindInn, which adds a lookup already
finished, wrote one more index entry (at a random place in the index: the key is an HMAC)
than it needed, and the index grew with the history.

On PostgreSQL the upgrade holds the lookups against writes while it builds the new index,
which reads the table once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PENDING = "status = 'PENDING'"


def upgrade() -> None:
    op.drop_index("ix_inn_lookups_person_key_status", table_name="inn_lookups")
    op.create_index(
        "ix_inn_lookups_pending_person_key",
        "inn_lookups",
        ["person_key"],
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_inn_lookups_pending_person_key", table_name="inn_lookups")
    op.create_index("ix_inn_lookups_person_key_status", "inn_lookups", ["person_key", "status"])
