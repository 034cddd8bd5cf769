"""Phone numbers: parsed from any common notation, kept in E.164, shown only masked."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from onboarding.domain.errors import InvalidValue

_MAX_RAW_LENGTH = 32
# Digits and the usual separators only: phonenumbers would read letters as keypad digits
# ("8 916 ABC…" becomes a different, real number) and drop extensions silently.
_NOTATION = re.compile(r"\+?[0-9 ()\-.]+")
_HIDDEN_AT_LEAST = 4


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    e164: str

    @classmethod
    def parse(cls, raw: str, default_region: str = "RU") -> PhoneNumber:
        text = raw.strip()
        if not text:
            raise InvalidValue("is required")
        if len(text) > _MAX_RAW_LENGTH:
            raise InvalidValue(f"must be at most {_MAX_RAW_LENGTH} characters")
        if not _NOTATION.fullmatch(text):
            raise InvalidValue("may hold only digits, spaces, '+', '-', '.', '(' and ')'")
        try:
            parsed = phonenumbers.parse(text, default_region)
        except phonenumbers.NumberParseException:
            raise InvalidValue("is not a phone number") from None
        if not phonenumbers.is_valid_number(parsed):
            raise InvalidValue("is not a valid phone number")
        return cls(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))

    @property
    def masked(self) -> str:
        """``+7916*****67``: the country code and a few digits, then the last two; at least
        four digits stay hidden, however short the number."""
        keep_head = max(1, min(5, len(self.e164) - 2 - _HIDDEN_AT_LEAST))
        hidden = len(self.e164) - keep_head - 2
        return self.e164[:keep_head] + "*" * hidden + self.e164[-2:]

    def __repr__(self) -> str:
        return f"PhoneNumber({self.masked!r})"

    __str__ = __repr__
