"""The Agreement aggregate: creating, sending codes, confirming, revoking.

Every test drives the aggregate with explicit UTC instants and the real keyed hasher; the code
that was "sent" is read back from the ``OtpIssued`` event, as the outbox would.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import pytest

from onboarding.adapters.crypto import HmacCodeHasher
from onboarding.domain import errors, events
from onboarding.domain.agreement import (
    Agreement,
    AgreementStatus,
    DeliveryStatus,
    Otp,
    OtpPolicy,
    generate_code,
)
from onboarding.domain.phone import PhoneNumber
from onboarding.domain.quota import PhoneSendQuota

PHONE_E164 = "+79161234567"  # the fixture phone, "+7 916 123-45-67"
ID_HASH = "client-id-hash-0001"
REQUEST_ID = "req-0001"


# -- helpers -----------------------------------------------------------------------------------


def issued_events(agreement: Agreement) -> list[events.OtpIssued]:
    return [e for e in agreement.events if isinstance(e, events.OtpIssued)]


def last_code(agreement: Agreement) -> str:
    """The plaintext of the current code, as the outbox sees it in the ``OtpIssued`` event."""
    issued = issued_events(agreement)
    assert issued, "no code was issued"
    return issued[-1].code


def wrong_code(code: str) -> str:
    """A well-formed code that is certainly not ``code`` (its last digit changed)."""
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def events_of(agreement: Agreement, kind: type[events.Event]) -> list[events.Event]:
    return [e for e in agreement.events if isinstance(e, kind)]


@pytest.fixture
def agreement(phone: PhoneNumber, phone_mac: bytes, t0: datetime) -> Agreement:
    """A fresh PENDING agreement, created at ``t0``, no code sent yet."""
    return Agreement.create(
        id_hash=ID_HASH, phone=phone, phone_mac=phone_mac, request_id=REQUEST_ID, now=t0
    )


@pytest.fixture
def sent(
    agreement: Agreement,
    t0: datetime,
    policy: OtpPolicy,
    hasher: HmacCodeHasher,
    quota: PhoneSendQuota,
) -> Agreement:
    """The same agreement with its first code issued at ``t0``."""
    agreement.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
    return agreement


# -- create ------------------------------------------------------------------------------------


class TestCreate:
    def test_new_agreement_is_pending_with_the_given_fields(
        self, agreement: Agreement, phone: PhoneNumber, phone_mac: bytes, t0: datetime
    ) -> None:
        assert agreement.status is AgreementStatus.PENDING
        assert isinstance(agreement.reference, UUID)
        assert agreement.id_hash == ID_HASH
        assert agreement.request_id == REQUEST_ID
        assert agreement.phone == phone
        assert agreement.phone_mac == phone_mac
        assert agreement.create_time == t0
        assert agreement.confirm_time is None
        assert agreement.revoke_time is None
        assert agreement.otp is None
        assert agreement.otp_sends == 0

    def test_records_agreement_created_event(self, agreement: Agreement) -> None:
        assert agreement.events == [events.AgreementCreated(agreement.reference)]

    def test_uses_the_given_reference(
        self, phone: PhoneNumber, phone_mac: bytes, t0: datetime
    ) -> None:
        reference = uuid4()
        agreement = Agreement.create(
            id_hash=ID_HASH,
            phone=phone,
            phone_mac=phone_mac,
            request_id=None,
            now=t0,
            reference=reference,
        )
        assert agreement.reference == reference
        assert agreement.request_id is None
        assert agreement.events == [events.AgreementCreated(reference)]

    def test_each_agreement_gets_its_own_reference(
        self, phone: PhoneNumber, phone_mac: bytes, t0: datetime
    ) -> None:
        refs = {
            Agreement.create(
                id_hash=ID_HASH, phone=phone, phone_mac=phone_mac, request_id=None, now=t0
            ).reference
            for _ in range(5)
        }
        assert len(refs) == 5

    def test_phone_masked_is_never_the_whole_number(self, agreement: Agreement) -> None:
        assert agreement.phone_masked == "+7916*****67"
        assert agreement.phone_masked != PHONE_E164
        assert PHONE_E164 not in agreement.phone_masked
        assert PHONE_E164[2:] not in agreement.phone_masked  # the national number either

    def test_repr_hides_the_phone(self, agreement: Agreement) -> None:
        for text in (repr(agreement), str(agreement)):
            assert PHONE_E164 not in text
            assert PHONE_E164[2:] not in text
            assert "1234567" not in text
            assert agreement.phone_mac.hex() not in text

    def test_repr_hides_the_phone_and_the_code_after_a_send(self, sent: Agreement) -> None:
        code = last_code(sent)
        assert sent.otp is not None
        for text in (repr(sent), str(sent)):
            assert PHONE_E164 not in text
            assert PHONE_E164[2:] not in text
            assert code not in text
            assert sent.otp.code_mac.hex() not in text
            assert repr(sent.otp.code_mac) not in text

    def test_same_request(self, agreement: Agreement, phone_mac: bytes) -> None:
        assert agreement.same_request(ID_HASH, phone_mac)
        assert not agreement.same_request("another-client", phone_mac)
        assert not agreement.same_request(ID_HASH, b"\x00" * len(phone_mac))


# -- issue_otp ---------------------------------------------------------------------------------


class TestIssueOtp:
    def test_first_code_is_issued_and_recorded(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy
    ) -> None:
        otp = sent.otp
        assert otp is not None
        assert otp.send_time == t0
        assert otp.expire_time == t0 + policy.ttl
        assert otp.attempts_remaining == policy.max_attempts
        assert otp.delivery_status is DeliveryStatus.QUEUED
        assert sent.otp_sends == 1
        assert sent.status is AgreementStatus.PENDING

    def test_otp_issued_event_carries_what_the_outbox_needs(self, sent: Agreement) -> None:
        assert sent.otp is not None
        [issued] = issued_events(sent)
        assert issued.reference == sent.reference
        assert issued.message_id == sent.otp.message_id
        assert issued.phone_e164 == PHONE_E164
        assert sent.events[0] == events.AgreementCreated(sent.reference)
        assert sent.events[-1] is issued

    @pytest.mark.parametrize("length", [4, 6, 8])
    def test_code_has_policy_length_ascii_digits(
        self,
        agreement: Agreement,
        t0: datetime,
        hasher: HmacCodeHasher,
        quota: PhoneSendQuota,
        length: int,
    ) -> None:
        agreement.issue_otp(now=t0, policy=OtpPolicy(length=length), hasher=hasher, quota=quota)
        code = last_code(agreement)
        assert len(code) == length
        assert code.isascii()
        assert code.isdigit()

    def test_generate_code_uses_only_digits(self) -> None:
        codes = [generate_code(6) for _ in range(200)]
        assert all(len(c) == 6 and c.isascii() and c.isdigit() for c in codes)
        assert len(set(codes)) > 1  # not a constant
        assert set("".join(codes)) == set("0123456789")  # every digit shows up in 1200 draws

    def test_generate_code_reaches_every_digit_in_every_place(self) -> None:
        codes = [generate_code(4) for _ in range(2000)]
        for place in range(4):  # leading zeros included: each miss has odds of 0.9**2000
            assert {c[place] for c in codes} == set("0123456789"), place

    def test_only_the_mac_of_the_code_is_stored(
        self, sent: Agreement, hasher: HmacCodeHasher
    ) -> None:
        otp = sent.otp
        assert otp is not None
        code = last_code(sent)
        assert "code" not in {f.name for f in dataclasses.fields(Otp)}
        assert not hasattr(otp, "code")
        assert otp.code_mac == hasher.mac(otp.message_id, code)
        assert code.encode() not in otp.code_mac
        for value in dataclasses.astuple(otp):
            assert value != code

    def test_otp_repr_hides_the_mac(self, sent: Agreement) -> None:
        otp = sent.otp
        assert otp is not None
        text = repr(otp)
        assert "code_mac" not in text
        assert otp.code_mac.hex() not in text
        assert repr(otp.code_mac) not in text
        assert last_code(sent) not in text
        assert str(otp.message_id) in text

    def test_otp_issued_repr_hides_phone_and_code(self, sent: Agreement) -> None:
        [issued] = issued_events(sent)
        for text in (repr(issued), str(issued)):
            assert issued.code not in text
            assert PHONE_E164 not in text
            assert PHONE_E164[2:] not in text
            assert str(issued.message_id) in text

    def test_mac_differs_for_the_same_code_under_different_message_ids(
        self, hasher: HmacCodeHasher
    ) -> None:
        first, second = uuid4(), uuid4()
        assert hasher.mac(first, "123456") != hasher.mac(second, "123456")
        assert hasher.mac(first, "123456") == hasher.mac(first, "123456")
        assert hasher.mac(first, "123456") != hasher.mac(first, "123457")

    def test_each_code_gets_a_fresh_message_id(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        assert sent.otp is not None
        first_id = sent.otp.message_id
        sent.issue_otp(now=t0 + policy.resend_interval, policy=policy, hasher=hasher, quota=quota)
        assert sent.otp.message_id != first_id
        assert [e.message_id for e in issued_events(sent)] == [first_id, sent.otp.message_id]

    def test_a_new_code_kills_the_old_one(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        old_code = last_code(sent)
        now = t0 + policy.resend_interval
        sent.issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
        # One chance in a million that the new code equals the old: draw again then.
        while last_code(sent) == old_code:
            now += policy.resend_interval
            sent.issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
        new_code = last_code(sent)

        with pytest.raises(errors.OtpInvalid):
            sent.confirm(code=old_code, now=now, policy=policy, hasher=hasher)
        sent.confirm(code=new_code, now=now, policy=policy, hasher=hasher)
        assert sent.status is AgreementStatus.CONFIRMED

    def test_a_new_code_restores_the_attempts_and_the_expiry(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        code = last_code(sent)
        with pytest.raises(errors.OtpInvalid):
            sent.confirm(code=wrong_code(code), now=t0, policy=policy, hasher=hasher)
        later = t0 + timedelta(minutes=5)
        sent.issue_otp(now=later, policy=policy, hasher=hasher, quota=quota)
        assert sent.otp is not None
        assert sent.otp.attempts_remaining == policy.max_attempts
        assert sent.otp.send_time == later
        assert sent.otp.expire_time == later + policy.ttl
        assert sent.otp.delivery_status is DeliveryStatus.QUEUED

    @pytest.mark.parametrize(
        ("elapsed", "retry_after"),
        [
            (timedelta(0), timedelta(seconds=60)),
            (timedelta(seconds=20), timedelta(seconds=40)),
            (timedelta(seconds=59, milliseconds=500), timedelta(milliseconds=500)),
        ],
    )
    def test_resend_inside_the_interval_is_too_early(
        self,
        sent: Agreement,
        t0: datetime,
        policy: OtpPolicy,
        hasher,
        quota,
        elapsed: timedelta,
        retry_after: timedelta,
    ) -> None:
        otp_before = sent.otp
        events_before = list(sent.events)
        with pytest.raises(errors.OtpResendTooEarly) as exc_info:
            sent.issue_otp(now=t0 + elapsed, policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.retry_after == retry_after
        assert exc_info.value.reason == "OTP_RESEND_TOO_EARLY"
        assert exc_info.value.persists is False
        # Nothing changed: the old code still works, no send was counted.
        assert sent.otp == otp_before
        assert sent.otp_sends == 1
        assert sent.events == events_before
        assert len(quota.send_times) == 1

    def test_resend_at_exactly_the_interval_is_allowed(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        sent.issue_otp(now=t0 + policy.resend_interval, policy=policy, hasher=hasher, quota=quota)
        assert sent.otp_sends == 2

    def test_per_agreement_send_limit(
        self, agreement: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        now = t0
        for _ in range(policy.max_sends_per_agreement):
            agreement.issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
            now += policy.resend_interval
        assert agreement.otp_sends == 5
        otp_before = agreement.otp

        with pytest.raises(errors.OtpSendLimit) as exc_info:
            agreement.issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.subject == "agreement"
        assert exc_info.value.limit == policy.max_sends_per_agreement
        assert exc_info.value.reason == "OTP_SEND_LIMIT"
        assert agreement.otp_sends == 5
        assert agreement.otp == otp_before
        assert len(issued_events(agreement)) == 5

    def test_per_agreement_limit_is_reported_before_too_early(
        self, agreement: Agreement, t0: datetime, hasher, quota
    ) -> None:
        policy = OtpPolicy(max_sends_per_agreement=1)
        agreement.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        with pytest.raises(errors.OtpSendLimit) as exc_info:
            agreement.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.subject == "agreement"

    def test_per_phone_quota_is_shared_by_agreements_with_the_same_phone(
        self, phone: PhoneNumber, phone_mac: bytes, t0: datetime, hasher, quota
    ) -> None:
        policy = OtpPolicy(max_sends_per_phone=3)
        first = Agreement.create(
            id_hash="client-a", phone=phone, phone_mac=phone_mac, request_id=None, now=t0
        )
        second = Agreement.create(
            id_hash="client-b", phone=phone, phone_mac=phone_mac, request_id=None, now=t0
        )
        minute = timedelta(minutes=1)
        first.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        first.issue_otp(now=t0 + minute, policy=policy, hasher=hasher, quota=quota)
        second.issue_otp(now=t0 + 2 * minute, policy=policy, hasher=hasher, quota=quota)

        with pytest.raises(errors.OtpSendLimit) as exc_info:
            second.issue_otp(now=t0 + 3 * minute, policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.subject == "phone"
        assert exc_info.value.limit == 3
        assert second.otp_sends == 1
        assert len(issued_events(second)) == 1
        with pytest.raises(errors.OtpSendLimit) as exc_info:
            first.issue_otp(now=t0 + 3 * minute, policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.subject == "phone"

        # The window slides: just before an hour after the first send it is still full ...
        with pytest.raises(errors.OtpSendLimit):
            second.issue_otp(
                now=t0 + policy.phone_window - timedelta(seconds=1),
                policy=policy,
                hasher=hasher,
                quota=quota,
            )
        # ... and once the first send is an hour old, one slot is free again.
        second.issue_otp(now=t0 + policy.phone_window, policy=policy, hasher=hasher, quota=quota)
        assert second.otp_sends == 2
        with pytest.raises(errors.OtpSendLimit):
            first.issue_otp(now=t0 + policy.phone_window, policy=policy, hasher=hasher, quota=quota)

    def test_default_per_phone_limit_is_ten_per_hour(
        self, phone: PhoneNumber, phone_mac: bytes, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        now = t0
        agreements = []
        for i in range(3):
            agreements.append(
                Agreement.create(
                    id_hash=f"client-{i}", phone=phone, phone_mac=phone_mac, request_id=None, now=t0
                )
            )
        for a in agreements[:2]:
            for _ in range(5):
                a.issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
                now += timedelta(seconds=61)
        with pytest.raises(errors.OtpSendLimit) as exc_info:
            agreements[2].issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.subject == "phone"
        assert exc_info.value.limit == 10

    def test_another_phone_has_its_own_quota(
        self, agreement: Agreement, keyring, t0: datetime, hasher, quota
    ) -> None:
        policy = OtpPolicy(max_sends_per_phone=1)
        agreement.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        other_phone = PhoneNumber.parse("+7 903 765-43-21")
        other_mac = keyring.phones(other_phone.e164.encode())
        other = Agreement.create(
            id_hash=ID_HASH, phone=other_phone, phone_mac=other_mac, request_id=None, now=t0
        )
        other.issue_otp(
            now=t0, policy=policy, hasher=hasher, quota=PhoneSendQuota(phone_mac=other_mac)
        )
        assert issued_events(other)[-1].phone_e164 == "+79037654321"

    @pytest.mark.parametrize("final", ["confirmed", "revoked"])
    def test_a_final_agreement_takes_no_code(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota, final: str
    ) -> None:
        if final == "confirmed":
            sent.confirm(code=last_code(sent), now=t0, policy=policy, hasher=hasher)
            expected = "CONFIRMED"
        else:
            sent.revoke(now=t0)
            expected = "REVOKED"
        events_before = list(sent.events)
        with pytest.raises(errors.AgreementNotPending) as exc_info:
            sent.issue_otp(now=t0 + timedelta(hours=2), policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.status == expected
        assert exc_info.value.reason == "AGREEMENT_NOT_PENDING"
        assert sent.otp_sends == 1
        assert sent.events == events_before
        assert len(quota.send_times) == 1

    def test_revoked_before_any_code_takes_no_code(
        self, agreement: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        agreement.revoke(now=t0)
        with pytest.raises(errors.AgreementNotPending) as exc_info:
            agreement.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        assert exc_info.value.status == "REVOKED"
        assert agreement.otp is None
        assert quota.send_times == []


class TestNextSendTime:
    def test_before_the_first_code_it_is_the_create_time(
        self, agreement: Agreement, t0: datetime, policy: OtpPolicy
    ) -> None:
        assert agreement.next_send_time(policy) == t0

    def test_after_a_send_it_is_one_interval_later(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy
    ) -> None:
        assert sent.next_send_time(policy) == t0 + timedelta(seconds=60)
        assert sent.next_send_time(OtpPolicy(resend_interval=timedelta(seconds=90))) == (
            t0 + timedelta(seconds=90)
        )

    def test_it_follows_the_latest_send(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        later = t0 + timedelta(minutes=7)
        sent.issue_otp(now=later, policy=policy, hasher=hasher, quota=quota)
        assert sent.next_send_time(policy) == later + policy.resend_interval

    def test_none_once_the_agreement_limit_is_used_up(
        self, agreement: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        now = t0
        for _ in range(policy.max_sends_per_agreement - 1):
            agreement.issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
            now += policy.resend_interval
        assert agreement.next_send_time(policy) == now
        agreement.issue_otp(now=now, policy=policy, hasher=hasher, quota=quota)
        assert agreement.next_send_time(policy) is None

    def test_none_when_confirmed_or_revoked(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        sent.confirm(code=last_code(sent), now=t0, policy=policy, hasher=hasher)
        assert sent.next_send_time(policy) is None
        sent.revoke(now=t0)
        assert sent.next_send_time(policy) is None

    def test_a_send_at_next_send_time_succeeds(
        self, sent: Agreement, policy: OtpPolicy, hasher, quota
    ) -> None:
        when = sent.next_send_time(policy)
        assert when is not None
        sent.issue_otp(now=when, policy=policy, hasher=hasher, quota=quota)
        assert sent.otp is not None
        assert sent.otp.send_time == when


# -- confirm -----------------------------------------------------------------------------------


class TestConfirm:
    def test_the_right_code_confirms(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        now = t0 + timedelta(seconds=42)
        sent.confirm(code=last_code(sent), now=now, policy=policy, hasher=hasher)
        assert sent.status is AgreementStatus.CONFIRMED
        assert sent.confirm_time == now
        assert sent.revoke_time is None
        assert sent.phone is None
        assert sent.events[-1] == events.AgreementConfirmed(sent.reference)
        assert len(events_of(sent, events.AgreementConfirmed)) == 1

    def test_the_right_code_confirms_just_before_expiry(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        now = t0 + policy.ttl - timedelta(microseconds=1)
        sent.confirm(code=last_code(sent), now=now, policy=policy, hasher=hasher)
        assert sent.status is AgreementStatus.CONFIRMED

    def test_confirming_keeps_the_masked_phone_and_its_mac(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, phone_mac: bytes
    ) -> None:
        sent.confirm(code=last_code(sent), now=t0, policy=policy, hasher=hasher)
        assert sent.phone_masked == "+7916*****67"
        assert sent.phone_mac == phone_mac

    def test_wrong_codes_use_up_the_attempts_then_exhausted(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        code = last_code(sent)
        remaining = []
        for i in range(policy.max_attempts):
            with pytest.raises(errors.OtpInvalid) as exc_info:
                sent.confirm(
                    code=wrong_code(code),
                    now=t0 + timedelta(seconds=i),
                    policy=policy,
                    hasher=hasher,
                )
            assert exc_info.value.persists is True
            assert exc_info.value.reason == "OTP_INVALID"
            assert code not in exc_info.value.message
            remaining.append(exc_info.value.attempts_remaining)
            assert sent.otp is not None
            assert sent.otp.attempts_remaining == exc_info.value.attempts_remaining
        assert remaining == [2, 1, 0]

        # No tries left: even the right code is refused, and a wrong one too.
        for candidate in (code, wrong_code(code)):
            with pytest.raises(errors.OtpAttemptsExhausted) as exc_info:
                sent.confirm(code=candidate, now=t0, policy=policy, hasher=hasher)
            assert exc_info.value.reason == "OTP_ATTEMPTS_EXHAUSTED"
        assert sent.status is AgreementStatus.PENDING
        assert sent.otp.attempts_remaining == 0
        assert sent.phone is not None

    def test_a_new_code_after_exhaustion_works(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        code = last_code(sent)
        for _ in range(policy.max_attempts):
            with pytest.raises(errors.OtpInvalid):
                sent.confirm(code=wrong_code(code), now=t0, policy=policy, hasher=hasher)
        later = t0 + policy.resend_interval
        sent.issue_otp(now=later, policy=policy, hasher=hasher, quota=quota)
        sent.confirm(code=last_code(sent), now=later, policy=policy, hasher=hasher)
        assert sent.status is AgreementStatus.CONFIRMED

    def test_a_wrong_code_then_the_right_one_confirms(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        code = last_code(sent)
        with pytest.raises(errors.OtpInvalid):
            sent.confirm(code=wrong_code(code), now=t0, policy=policy, hasher=hasher)
        sent.confirm(code=code, now=t0, policy=policy, hasher=hasher)
        assert sent.status is AgreementStatus.CONFIRMED

    @pytest.mark.parametrize(
        "after", [timedelta(0), timedelta(microseconds=1), timedelta(days=1)], ids=str
    )
    def test_expired_code(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, after: timedelta
    ) -> None:
        assert sent.otp is not None
        now = sent.otp.expire_time + after
        for candidate in (last_code(sent), wrong_code(last_code(sent))):
            with pytest.raises(errors.OtpExpired) as exc_info:
                sent.confirm(code=candidate, now=now, policy=policy, hasher=hasher)
            assert exc_info.value.reason == "OTP_EXPIRED"
        assert sent.status is AgreementStatus.PENDING
        assert sent.otp.attempts_remaining == policy.max_attempts  # not counted as a try

    @pytest.mark.parametrize(
        "code",
        [
            "",
            "12345",
            "1234567",
            "12345a",
            "abcdef",
            " 12345",
            "12345 ",
            "12 456",
            "-12345",
            "+12345",
            "1234.5",
            "١٢٣٤٥٦",  # Arabic-Indic digits: str.isdigit() says yes
            "۱۲۳۴۵۶",  # Extended Arabic-Indic digits
            "１２３４５６",  # full-width digits
            "¹²³⁴⁵⁶",  # superscript digits
            "123456\n",
        ],
    )
    def test_malformed_code_is_a_bad_request_and_no_try(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, code: str
    ) -> None:
        with pytest.raises(errors.InvalidRequest) as exc_info:
            sent.confirm(code=code, now=t0, policy=policy, hasher=hasher)
        error = exc_info.value
        assert error.reason == "INVALID_REQUEST"
        assert error.persists is False
        assert len(error.violations) == 1
        assert error.violations[0].field == "code"
        assert "6" in error.violations[0].description
        assert sent.otp is not None
        assert sent.otp.attempts_remaining == policy.max_attempts
        assert sent.status is AgreementStatus.PENDING

    def test_malformed_code_uses_no_try_even_with_one_try_left(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        code = last_code(sent)
        for _ in range(policy.max_attempts - 1):
            with pytest.raises(errors.OtpInvalid):
                sent.confirm(code=wrong_code(code), now=t0, policy=policy, hasher=hasher)
        for _ in range(5):
            with pytest.raises(errors.InvalidRequest):
                sent.confirm(code="12a", now=t0, policy=policy, hasher=hasher)
        sent.confirm(code=code, now=t0, policy=policy, hasher=hasher)
        assert sent.status is AgreementStatus.CONFIRMED

    def test_code_length_follows_the_policy(
        self, agreement: Agreement, t0: datetime, hasher, quota
    ) -> None:
        policy = OtpPolicy(length=4)
        agreement.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        with pytest.raises(errors.InvalidRequest) as exc_info:
            agreement.confirm(code="123456", now=t0, policy=policy, hasher=hasher)
        assert "4" in exc_info.value.violations[0].description
        agreement.confirm(code=last_code(agreement), now=t0, policy=policy, hasher=hasher)
        assert agreement.status is AgreementStatus.CONFIRMED

    def test_repeating_the_same_correct_code_after_success_is_ok(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        code = last_code(sent)
        sent.confirm(code=code, now=t0, policy=policy, hasher=hasher)
        snapshot = (sent.status, sent.confirm_time, sent.otp, sent.phone, list(sent.events))

        # Even much later (the code has expired by then), the retry is answered OK.
        sent.confirm(code=code, now=t0 + timedelta(seconds=5), policy=policy, hasher=hasher)
        sent.confirm(code=code, now=t0 + timedelta(days=3), policy=policy, hasher=hasher)
        assert (sent.status, sent.confirm_time, sent.otp, sent.phone, list(sent.events)) == (
            snapshot
        )
        assert sent.confirm_time == t0

    def test_a_different_code_after_success_is_not_pending(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        code = last_code(sent)
        sent.confirm(code=code, now=t0, policy=policy, hasher=hasher)
        assert sent.otp is not None
        attempts = sent.otp.attempts_remaining
        with pytest.raises(errors.AgreementNotPending) as exc_info:
            sent.confirm(code=wrong_code(code), now=t0, policy=policy, hasher=hasher)
        assert exc_info.value.status == "CONFIRMED"
        assert exc_info.value.persists is False
        assert sent.status is AgreementStatus.CONFIRMED
        assert sent.otp.attempts_remaining == attempts

    def test_malformed_code_after_success_is_still_a_bad_request(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        sent.confirm(code=last_code(sent), now=t0, policy=policy, hasher=hasher)
        with pytest.raises(errors.InvalidRequest):
            sent.confirm(code="nope", now=t0, policy=policy, hasher=hasher)

    def test_no_code_sent_yet(
        self, agreement: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        with pytest.raises(errors.OtpNotSent) as exc_info:
            agreement.confirm(code="123456", now=t0, policy=policy, hasher=hasher)
        assert exc_info.value.reason == "OTP_NOT_SENT"
        assert agreement.status is AgreementStatus.PENDING

    def test_revoked_agreement_is_not_pending(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        code = last_code(sent)
        sent.revoke(now=t0)
        for candidate in (code, wrong_code(code)):
            with pytest.raises(errors.AgreementNotPending) as exc_info:
                sent.confirm(code=candidate, now=t0, policy=policy, hasher=hasher)
            assert exc_info.value.status == "REVOKED"
        assert sent.status is AgreementStatus.REVOKED
        assert sent.confirm_time is None

    def test_revoked_after_confirm_refuses_even_the_right_code(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        code = last_code(sent)
        sent.confirm(code=code, now=t0, policy=policy, hasher=hasher)
        sent.revoke(now=t0 + timedelta(days=1))
        with pytest.raises(errors.AgreementNotPending) as exc_info:
            sent.confirm(code=code, now=t0 + timedelta(days=1), policy=policy, hasher=hasher)
        assert exc_info.value.status == "REVOKED"

    def test_a_code_is_bound_to_its_agreement(
        self, phone: PhoneNumber, phone_mac: bytes, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        first = Agreement.create(
            id_hash="a", phone=phone, phone_mac=phone_mac, request_id=None, now=t0
        )
        second = Agreement.create(
            id_hash="b", phone=phone, phone_mac=phone_mac, request_id=None, now=t0
        )
        first.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        second.issue_otp(now=t0, policy=policy, hasher=hasher, quota=quota)
        if last_code(first) != last_code(second):
            with pytest.raises(errors.OtpInvalid):
                second.confirm(code=last_code(first), now=t0, policy=policy, hasher=hasher)
        second.confirm(code=last_code(second), now=t0, policy=policy, hasher=hasher)
        assert first.status is AgreementStatus.PENDING
        assert second.status is AgreementStatus.CONFIRMED


# -- a new code and the old code's SMS ---------------------------------------------------------


class TestSupersededSms:
    def test_the_first_code_supersedes_nothing(self, sent: Agreement) -> None:
        [first] = issued_events(sent)
        assert first.superseded_message_id is None

    def test_a_new_code_supersedes_the_sms_of_the_last_while_it_is_queued(
        self,
        sent: Agreement,
        t0: datetime,
        policy: OtpPolicy,
        hasher: HmacCodeHasher,
        quota: PhoneSendQuota,
    ) -> None:
        later = t0 + policy.resend_interval
        sent.issue_otp(now=later, policy=policy, hasher=hasher, quota=quota)
        first, second = issued_events(sent)
        assert second.superseded_message_id == first.message_id

    @pytest.mark.parametrize("delivery", [DeliveryStatus.SENT, DeliveryStatus.FAILED])
    def test_a_code_already_handed_over_or_failed_is_not_superseded(
        self,
        sent: Agreement,
        t0: datetime,
        policy: OtpPolicy,
        hasher: HmacCodeHasher,
        quota: PhoneSendQuota,
        delivery: DeliveryStatus,
    ) -> None:
        first = issued_events(sent)[0]
        sent.record_delivery(first.message_id, delivery)
        sent.issue_otp(now=t0 + policy.resend_interval, policy=policy, hasher=hasher, quota=quota)
        assert issued_events(sent)[1].superseded_message_id is None


# -- revoke ------------------------------------------------------------------------------------


class TestRevoke:
    def test_revoke_a_pending_agreement(self, sent: Agreement, t0: datetime) -> None:
        now = t0 + timedelta(minutes=1)
        sent.revoke(now=now)
        assert sent.status is AgreementStatus.REVOKED
        assert sent.revoke_time == now
        assert sent.confirm_time is None
        assert sent.phone is None
        assert sent.events[-1] == events.AgreementRevoked(sent.reference)

    def test_revoke_before_any_code(self, agreement: Agreement, t0: datetime) -> None:
        agreement.revoke(now=t0)
        assert agreement.status is AgreementStatus.REVOKED
        assert agreement.phone is None
        assert agreement.events == [
            events.AgreementCreated(agreement.reference),
            events.AgreementRevoked(agreement.reference),
        ]

    def test_revoke_a_confirmed_agreement_keeps_confirm_time(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        confirmed_at = t0 + timedelta(seconds=30)
        revoked_at = t0 + timedelta(days=10)
        sent.confirm(code=last_code(sent), now=confirmed_at, policy=policy, hasher=hasher)
        sent.revoke(now=revoked_at)
        assert sent.status is AgreementStatus.REVOKED
        assert sent.confirm_time == confirmed_at
        assert sent.revoke_time == revoked_at
        assert sent.phone is None
        assert [type(e) for e in sent.events] == [
            events.AgreementCreated,
            events.OtpIssued,
            events.AgreementConfirmed,
            events.AgreementRevoked,
        ]

    def test_revoke_is_idempotent(self, sent: Agreement, t0: datetime) -> None:
        sent.revoke(now=t0)
        events_after_first = list(sent.events)
        sent.revoke(now=t0 + timedelta(hours=1))
        sent.revoke(now=t0 + timedelta(days=1))
        assert sent.status is AgreementStatus.REVOKED
        assert sent.revoke_time == t0
        assert sent.events == events_after_first
        assert len(events_of(sent, events.AgreementRevoked)) == 1

    def test_revoked_repr_hides_everything(self, sent: Agreement, t0: datetime) -> None:
        code = last_code(sent)
        sent.revoke(now=t0)
        assert PHONE_E164 not in repr(sent)
        assert code not in repr(sent)


# -- delivery status ---------------------------------------------------------------------------


class TestRecordDelivery:
    @pytest.mark.parametrize("status", [DeliveryStatus.SENT, DeliveryStatus.FAILED])
    def test_updates_the_current_message(self, sent: Agreement, status: DeliveryStatus) -> None:
        assert sent.otp is not None
        before = sent.otp
        sent.record_delivery(before.message_id, status)
        assert sent.otp.delivery_status is status
        assert sent.otp == dataclasses.replace(before, delivery_status=status)

    def test_ignores_another_message_id(self, sent: Agreement) -> None:
        before = sent.otp
        sent.record_delivery(uuid4(), DeliveryStatus.SENT)
        assert sent.otp == before
        assert sent.otp is not None
        assert sent.otp.delivery_status is DeliveryStatus.QUEUED

    def test_ignores_a_superseded_message(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher, quota
    ) -> None:
        assert sent.otp is not None
        old_id = sent.otp.message_id
        sent.issue_otp(now=t0 + policy.resend_interval, policy=policy, hasher=hasher, quota=quota)
        sent.record_delivery(old_id, DeliveryStatus.FAILED)
        assert sent.otp.delivery_status is DeliveryStatus.QUEUED
        sent.record_delivery(sent.otp.message_id, DeliveryStatus.SENT)
        assert sent.otp.delivery_status is DeliveryStatus.SENT

    def test_without_a_code_does_nothing(self, agreement: Agreement) -> None:
        agreement.record_delivery(uuid4(), DeliveryStatus.SENT)
        assert agreement.otp is None

    def test_does_not_touch_the_attempts_or_the_code(
        self, sent: Agreement, t0: datetime, policy: OtpPolicy, hasher
    ) -> None:
        assert sent.otp is not None
        code = last_code(sent)
        with pytest.raises(errors.OtpInvalid):
            sent.confirm(code=wrong_code(code), now=t0, policy=policy, hasher=hasher)
        sent.record_delivery(sent.otp.message_id, DeliveryStatus.SENT)
        assert sent.otp.attempts_remaining == policy.max_attempts - 1
        sent.confirm(code=code, now=t0, policy=policy, hasher=hasher)
        assert sent.status is AgreementStatus.CONFIRMED


# -- policy defaults ---------------------------------------------------------------------------


def test_policy_defaults_match_the_contract() -> None:
    policy = OtpPolicy()
    assert policy.length == 6
    assert policy.ttl == timedelta(seconds=600)
    assert policy.max_attempts == 3
    assert policy.resend_interval == timedelta(seconds=60)
    assert policy.max_sends_per_agreement == 5
    assert policy.max_sends_per_phone == 10
    assert policy.phone_window == timedelta(hours=1)
