"""Agreements keep two fewer index entries: none for ``otp_message_id``, none for a missing
``request_id``.

Every B-tree a transaction touches is at least one page written at its commit, and on SQLite
the commit is the largest single cost of ``CreateAgreement``. Two of the agreements' indexes
did not earn theirs:

- ``otp_message_id`` was unique and indexed so that the relay could find the agreement of a
  delivered message. The outbox row already names that agreement, whose primary key then finds
  it; and message ids are new UUIDs, the outbox's own primary key, so nothing needs the
  uniqueness checked twice. Every new code wrote an entry (two with the old one's removal).
- ``request_id`` stays unique, but only where it was given: a call without one wrote a NULL
  entry that no lookup ever reads.

On PostgreSQL the upgrade holds the agreements against writes while it builds the partial
index, which reads the table once. On SQLite dropping a constraint rebuilds the table (Alembic's
batch mode): the upgrade copies the agreements once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_GIVEN = "request_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("agreements") as batch:
        batch.drop_constraint("uq_agreements_otp_message_id", type_="unique")
        batch.drop_constraint("uq_agreements_request_id", type_="unique")
    op.create_index(
        "ix_agreements_request_id",
        "agreements",
        ["request_id"],
        unique=True,
        postgresql_where=sa.text(_GIVEN),
        sqlite_where=sa.text(_GIVEN),
    )


def downgrade() -> None:
    op.drop_index("ix_agreements_request_id", table_name="agreements")
    with op.batch_alter_table("agreements") as batch:
        batch.create_unique_constraint("uq_agreements_request_id", ["request_id"])
        batch.create_unique_constraint("uq_agreements_otp_message_id", ["otp_message_id"])
