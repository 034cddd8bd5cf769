"""Sending an SMS: the HTTP gateway of the contract, and a console stand-in for development.

Every backend answers with an :class:`SmsOutcome` instead of raising on network trouble, so the
delivery worker only has to decide between "done", "try again later" and "give up":

* 2xx: :attr:`DeliveryResult.SENT`;
* 429, 5xx, a timeout, a refused or broken connection: :attr:`DeliveryResult.RETRY`;
* any other status (other 4xx, 1xx, 3xx) or a request that can never succeed:
  :attr:`DeliveryResult.FAILED`.

The outcome's ``detail`` is short and machine-friendly ("http 503", "timeout") and never holds
the phone number or the text: the text carries a one-time code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol
from uuid import UUID

import aiohttp


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
    """``POST $ONBOARDING_SMS_GATEWAY_URL`` as the contract describes it.

    One ``aiohttp.ClientSession`` is created on the first ``send`` (inside the running loop) and
    reused for every later call until :meth:`close`.
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
        self._token = token or None
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
            )
        return self._session

    def _headers(self, message_id: UUID) -> dict[str, str]:
        headers = {"Idempotency-Key": str(message_id)}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def send(self, message_id: UUID, phone_e164: str, text: str) -> SmsOutcome:
        body = {"message_id": str(message_id), "phone": phone_e164, "text": text}
        try:
            async with self._get_session().post(
                self._url,
                json=body,  # sets Content-Type: application/json
                headers=self._headers(message_id),
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                # The status line is the gateway's answer; a body that breaks off afterwards
                # (or times out: TimeoutError is an OSError) changes nothing about it.
                # The body is drained and dropped, never logged.
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await response.read()
        except TimeoutError:  # asyncio.TimeoutError and aiohttp's timeouts are TimeoutError
            return SmsOutcome(DeliveryResult.RETRY, "timeout")
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            detail = "connection refused" if refused else "connection error"
            return SmsOutcome(DeliveryResult.RETRY, detail)
        except aiohttp.ClientConnectionError as exc:
            return SmsOutcome(DeliveryResult.RETRY, f"connection error: {type(exc).__name__}")
        except aiohttp.ClientPayloadError:
            return SmsOutcome(DeliveryResult.RETRY, "payload error")
        except OSError as exc:
            return SmsOutcome(DeliveryResult.RETRY, f"os error: {type(exc).__name__}")
        except aiohttp.ClientError as exc:  # e.g. an invalid URL: retrying will not help
            return SmsOutcome(DeliveryResult.FAILED, f"client error: {type(exc).__name__}")
        return SmsOutcome(classify_status(status), f"http {status}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class ConsoleSmsBackend:
    """Development only: prints each SMS, code included, to stdout instead of sending it.

    It deliberately bypasses the logging module: logs must never contain codes.
    """

    async def send(self, message_id: UUID, phone_e164: str, text: str) -> SmsOutcome:
        print(f"SMS to {phone_e164} [message {message_id}]: {text}", flush=True)
        return SmsOutcome(DeliveryResult.SENT, "console")

    async def close(self) -> None:
        return None
