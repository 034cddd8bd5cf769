"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class _SqliteUtcText(SQLITE_DATETIME):
    """SQLite's DATETIME column, with the text passed through: UtcDateTime converts it."""

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class UtcDateTime(TypeDecorator[datetime]):
    """An instant: ``timestamptz`` on PostgreSQL, UTC text on SQLite; always aware UTC in Python.

    SQLite keeps no zone, so values are normalised to UTC on the way in and marked UTC on the
    way out; naive datetimes are refused rather than guessed. The text is SQLAlchemy's own
    storage format for SQLite (``2026-12-02 12:00:00.000000``), written and read here in one
    step: SQLAlchemy's two (zone, then text) cost several times more, on every instant of every
    statement.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SqliteUtcText())
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is not UTC:
            if value.tzinfo is None:
                raise ValueError("naive datetime given for a UtcDateTime column")
            value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # Always six digits of microseconds, as SQLAlchemy writes them: the text is compared
            # as text, so 12:00:00 must not be stored as a prefix of 12:00:00.000001.
            return value.isoformat(" ", "microseconds")[:26]
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite text, in UTC; parsed with a zone: replace() is slower
            return datetime.fromisoformat(value + "+00:00")
        return value if value.tzinfo is UTC else value.astimezone(UTC)
