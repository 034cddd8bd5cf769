"""Turning request fields into domain values, collecting one violation per bad field."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from onboarding.domain.errors import FieldViolation, InvalidRequest, InvalidValue

T = TypeVar("T")


class Fields:
    """Parse each field with ``field``; ``check`` raises InvalidRequest if any failed."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def field(self, name: str, parse: Callable[[str], T], raw: str) -> T:
        try:
            return parse(raw)
        except InvalidValue as error:
            self.violations.append(FieldViolation(name, str(error)))
            return None  # type: ignore[return-value]  # never used: check() raises

    def check(self) -> None:
        if self.violations:
            raise InvalidRequest(self.violations)


def text(*, min_length: int, max_length: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if len(raw) < min_length:
            raise InvalidValue("is required" if min_length == 1 else f"needs {min_length} chars")
        if len(raw) > max_length:
            raise InvalidValue(f"must be at most {max_length} characters")
        if not raw.isprintable():
            raise InvalidValue("must not contain control characters")
        return raw

    return parse


def optional_text(*, max_length: int) -> Callable[[str], str | None]:
    parse_text = text(min_length=1, max_length=max_length)

    def parse(raw: str) -> str | None:
        return parse_text(raw) if raw else None

    return parse


_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def uuid(raw: str) -> UUID:
    if not raw:
        raise InvalidValue("is required")
    # uuid.UUID alone would take signs, underscores and non-ASCII digits (it uses int(…, 16)).
    if not _UUID.fullmatch(raw):
        raise InvalidValue("must be a UUID")
    return UUID(raw)
