"""The read model: what callers see of an agreement, and the queries that read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from onboarding.domain.agreement import Agreement, AgreementStatus, DeliveryStatus, OtpPolicy


@dataclass(frozen=True, slots=True)
class AgreementView:
    reference: UUID
    id_hash: str
    phone_masked: str
    status: AgreementStatus
    create_time: datetime
    confirm_time: datetime | None
    revoke_time: datetime | None
    otp_send_time: datetime | None
    otp_expire_time: datetime | None
    otp_attempts_remaining: int
    otp_resend_time: datetime | None
    otp_delivery_status: DeliveryStatus | None
    otp_sends_remaining: int

    @classmethod
    def of(cls, agreement: Agreement, policy: OtpPolicy) -> AgreementView:
        otp = agreement.otp
        pending = agreement.status is AgreementStatus.PENDING
        return cls(
            reference=agreement.reference,
            id_hash=agreement.id_hash,
            phone_masked=agreement.phone_masked,
            status=agreement.status,
            create_time=agreement.create_time,
            confirm_time=agreement.confirm_time,
            revoke_time=agreement.revoke_time,
            otp_send_time=otp.send_time if otp else None,
            otp_expire_time=otp.expire_time if otp else None,
            otp_attempts_remaining=otp.attempts_remaining if otp and pending else 0,
            otp_resend_time=agreement.next_send_time(policy),
            otp_delivery_status=otp.delivery_status if otp else None,
            otp_sends_remaining=(
                max(policy.max_sends_per_agreement - agreement.otp_sends, 0) if pending else 0
            ),
        )


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a page of one client's agreements ends (newest first)."""

    create_time: datetime
    reference: UUID


@dataclass(frozen=True, slots=True)
class AgreementPage:
    agreements: list[AgreementView]
    next_cursor: PageCursor | None


class AgreementReader(Protocol):
    async def get(self, reference: UUID) -> Agreement | None: ...

    async def list_by_client(
        self, id_hash: str, limit: int, after: PageCursor | None
    ) -> list[Agreement]: ...
