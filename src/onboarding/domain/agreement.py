"""The Agreement aggregate: a client's consent, confirmed by a one-time code sent by SMS."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol
from uuid import UUID, uuid4

from onboarding.domain import errors, events
from onboarding.domain.phone import PhoneNumber
from onboarding.domain.quota import PhoneSendQuota


class AgreementStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REVOKED = "REVOKED"


class DeliveryStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class OtpPolicy:
    length: int = 6
    ttl: timedelta = timedelta(seconds=600)
    max_attempts: int = 3
    resend_interval: timedelta = timedelta(seconds=60)
    max_sends_per_agreement: int = 5
    max_sends_per_phone: int = 10
    phone_window: timedelta = timedelta(hours=1)

    def check_code_format(self, code: str) -> None:
        """A malformed code is a bad request, never a try."""
        if len(code) != self.length or not (code.isascii() and code.isdigit()):
            raise errors.InvalidRequest.single("code", f"must be {self.length} digits")


class CodeHasher(Protocol):
    """Keyed MAC of a code, bound to the code's message; implemented by an adapter."""

    def mac(self, message_id: UUID, code: str) -> bytes: ...


def generate_code(length: int) -> str:
    """Uniform over all ``length``-digit strings, leading zeros included: one draw from the
    system's CSPRNG (a draw per digit cost a getrandom call each)."""
    return f"{secrets.randbelow(10**length):0{length}d}"


@dataclass(frozen=True, slots=True)
class Otp:
    """The current code of an agreement. Only its MAC is kept, never the code."""

    message_id: UUID
    code_mac: bytes = field(repr=False)
    send_time: datetime
    expire_time: datetime
    attempts_remaining: int
    delivery_status: DeliveryStatus = DeliveryStatus.QUEUED

    def matches(self, candidate_mac: bytes) -> bool:
        return hmac.compare_digest(self.code_mac, candidate_mac)


@dataclass(eq=False, slots=True)
class Agreement:
    reference: UUID
    id_hash: str
    phone_mac: bytes = field(repr=False)
    phone_masked: str
    create_time: datetime
    status: AgreementStatus = AgreementStatus.PENDING
    request_id: str | None = None
    #: The whole number, needed only to send codes; dropped once the agreement is final.
    phone: PhoneNumber | None = field(default=None, repr=False)
    confirm_time: datetime | None = None
    revoke_time: datetime | None = None
    otp: Otp | None = None
    otp_sends: int = 0
    events: list[events.Event] = field(default_factory=list, repr=False)

    @classmethod
    def create(
        cls,
        *,
        id_hash: str,
        phone: PhoneNumber,
        phone_mac: bytes,
        request_id: str | None,
        now: datetime,
        reference: UUID | None = None,
    ) -> Agreement:
        agreement = cls(
            reference=reference or uuid4(),
            id_hash=id_hash,
            phone=phone,
            phone_mac=phone_mac,
            phone_masked=phone.masked,
            create_time=now,
            request_id=request_id,
        )
        agreement.events.append(events.AgreementCreated(agreement.reference))
        return agreement

    def same_request(self, id_hash: str, phone_mac: bytes) -> bool:
        """Whether a repeated CreateAgreement with this agreement's request_id asks the same."""
        return self.id_hash == id_hash and hmac.compare_digest(self.phone_mac, phone_mac)

    # -- sending codes -------------------------------------------------------------------

    def next_send_time(self, policy: OtpPolicy) -> datetime | None:
        """The earliest moment SendOtp may succeed, or None when no more sends are allowed."""
        if self.status is not AgreementStatus.PENDING:
            return None
        if self.otp_sends >= policy.max_sends_per_agreement:
            return None
        if self.otp is None:
            return self.create_time
        return self.otp.send_time + policy.resend_interval

    def issue_otp(
        self, *, now: datetime, policy: OtpPolicy, hasher: CodeHasher, quota: PhoneSendQuota
    ) -> None:
        """Make a new code (the previous one stops working) and ask for it to be sent."""
        self._require_pending()
        if self.otp_sends >= policy.max_sends_per_agreement:
            raise errors.OtpSendLimit(
                "agreement",
                policy.max_sends_per_agreement,
                f"at most {policy.max_sends_per_agreement} codes per agreement",
            )
        if self.otp is not None and now < self.otp.send_time + policy.resend_interval:
            raise errors.OtpResendTooEarly(self.otp.send_time + policy.resend_interval - now)
        if self.phone is None:  # pragma: no cover - a pending agreement always keeps its phone
            raise errors.AgreementNotPending(self.status.value)
        quota.take(now, policy.max_sends_per_phone, policy.phone_window)

        superseded = self._undelivered_message_id()
        code = generate_code(policy.length)
        message_id = uuid4()
        self.otp = Otp(
            message_id=message_id,
            code_mac=hasher.mac(message_id, code),
            send_time=now,
            expire_time=now + policy.ttl,
            attempts_remaining=policy.max_attempts,
        )
        self.otp_sends += 1
        self.events.append(
            events.OtpIssued(self.reference, message_id, self.phone.e164, code, superseded)
        )

    # -- confirming ----------------------------------------------------------------------

    def confirm(self, *, code: str, now: datetime, policy: OtpPolicy, hasher: CodeHasher) -> None:
        """Check a code. A wrong one uses up a try (``OtpInvalid`` persists that fact)."""
        policy.check_code_format(code)
        if self.status is AgreementStatus.CONFIRMED:
            # The same correct code again after success is answered OK: the caller may be
            # retrying a call whose answer it lost.
            if self.otp is not None and self.otp.matches(hasher.mac(self.otp.message_id, code)):
                return
            raise errors.AgreementNotPending(self.status.value)
        self._require_pending()
        otp = self.otp
        if otp is None:
            raise errors.OtpNotSent()
        if otp.attempts_remaining <= 0:
            raise errors.OtpAttemptsExhausted()
        if now >= otp.expire_time:
            raise errors.OtpExpired()
        if not otp.matches(hasher.mac(otp.message_id, code)):
            self.otp = replace(otp, attempts_remaining=otp.attempts_remaining - 1)
            raise errors.OtpInvalid(self.otp.attempts_remaining)
        self.status = AgreementStatus.CONFIRMED
        self.confirm_time = now
        self.phone = None
        self.events.append(events.AgreementConfirmed(self.reference))

    # -- revoking ------------------------------------------------------------------------

    def revoke(self, *, now: datetime) -> None:
        """Withdraw consent, or cancel a pending agreement. Final; repeating it changes nothing."""
        if self.status is AgreementStatus.REVOKED:
            return
        self.status = AgreementStatus.REVOKED
        self.revoke_time = now
        self.phone = None
        self.events.append(events.AgreementRevoked(self.reference))

    def record_delivery(self, message_id: UUID, status: DeliveryStatus) -> None:
        if self.otp is not None and self.otp.message_id == message_id:
            self.otp = replace(self.otp, delivery_status=status)

    def _undelivered_message_id(self) -> UUID | None:
        """The current code's message while it may still be waiting to be handed over."""
        if self.otp is not None and self.otp.delivery_status is DeliveryStatus.QUEUED:
            return self.otp.message_id
        return None

    def _require_pending(self) -> None:
        if self.status is not AgreementStatus.PENDING:
            raise errors.AgreementNotPending(self.status.value)
