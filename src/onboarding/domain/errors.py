"""Domain errors: every broken rule has its own class and the contract's reason.

The gRPC layer maps each reason to a status code; the domain knows nothing of gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """A rule of the domain was broken. ``reason`` is the contract's error reason."""

    reason: str = "DOMAIN_ERROR"
    #: The state change that led to the error is a fact to keep (a wrong code uses up a try):
    #: the unit of work commits before the error reaches the caller.
    persists: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DomainError):
    reason = "INVALID_REQUEST"

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations

    @classmethod
    def single(cls, field: str, description: str) -> InvalidRequest:
        return cls([FieldViolation(field, description)])


class InvalidValue(ValueError):
    """A value object refused its raw input; the caller names the field."""


class AgreementNotFound(DomainError):
    reason = "AGREEMENT_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("agreement not found")


class LookupNotFound(DomainError):
    reason = "LOOKUP_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("no lookup with this request_id")


class AgreementNotPending(DomainError):
    reason = "AGREEMENT_NOT_PENDING"

    def __init__(self, status: str) -> None:
        super().__init__(f"agreement is {status.lower()}, not pending")
        self.status = status


class OtpNotSent(DomainError):
    reason = "OTP_NOT_SENT"

    def __init__(self) -> None:
        super().__init__("no code has been sent for this agreement yet")


class OtpInvalid(DomainError):
    reason = "OTP_INVALID"
    persists = True

    def __init__(self, attempts_remaining: int) -> None:
        super().__init__(f"wrong code, {attempts_remaining} attempts remaining")
        self.attempts_remaining = attempts_remaining


class OtpAttemptsExhausted(DomainError):
    reason = "OTP_ATTEMPTS_EXHAUSTED"

    def __init__(self) -> None:
        super().__init__("this code has no attempts left, request a new one")


class OtpExpired(DomainError):
    reason = "OTP_EXPIRED"

    def __init__(self) -> None:
        super().__init__("this code has expired, request a new one")


class OtpResendTooEarly(DomainError):
    reason = "OTP_RESEND_TOO_EARLY"

    def __init__(self, retry_after: timedelta) -> None:
        seconds = max(retry_after.total_seconds(), 0.0)
        super().__init__(f"a code was sent recently, retry in {seconds:.0f} s")
        self.retry_after = retry_after


class OtpSendLimit(DomainError):
    reason = "OTP_SEND_LIMIT"

    def __init__(self, subject: str, limit: int, description: str) -> None:
        super().__init__(description)
        #: ``agreement`` or ``phone``: which quota ran out.
        self.subject = subject
        self.limit = limit


class RequestIdConflict(DomainError):
    reason = "REQUEST_ID_CONFLICT"

    def __init__(self) -> None:
        super().__init__("request_id was already used with other fields")
