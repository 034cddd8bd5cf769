"""Domain errors carry the contract's reasons and the details the gRPC layer needs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from onboarding.domain import errors


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errors.InvalidRequest.single("code", "must be 6 digits"), "INVALID_REQUEST"),
        (errors.AgreementNotFound(), "AGREEMENT_NOT_FOUND"),
        (errors.AgreementNotPending("CONFIRMED"), "AGREEMENT_NOT_PENDING"),
        (errors.OtpNotSent(), "OTP_NOT_SENT"),
        (errors.OtpInvalid(2), "OTP_INVALID"),
        (errors.OtpAttemptsExhausted(), "OTP_ATTEMPTS_EXHAUSTED"),
        (errors.OtpExpired(), "OTP_EXPIRED"),
        (errors.OtpResendTooEarly(timedelta(seconds=30)), "OTP_RESEND_TOO_EARLY"),
        (errors.OtpSendLimit("phone", 10, "too many"), "OTP_SEND_LIMIT"),
        (errors.RequestIdConflict(), "REQUEST_ID_CONFLICT"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_reasons_match_the_contract(error: errors.DomainError, reason: str) -> None:
    assert isinstance(error, errors.DomainError)
    assert error.reason == reason
    assert error.message == str(error)
    assert error.message


def test_only_a_wrong_code_persists() -> None:
    persisting = {cls.__name__ for cls in errors.DomainError.__subclasses__() if cls.persists}
    assert persisting == {"OtpInvalid"}


def test_invalid_request_lists_its_violations() -> None:
    error = errors.InvalidRequest(
        [errors.FieldViolation("phone", "is required"), errors.FieldViolation("id_hash", "empty")]
    )
    assert [v.field for v in error.violations] == ["phone", "id_hash"]
    assert error.message == "phone: is required; id_hash: empty"


def test_invalid_request_single() -> None:
    error = errors.InvalidRequest.single("code", "must be 6 digits")
    assert error.violations == [errors.FieldViolation("code", "must be 6 digits")]


def test_agreement_not_pending_keeps_the_status() -> None:
    error = errors.AgreementNotPending("REVOKED")
    assert error.status == "REVOKED"
    assert "revoked" in error.message


def test_otp_invalid_keeps_attempts_remaining() -> None:
    assert errors.OtpInvalid(1).attempts_remaining == 1


@pytest.mark.parametrize(
    ("retry_after", "shown"),
    [
        (timedelta(seconds=40), "40 s"),
        (timedelta(seconds=59, milliseconds=600), "60 s"),
        (timedelta(seconds=-5), "0 s"),
    ],
)
def test_resend_too_early_keeps_retry_after(retry_after: timedelta, shown: str) -> None:
    error = errors.OtpResendTooEarly(retry_after)
    assert error.retry_after == retry_after
    assert shown in error.message


def test_send_limit_names_its_subject_and_limit() -> None:
    error = errors.OtpSendLimit("agreement", 5, "at most 5 codes per agreement")
    assert (error.subject, error.limit, error.message) == (
        "agreement",
        5,
        "at most 5 codes per agreement",
    )


def test_invalid_value_is_not_a_domain_error() -> None:
    # The value object does not know its field name; the caller wraps it in InvalidRequest.
    assert issubclass(errors.InvalidValue, ValueError)
    assert not issubclass(errors.InvalidValue, errors.DomainError)
