"""Rows to domain objects and back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from onboarding.domain.agreement import Agreement, AgreementStatus, DeliveryStatus, Otp
from onboarding.domain.phone import PhoneNumber


def agreement_from_row(row: Row[Any], phone: PhoneNumber | None = None) -> Agreement:
    otp = None
    if row.otp_message_id is not None:
        otp = Otp(
            message_id=row.otp_message_id,
            code_mac=row.otp_code_mac,
            send_time=row.otp_send_time,
            expire_time=row.otp_expire_time,
            attempts_remaining=row.otp_attempts_remaining,
            delivery_status=DeliveryStatus(row.otp_delivery_status),
        )
    return Agreement(
        reference=row.reference,
        id_hash=row.id_hash,
        phone_mac=row.phone_mac,
        phone_masked=row.phone_masked,
        create_time=row.create_time,
        status=AgreementStatus(row.status),
        request_id=row.request_id,
        phone=phone,
        confirm_time=row.confirm_time,
        revoke_time=row.revoke_time,
        otp=otp,
        otp_sends=row.otp_sends,
    )


def agreement_to_row(agreement: Agreement) -> dict[str, Any]:
    """Every column but ``phone_sealed``, which only the repository writes."""
    otp = agreement.otp
    return {
        "reference": agreement.reference,
        "id_hash": agreement.id_hash,
        "request_id": agreement.request_id,
        "status": agreement.status.value,
        "phone_mac": agreement.phone_mac,
        "phone_masked": agreement.phone_masked,
        "create_time": agreement.create_time,
        "confirm_time": agreement.confirm_time,
        "revoke_time": agreement.revoke_time,
        "otp_message_id": otp.message_id if otp else None,
        "otp_code_mac": otp.code_mac if otp else None,
        "otp_send_time": otp.send_time if otp else None,
        "otp_expire_time": otp.expire_time if otp else None,
        "otp_attempts_remaining": otp.attempts_remaining if otp else 0,
        "otp_delivery_status": otp.delivery_status.value if otp else None,
        "otp_sends": agreement.otp_sends,
    }
