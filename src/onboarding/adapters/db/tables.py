"""The schema as SQLAlchemy Core tables. Alembic migrations create it; a test checks they agree."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    literal_column,
    text,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import NamedFromClause

from onboarding.adapters.db.types import UtcDateTime
from onboarding.domain.agreement import DeliveryStatus
from onboarding.domain.inn import LookupStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_GIVEN_ONLY = "request_id IS NOT NULL"

agreements = Table(
    "agreements",
    metadata,
    Column("reference", Uuid, primary_key=True),
    Column("id_hash", String(128), nullable=False),
    # The caller's idempotency key, when given; unique among those given (see the index below).
    Column("request_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    # HMAC of the E.164 number: idempotency checks and the per-phone quota, without the number.
    Column("phone_mac", LargeBinary(32), nullable=False),
    Column("phone_masked", String(32), nullable=False),
    # The number itself, AES-GCM sealed; erased once the agreement is confirmed or revoked.
    Column("phone_sealed", LargeBinary, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    Column("confirm_time", UtcDateTime, nullable=True),
    Column("revoke_time", UtcDateTime, nullable=True),
    # The current code's outbox message: not indexed, the outbox row names its agreement.
    Column("otp_message_id", Uuid, nullable=True),
    Column("otp_code_mac", LargeBinary(32), nullable=True),
    Column("otp_send_time", UtcDateTime, nullable=True),
    Column("otp_expire_time", UtcDateTime, nullable=True),
    Column("otp_attempts_remaining", Integer, nullable=False, default=0),
    Column("otp_delivery_status", String(16), nullable=True),
    Column("otp_sends", Integer, nullable=False, default=0),
    Index("ix_agreements_id_hash_create_time", "id_hash", "create_time", "reference"),
    # Only where given: a call without one writes no entry (migration 0006).
    Index(
        "ix_agreements_request_id",
        "request_id",
        unique=True,
        postgresql_where=text(_GIVEN_ONLY),
        sqlite_where=text(_GIVEN_ONLY),
    ),
)

phone_send_quotas = Table(
    "phone_send_quotas",
    metadata,
    Column("phone_mac", LargeBinary(32), primary_key=True),
    # Space-separated UTC epoch seconds of the sends inside the window; pruned on every send.
    Column("send_times", Text, nullable=False, default=""),
)

#: The condition of the outbox's partial indexes: the messages not yet sent or failed.
_QUEUED = f"'{DeliveryStatus.QUEUED.value}'"
_QUEUED_ONLY = f"status = {_QUEUED}"

outbox_messages = Table(
    "outbox_messages",
    metadata,
    Column("message_id", Uuid, primary_key=True),
    Column("agreement_reference", Uuid, nullable=False),
    Column("status", String(16), nullable=False),
    # The phone and the text (which holds the code), AES-GCM sealed with the message id as
    # associated data; erased as soon as the message is sent or has failed.
    Column("payload_sealed", LargeBinary, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_time", UtcDateTime, nullable=False),
    Column("lease_expire_time", UtcDateTime, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    Column("finish_time", UtcDateTime, nullable=True),
    Column("last_error", String(200), nullable=True),
    # The outbox keeps every message's row (without its payload) after the hand-over; its two
    # indexes hold only the queue, so they stay as small as the queue however long the history.
    Index(
        "ix_outbox_messages_queued_next_attempt_time",
        "next_attempt_time",
        postgresql_where=text(_QUEUED_ONLY),
        sqlite_where=text(_QUEUED_ONLY),
    ),
    Index(
        "ix_outbox_messages_queued_agreement_reference",
        "agreement_reference",
        postgresql_where=text(_QUEUED_ONLY),
        sqlite_where=text(_QUEUED_ONLY),
    ),
)


def queued(outbox: NamedFromClause) -> ColumnElement[bool]:
    """``status = 'QUEUED'`` with the value written into the SQL. A bound value would keep the
    databases from using the partial indexes above: a statement prepared once must suit any
    value, and SQLite matches an index's condition only against the same literal."""
    return outbox.c.status == literal_column(_QUEUED)


# -- INN lookups ---------------------------------------------------------------------------

#: The condition of the lookups' partial index: the lookups still waiting for an answer.
_PENDING = f"'{LookupStatus.PENDING.value}'"
_PENDING_ONLY = f"status = {_PENDING}"


def pending(lookups: NamedFromClause) -> ColumnElement[bool]:
    """``status = 'PENDING'`` written into the SQL, for the partial index (as ``queued``)."""
    return lookups.c.status == literal_column(_PENDING)


inn_lookups = Table(
    "inn_lookups",
    metadata,
    Column("request_id", String(64), primary_key=True),
    # HMAC of the normalised personal data: joins a lookup to its person without the data.
    Column("person_key", LargeBinary(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("inn", String(12), nullable=True),
    Column("cached", Boolean, nullable=False),
    Column("details", String(300), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("finish_time", UtcDateTime, nullable=True),
    # Only the pending lookups, which an answer finishes by person: a finished lookup (every
    # cached one, from the start) writes no index entry but its key's.
    Index(
        "ix_inn_lookups_pending_person_key",
        "person_key",
        postgresql_where=text(_PENDING_ONLY),
        sqlite_where=text(_PENDING_ONLY),
    ),
)

# One row per person with a lookup in progress; the only place passport data ever rests,
# sealed, and deleted the moment the lookup ends.
inn_jobs = Table(
    "inn_jobs",
    metadata,
    Column("person_key", LargeBinary(32), primary_key=True),
    Column("person_sealed", LargeBinary, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("details", String(300), nullable=False),
    Column("next_attempt_time", UtcDateTime, nullable=False),
    Column("lease_expire_time", UtcDateTime, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    Index("ix_inn_jobs_next_attempt_time", "next_attempt_time"),
)

# Answers reused for the same person: FOUND and NOT_FOUND only, each until its expiry.
inn_results = Table(
    "inn_results",
    metadata,
    Column("person_key", LargeBinary(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("inn", String(12), nullable=True),
    Column("fetch_time", UtcDateTime, nullable=False),
    Column("expire_time", UtcDateTime, nullable=False),
)

# Shared by all processes: after a captcha no one calls the upstream until pause_until.
upstream_pauses = Table(
    "upstream_pauses",
    metadata,
    Column("upstream", String(32), primary_key=True),
    Column("pause_until", UtcDateTime, nullable=False),
)
