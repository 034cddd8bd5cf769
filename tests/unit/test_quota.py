"""PhoneSendQuota: a sliding window over the times codes were sent to one phone number."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from onboarding.domain import errors
from onboarding.domain.quota import PhoneSendQuota

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def test_sends_below_the_limit_are_recorded(t0: datetime) -> None:
    quota = PhoneSendQuota(phone_mac=b"mac")
    quota.take(t0, limit=3, window=HOUR)
    quota.take(t0 + MINUTE, limit=3, window=HOUR)
    assert quota.send_times == [t0, t0 + MINUTE]


def test_the_send_over_the_limit_is_refused(t0: datetime) -> None:
    quota = PhoneSendQuota(phone_mac=b"mac")
    for i in range(3):
        quota.take(t0 + i * MINUTE, limit=3, window=HOUR)
    with pytest.raises(errors.OtpSendLimit) as exc_info:
        quota.take(t0 + 3 * MINUTE, limit=3, window=HOUR)
    error = exc_info.value
    assert error.subject == "phone"
    assert error.limit == 3
    assert error.reason == "OTP_SEND_LIMIT"
    assert error.persists is False
    assert quota.send_times == [t0, t0 + MINUTE, t0 + 2 * MINUTE]  # the refusal is not recorded


def test_the_window_slides(t0: datetime) -> None:
    quota = PhoneSendQuota(phone_mac=b"mac")
    quota.take(t0, limit=2, window=HOUR)
    quota.take(t0 + 10 * MINUTE, limit=2, window=HOUR)

    with pytest.raises(errors.OtpSendLimit):
        quota.take(t0 + HOUR - timedelta(microseconds=1), limit=2, window=HOUR)
    # A send exactly one window old no longer counts.
    quota.take(t0 + HOUR, limit=2, window=HOUR)
    assert quota.send_times == [t0 + 10 * MINUTE, t0 + HOUR]

    with pytest.raises(errors.OtpSendLimit):
        quota.take(t0 + HOUR + 5 * MINUTE, limit=2, window=HOUR)
    quota.take(t0 + HOUR + 10 * MINUTE, limit=2, window=HOUR)


def test_old_sends_are_dropped(t0: datetime) -> None:
    quota = PhoneSendQuota(phone_mac=b"mac", send_times=[t0 - 3 * HOUR, t0 - 2 * HOUR])
    quota.take(t0, limit=1, window=HOUR)
    assert quota.send_times == [t0]


def test_a_fresh_quota_has_no_sends(t0: datetime) -> None:
    quota = PhoneSendQuota(phone_mac=b"mac")
    assert quota.send_times == []
    quota.take(t0, limit=1, window=HOUR)
    with pytest.raises(errors.OtpSendLimit):
        quota.take(t0, limit=1, window=HOUR)


def test_default_style_ten_per_hour(t0: datetime) -> None:
    quota = PhoneSendQuota(phone_mac=b"mac")
    for i in range(10):
        quota.take(t0 + i * MINUTE, limit=10, window=HOUR)
    with pytest.raises(errors.OtpSendLimit, match="10"):
        quota.take(t0 + 30 * MINUTE, limit=10, window=HOUR)
    quota.take(t0 + HOUR, limit=10, window=HOUR)


def test_repr_hides_the_phone_mac() -> None:
    quota = PhoneSendQuota(phone_mac=b"\xde\xad\xbe\xef-secret-mac")
    assert "secret-mac" not in repr(quota)
    assert "phone_mac" not in repr(quota)
