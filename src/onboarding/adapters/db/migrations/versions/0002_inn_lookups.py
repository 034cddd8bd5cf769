"""INN lookups, the jobs that hold passport data while a lookup runs, cached answers, and the
shared upstream pause.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inn_lookups",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("person_key", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inn", sa.String(12), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("details", sa.String(300), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("create_time", Instant, nullable=False),
        sa.Column("finish_time", Instant, nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_inn_lookups"),
    )
    op.create_index("ix_inn_lookups_person_key_status", "inn_lookups", ["person_key", "status"])
    op.create_table(
        "inn_jobs",
        sa.Column("person_key", sa.LargeBinary(32), nullable=False),
        sa.Column("person_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("details", sa.String(300), nullable=False),
        sa.Column("next_attempt_time", Instant, nullable=False),
        sa.Column("lease_expire_time", Instant, nullable=True),
        sa.Column("create_time", Instant, nullable=False),
        sa.PrimaryKeyConstraint("person_key", name="pk_inn_jobs"),
    )
    op.create_index("ix_inn_jobs_next_attempt_time", "inn_jobs", ["next_attempt_time"])
    op.create_table(
        "inn_results",
        sa.Column("person_key", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inn", sa.String(12), nullable=True),
        sa.Column("fetch_time", Instant, nullable=False),
        sa.Column("expire_time", Instant, nullable=False),
        sa.PrimaryKeyConstraint("person_key", name="pk_inn_results"),
    )
    op.create_table(
        "upstream_pauses",
        sa.Column("upstream", sa.String(32), nullable=False),
        sa.Column("pause_until", Instant, nullable=False),
        sa.PrimaryKeyConstraint("upstream", name="pk_upstream_pauses"),
    )


def downgrade() -> None:
    op.drop_table("upstream_pauses")
    op.drop_table("inn_results")
    op.drop_index("ix_inn_jobs_next_attempt_time", table_name="inn_jobs")
    op.drop_table("inn_jobs")
    op.drop_index("ix_inn_lookups_person_key_status", table_name="inn_lookups")
    op.drop_table("inn_lookups")
