"""Domain events: facts that happened inside an aggregate, handled in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID


class Event:
    """Base class of all domain events."""


@dataclass(frozen=True, slots=True)
class AgreementCreated(Event):
    reference: UUID


@dataclass(frozen=True, slots=True)
class OtpIssued(Event):
    """A new code exists and must reach the phone. The code lives only in memory and in the
    encrypted outbox row; ``repr`` hides it so it can never be logged by accident."""

    reference: UUID
    message_id: UUID
    phone_e164: str = field(repr=False)
    code: str = field(repr=False)
    #: The previous code's message, when it may not have been handed to the gateway yet: it
    #: goes first, at once, so this one is not held back long behind it.
    superseded_message_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class AgreementConfirmed(Event):
    reference: UUID


@dataclass(frozen=True, slots=True)
class AgreementRevoked(Event):
    reference: UUID
