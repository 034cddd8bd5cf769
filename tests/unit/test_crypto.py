"""Keys derived from the one secret: code MACs, phone MACs and sealing of data at rest."""

from __future__ import annotations

import hashlib
import hmac
from uuid import uuid4

import pytest
from cryptography.exceptions import InvalidTag

from onboarding.adapters.crypto import HmacCodeHasher, Keyring, Mac, Sealer, derive_key

SECRET = b"unit-test-secret-key-0123456789"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(SECRET)


class TestKeyDerivation:
    def test_subkeys_differ_per_purpose(self) -> None:
        purposes = ["otp-code-mac", "phone-mac", "person-key", "data-at-rest"]
        keys = {derive_key(SECRET, p) for p in purposes}
        assert len(keys) == len(purposes)
        assert all(len(k) == 32 for k in keys)
        assert SECRET not in keys

    def test_derivation_is_deterministic(self) -> None:
        assert derive_key(SECRET, "phone-mac") == derive_key(SECRET, "phone-mac")

    def test_another_secret_gives_other_keys(self) -> None:
        assert derive_key(SECRET, "phone-mac") != derive_key(SECRET + b"!", "phone-mac")

    def test_keyring_macs_differ_per_purpose(self, keyring: Keyring) -> None:
        data = b"+79161234567"
        assert keyring.phones(data) != keyring.persons(data)
        message_id = uuid4()
        code_mac = keyring.codes.mac(message_id, "123456")
        assert code_mac != Mac(derive_key(SECRET, "phone-mac"))(message_id.bytes, b"123456")
        assert code_mac == Mac(derive_key(SECRET, "otp-code-mac"))(message_id.bytes, b"123456")

    def test_two_keyrings_from_one_secret_agree(self, keyring: Keyring) -> None:
        other = Keyring(SECRET)
        message_id = uuid4()
        assert other.codes.mac(message_id, "123456") == keyring.codes.mac(message_id, "123456")
        assert other.phones(b"x") == keyring.phones(b"x")
        assert other.sealer.open(keyring.sealer.seal(b"data", b"ctx"), b"ctx") == b"data"

    def test_keyrings_from_other_secrets_disagree(self, keyring: Keyring) -> None:
        other = Keyring(b"another-secret-key-0123456789")
        message_id = uuid4()
        assert other.codes.mac(message_id, "123456") != keyring.codes.mac(message_id, "123456")
        assert other.phones(b"x") != keyring.phones(b"x")
        with pytest.raises(InvalidTag):
            other.sealer.open(keyring.sealer.seal(b"data", b"ctx"), b"ctx")

    @pytest.mark.parametrize("secret", [b"", b"short", b"x" * 15])
    def test_keyring_refuses_a_short_secret(self, secret: bytes) -> None:
        with pytest.raises(ValueError, match="16 bytes"):
            Keyring(secret)

    def test_keyring_accepts_sixteen_bytes(self) -> None:
        Keyring(b"x" * 16)


class TestMac:
    def test_is_hmac_sha256_of_the_length_prefixed_parts(self) -> None:
        """The MACs stored in the database (phones, people, codes) depend on this framing: it
        must never change."""
        framed = b"\x00\x00\x00\x02ab\x00\x00\x00\x00\x00\x00\x00\x03xyz"
        expected = hmac.new(b"k" * 32, framed, hashlib.sha256).digest()
        assert Mac(b"k" * 32)(b"ab", b"", b"xyz") == expected

    def test_each_mac_starts_from_the_key_alone(self) -> None:
        mac = Mac(b"k" * 32)
        first = mac(b"data")
        mac(b"other", b"parts")
        assert mac(b"data") == first == Mac(b"k" * 32)(b"data")

    def test_parts_are_length_prefixed(self) -> None:
        mac = Mac(b"k" * 32)
        assert mac(b"ab", b"c") != mac(b"a", b"bc")
        assert mac(b"abc") != mac(b"ab", b"c")
        assert mac(b"", b"abc") != mac(b"abc")

    def test_other_key_other_mac(self) -> None:
        assert Mac(b"k" * 32)(b"data") != Mac(b"K" * 32)(b"data")


class TestCodeHasher:
    def test_same_message_same_code_same_mac(self, keyring: Keyring) -> None:
        message_id = uuid4()
        assert keyring.codes.mac(message_id, "123456") == keyring.codes.mac(message_id, "123456")

    def test_mac_is_bound_to_the_message(self, keyring: Keyring) -> None:
        assert keyring.codes.mac(uuid4(), "123456") != keyring.codes.mac(uuid4(), "123456")

    def test_mac_depends_on_the_code(self, keyring: Keyring) -> None:
        message_id = uuid4()
        assert keyring.codes.mac(message_id, "123456") != keyring.codes.mac(message_id, "123457")

    def test_mac_does_not_contain_the_code(self, keyring: Keyring) -> None:
        mac = keyring.codes.mac(uuid4(), "123456")
        assert b"123456" not in mac
        assert len(mac) == 32

    def test_is_an_hmac_code_hasher(self, keyring: Keyring) -> None:
        assert isinstance(keyring.codes, HmacCodeHasher)


class TestSealer:
    def test_round_trip(self, keyring: Keyring) -> None:
        context = uuid4().bytes
        sealed = keyring.sealer.seal("Код подтверждения: 123456".encode(), context)
        assert keyring.sealer.open(sealed, context).decode() == "Код подтверждения: 123456"

    def test_round_trip_empty(self, keyring: Keyring) -> None:
        assert keyring.sealer.open(keyring.sealer.seal(b"", b"ctx"), b"ctx") == b""

    def test_sealed_bytes_hide_the_plaintext(self, keyring: Keyring) -> None:
        sealed = keyring.sealer.seal(b"+79161234567 123456", b"ctx")
        assert b"123456" not in sealed
        assert b"+7916" not in sealed
        assert len(sealed) == 12 + len(b"+79161234567 123456") + 16  # nonce + text + tag

    def test_every_seal_uses_a_fresh_nonce(self, keyring: Keyring) -> None:
        first = keyring.sealer.seal(b"same", b"ctx")
        second = keyring.sealer.seal(b"same", b"ctx")
        assert first != second
        assert first[:12] != second[:12]

    def test_another_context_does_not_open(self, keyring: Keyring) -> None:
        sealed = keyring.sealer.seal(b"secret text", uuid4().bytes)
        with pytest.raises(InvalidTag):
            keyring.sealer.open(sealed, uuid4().bytes)
        with pytest.raises(InvalidTag):
            keyring.sealer.open(sealed, b"")

    @pytest.mark.parametrize("position", [0, 11, 12, -17, -1])
    def test_tampered_bytes_do_not_open(self, keyring: Keyring, position: int) -> None:
        sealed = bytearray(keyring.sealer.seal(b"secret text", b"ctx"))
        sealed[position] ^= 0x01
        with pytest.raises(InvalidTag):
            keyring.sealer.open(bytes(sealed), b"ctx")

    def test_truncated_bytes_do_not_open(self, keyring: Keyring) -> None:
        sealed = keyring.sealer.seal(b"secret text", b"ctx")
        with pytest.raises(InvalidTag):
            keyring.sealer.open(sealed[:-1], b"ctx")

    def test_another_key_does_not_open(self) -> None:
        sealed = Sealer(derive_key(SECRET, "data-at-rest")).seal(b"secret text", b"ctx")
        with pytest.raises(InvalidTag):
            Sealer(derive_key(SECRET, "phone-mac")).open(sealed, b"ctx")
