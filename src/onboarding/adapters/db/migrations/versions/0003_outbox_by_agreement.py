"""An index of the outbox by agreement: the relay hands an agreement's messages over one at a
time, oldest first, and a new code makes the one before it due at once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_messages_agreement_reference", "outbox_messages", ["agreement_reference"]
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_messages_agreement_reference", table_name="outbox_messages")
