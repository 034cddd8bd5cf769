"""Commands: what callers ask the service to do, already validated into domain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from onboarding.domain.inn import PersonData, UpstreamAnswer
from onboarding.domain.phone import PhoneNumber


class Command:
    """Base class of all commands."""


@dataclass(frozen=True, slots=True)
class CreateAgreement(Command):
    id_hash: str
    phone: PhoneNumber
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class SendOtp(Command):
    reference: UUID


@dataclass(frozen=True, slots=True)
class ConfirmOtp(Command):
    reference: UUID
    code: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RevokeAgreement(Command):
    reference: UUID


@dataclass(frozen=True, slots=True)
class StartInnLookup(Command):
    request_id: str
    person: PersonData = field(repr=False)
    person_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RecordUpstreamAnswer(Command):
    person_key: bytes = field(repr=False)
    answer: UpstreamAnswer
    #: Upstream calls made for this person, this one included.
    attempts: int
