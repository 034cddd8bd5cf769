"""Keys derived from ONBOARDING_SECRET_KEY: a MAC for codes and phones, AEAD for data at rest.

Each purpose gets its own subkey (HKDF with a distinct ``info``), so a MAC key can never be
mistaken for an encryption key and rotating one use does not touch the others.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12


def derive_key(secret: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"onboarding/v1", info=purpose.encode()
    ).derive(secret)


class Keyring:
    """All keys of the service, derived once at start-up from the one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the secret key must be at least 16 bytes")
        self.codes = HmacCodeHasher(derive_key(secret, "otp-code-mac"))
        self.phones = Mac(derive_key(secret, "phone-mac"))
        self.persons = Mac(derive_key(secret, "person-key"))
        self.sealer = Sealer(derive_key(secret, "data-at-rest"))


class Mac:
    """HMAC-SHA256 under one subkey."""

    def __init__(self, key: bytes) -> None:
        # Keyed once and copied for each MAC: keying is most of the cost of a short message.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, *parts: bytes) -> bytes:
        mac = self._keyed.copy()
        # Length-prefixed so that ("ab", "c") and ("a", "bc") never collide.
        mac.update(b"".join(len(part).to_bytes(4, "big") + part for part in parts))
        return mac.digest()


class HmacCodeHasher:
    """The MAC of a one-time code, bound to the message that carried it (and so to its
    agreement): a stolen MAC says nothing about any other code."""

    def __init__(self, key: bytes) -> None:
        self._mac = Mac(key)

    def mac(self, message_id: UUID, code: str) -> bytes:
        return self._mac(message_id.bytes, code.encode())


class Sealer:
    """AES-256-GCM; ``context`` (e.g. a message id) is authenticated, so a sealed value moved
    to another row does not open."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context)
