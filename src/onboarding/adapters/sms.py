"""Sending an SMS: the HTTP gateway of the contract, and a console stand-in for development.

Every backend answers with an :class:`SmsOutcome` instead of raising on network trouble, so the
delivery worker only has to decide between "done", "try again later" and "give up":

* 2xx: :attr:`DeliveryResult.SENT`;
* 429, 5xx, a timeout, a refused or broken connection, an answer that is not HTTP:
  :attr:`DeliveryResult.RETRY`;
* any other status (other 4xx, 1xx, 3xx): :attr:`DeliveryResult.FAILED`.

A URL or a token that no request can carry is refused when the gateway is made.

The outcome's ``detail`` is short and machine-friendly ("http 503", "timeout") and never holds
the phone number or the text: the text carries a one-time code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from onboarding.adapters.http1 import BadResponse, Http1Client


class DeliveryResult(StrEnum):
    SENT = "SENT"
    RETRY = "RETRY"
    """Not delivered this time (429, 5xx, timeout, connection trouble): try again later."""
    FAILED = "FAILED"
    """Will never succeed (any other 4xx, a broken request): give up at once."""


@dataclass(frozen=True, slots=True)
class SmsOutcome:
    result: DeliveryResult
    detail: str
    """E.g. "http 503", "timeout", "connection refused"; never the phone or the text."""


class SmsBackend(Protocol):
    async def send(self, message_id: UUID, phone_e164: str, text: str) -> SmsOutcome: ...

    async def close(self) -> None: ...


def classify_status(status: int) -> DeliveryResult:
    """The contract's rule for an HTTP status of the gateway."""
    if 200 <= status < 300:
        return DeliveryResult.SENT
    if status == 429 or 500 <= status < 600:
        return DeliveryResult.RETRY
    return DeliveryResult.FAILED


class HttpSmsGateway:
    """``POST $ONBOARDING_SMS_GATEWAY_URL`` as the contract describes it, over kept-alive
    connections (see :mod:`onboarding.adapters.http1`).

    One client serves every call until :meth:`close`; a send after that makes a new one.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout_seconds: float = 5.0,
        *,
        max_connections: int = 32,
    ) -> None:
        self._url = url
        self._auth = [("Authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout_seconds
        self._max_connections = max_connections
        self._client: Http1Client | None = self._new_client()
        # A token the request cannot carry fails here, at start, as a bad URL did just above.
        self._client.request(self._headers(UUID(int=0)), b"")

    def _new_client(self) -> Http1Client:
        return Http1Client(self._url, max_connections=self._max_connections)

    def _headers(self, message_id: UUID) -> list[tuple[str, str]]:
        return [
            ("Content-Type", "application/json"),
            ("Idempotency-Key", str(message_id)),
            *self._auth,
        ]

    async def send(self, message_id: UUID, phone_e164: str, text: str) -> SmsOutcome:
        client = self._client
        if client is None:
            client = self._client = self._new_client()
        body = json.dumps({"message_id": str(message_id), "phone": phone_e164, "text": text})
        request = client.request(self._headers(message_id), body.encode())
        try:
            status = await client.post(request, within_seconds=self._timeout)
        except TimeoutError:
            return SmsOutcome(DeliveryResult.RETRY, "timeout")
        except ConnectionRefusedError:
            return SmsOutcome(DeliveryResult.RETRY, "connection refused")
        except BadResponse as exc:
            return SmsOutcome(DeliveryResult.RETRY, f"bad response: {exc}")
        except OSError as exc:  # resets, DNS, TLS: all worth another try
            return SmsOutcome(DeliveryResult.RETRY, f"connection error: {type(exc).__name__}")
        return SmsOutcome(classify_status(status), f"http {status}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


class ConsoleSmsBackend:
    """Development only: prints each SMS, code included, to stdout instead of sending it.

    It deliberately bypasses the logging module: logs must never contain codes.
    """

    async def send(self, message_id: UUID, phone_e164: str, text: str) -> SmsOutcome:
        print(f"SMS to {phone_e164} [message {message_id}]: {text}", flush=True)
        return SmsOutcome(DeliveryResult.SENT, "console")

    async def close(self) -> None:
        return None
