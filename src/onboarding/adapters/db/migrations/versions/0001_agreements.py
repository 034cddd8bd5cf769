"""Agreements, the per-phone send quota and the SMS outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agreements",
        sa.Column("reference", sa.Uuid(), nullable=False),
        sa.Column("id_hash", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phone_mac", sa.LargeBinary(32), nullable=False),
        sa.Column("phone_masked", sa.String(32), nullable=False),
        sa.Column("phone_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("create_time", Instant, nullable=False),
        sa.Column("confirm_time", Instant, nullable=True),
        sa.Column("revoke_time", Instant, nullable=True),
        sa.Column("otp_message_id", sa.Uuid(), nullable=True),
        sa.Column("otp_code_mac", sa.LargeBinary(32), nullable=True),
        sa.Column("otp_send_time", Instant, nullable=True),
        sa.Column("otp_expire_time", Instant, nullable=True),
        sa.Column("otp_attempts_remaining", sa.Integer(), nullable=False),
        sa.Column("otp_delivery_status", sa.String(16), nullable=True),
        sa.Column("otp_sends", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("reference", name="pk_agreements"),
        sa.UniqueConstraint("request_id", name="uq_agreements_request_id"),
        sa.UniqueConstraint("otp_message_id", name="uq_agreements_otp_message_id"),
    )
    op.create_index(
        "ix_agreements_id_hash_create_time",
        "agreements",
        ["id_hash", "create_time", "reference"],
    )
    op.create_table(
        "phone_send_quotas",
        sa.Column("phone_mac", sa.LargeBinary(32), nullable=False),
        sa.Column("send_times", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("phone_mac", name="pk_phone_send_quotas"),
    )
    op.create_table(
        "outbox_messages",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("agreement_reference", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time", Instant, nullable=False),
        sa.Column("lease_expire_time", Instant, nullable=True),
        sa.Column("create_time", Instant, nullable=False),
        sa.Column("finish_time", Instant, nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name="pk_outbox_messages"),
    )
    op.create_index(
        "ix_outbox_messages_status_next_attempt_time",
        "outbox_messages",
        ["status", "next_attempt_time"],
    )


def downgrade() -> None:
    op.drop_table("outbox_messages")
    op.drop_table("phone_send_quotas")
    op.drop_index("ix_agreements_id_hash_create_time", table_name="agreements")
    op.drop_table("agreements")
