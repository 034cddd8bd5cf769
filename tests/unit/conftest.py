"""Shared fixtures of the domain unit tests: fixed clock values, a real keyed hasher, a phone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from onboarding.adapters.crypto import HmacCodeHasher, Keyring
from onboarding.domain.agreement import OtpPolicy
from onboarding.domain.phone import PhoneNumber
from onboarding.domain.quota import PhoneSendQuota

SECRET = b"unit-test-secret-key-0123456789"
PHONE_RAW = "+7 916 123-45-67"
PHONE_E164 = "+79161234567"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(SECRET)


@pytest.fixture
def hasher(keyring: Keyring) -> HmacCodeHasher:
    return keyring.codes


@pytest.fixture
def t0() -> datetime:
    return datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


@pytest.fixture
def policy() -> OtpPolicy:
    return OtpPolicy()


@pytest.fixture
def phone() -> PhoneNumber:
    return PhoneNumber.parse(PHONE_RAW)


@pytest.fixture
def phone_mac(keyring: Keyring, phone: PhoneNumber) -> bytes:
    return keyring.phones(phone.e164.encode())


@pytest.fixture
def quota(phone_mac: bytes) -> PhoneSendQuota:
    return PhoneSendQuota(phone_mac=phone_mac)
