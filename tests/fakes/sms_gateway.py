"""A fake SMS gateway: a real aiohttp server on 127.0.0.1 that speaks the contract's protocol.

``POST /sms`` with ``Content-Type: application/json``, ``Idempotency-Key: <message_id>``,
``Authorization: Bearer <token>`` (checked only when the fake has a token) and the body
``{"message_id": "<uuid>", "phone": "+7…", "text": "…"}``. The fake answers 401 to a missing or
wrong token and 400 to anything that is not exactly that request; neither consumes a scripted
response. Otherwise each request takes the next scripted response (``fail_next``,
``delay_next``, ``respond_next``), or the default status (200 unless ``set_default`` or
``reject_all`` changed it).

Every request is recorded in ``requests`` as it arrives; the ones answered 2xx also go to
``delivered``. A delayed request whose client has already given up still counts as delivered
when its (unread) answer is 2xx, as a real gateway would have sent the SMS: that is how
duplicates arise, and ``duplicate_message_ids()`` shows them. The fake never dedupes.

    async with FakeSmsGateway(token="t") as gw:
        gw.fail_next(2, status=503)
        ...  # point the service at gw.url
        await gw.wait_for(1)
        assert gw.codes_for("+79161234567") == ["123456"]
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from aiohttp import web

_E164 = re.compile(r"\+[1-9]\d{1,14}")
_CODE = r"(?<!\d)\d{4,10}(?!\d)"  # the first 4..10-digit run of the text
_BODY_KEYS = frozenset({"message_id", "phone", "text"})


@dataclass(slots=True)
class ReceivedSms:
    """One request as the fake received it (fields are empty when the body was unusable)."""

    message_id: str
    phone: str
    text: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw_body: bytes
    client_port: int | None = None
    """The client's source port: equal ports on successive requests mean a reused connection."""
    status: int | None = None
    """What the fake answered; None while the answer is still pending (e.g. delayed)."""

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class _Scripted:
    status: int | None  # None: the default status at the time of answering
    delay: float


class FakeSmsGateway:
    """The fake gateway; see the module docstring."""

    def __init__(self, token: str | None = None, *, code_pattern: str = _CODE) -> None:
        self.token = token
        self.code_pattern = re.compile(code_pattern)
        self.requests: list[ReceivedSms] = []
        self.delivered: list[ReceivedSms] = []
        #: The most requests that were ever being answered at once.
        self.most_in_flight = 0
        self._in_flight = 0
        self._default_status = 200
        self._script: deque[_Scripted] = deque()
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeSmsGateway already started")
        app = web.Application()
        app.router.add_post("/sms", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._stopping.clear()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stopping.set()  # delayed answers end now instead of holding up shutdown
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSmsGateway is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"

    # -- scripting -------------------------------------------------------------------------

    def respond_next(self, n: int = 1, *, status: int | None = None, delay: float = 0.0) -> None:
        """Queue ``n`` answers: ``status`` (None: the default) after ``delay`` seconds."""
        self._script.extend(_Scripted(status, delay) for _ in range(n))

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next ``n`` requests (after those already queued) are answered ``status``."""
        self.respond_next(n, status=status)

    def delay_next(self, n: int, seconds: float, status: int | None = None) -> None:
        """The next ``n`` requests wait ``seconds`` before their answer (to cause timeouts)."""
        self.respond_next(n, status=status, delay=seconds)

    def set_default(self, status: int) -> None:
        """The status of every request with no scripted answer."""
        self._default_status = status

    def reject_all(self, status: int = 503) -> None:
        """Drop the script and answer ``status`` to everything from now on."""
        self._script.clear()
        self._default_status = status

    def reset(self) -> None:
        """Back to answering 200 to everything; recorded requests are kept (see ``clear``)."""
        self.reject_all(200)

    def clear(self) -> None:
        """Forget the recorded requests."""
        self.requests.clear()
        self.delivered.clear()

    # -- inspection ------------------------------------------------------------------------

    def codes_for(self, phone: str) -> list[str]:
        """The codes delivered to ``phone`` (E.164), oldest first."""
        codes = []
        for sms in self.delivered:
            if sms.phone == phone and (match := self.code_pattern.search(sms.text)):
                codes.append(match.group(0))
        return codes

    def by_message_id(self, *, all_requests: bool = False) -> Counter[str]:
        """How often each message_id was delivered (or received, with ``all_requests``)."""
        source = self.requests if all_requests else self.delivered
        return Counter(sms.message_id for sms in source if sms.message_id)

    def duplicate_message_ids(self) -> list[str]:
        """message_ids delivered more than once: an SMS the phone got twice."""
        return [mid for mid, count in self.by_message_id().items() if count > 1]

    # The names below are the fake's API: ``timeout`` is what a test reads most naturally.
    async def wait_for(
        self,
        count: int,
        timeout: float = 5.0,
    ) -> list[ReceivedSms]:
        """Wait until at least ``count`` requests have been delivered (answered 2xx)."""
        await self._wait_until(self.delivered, "delivered", count, timeout)
        return list(self.delivered)

    async def wait_for_requests(
        self,
        count: int,
        timeout: float = 5.0,
    ) -> list[ReceivedSms]:
        """Wait until at least ``count`` requests have arrived, whatever their answer."""
        await self._wait_until(self.requests, "received", count, timeout)
        return list(self.requests)

    async def _wait_until(
        self, records: list[ReceivedSms], what: str, count: int, seconds: float
    ) -> None:
        try:
            async with asyncio.timeout(seconds):
                while len(records) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"expected {count} SMS {what} within {seconds}s; "
                f"received {len(self.requests)}, delivered {len(self.delivered)}"
            ) from None

    # -- the server ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = _parse_json_object(raw)
        sms = ReceivedSms(
            message_id=_str_field(body, "message_id"),
            phone=_str_field(body, "phone"),
            text=_str_field(body, "text"),
            headers=dict(request.headers),
            body=body if body is not None else {},
            raw_body=raw,
            client_port=_peer_port(request),
        )
        self.requests.append(sms)
        self._changed.set()

        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return self._answer(sms, 401)
        if not _is_contract_request(request, body):
            return self._answer(sms, 400)

        scripted = self._script.popleft() if self._script else _Scripted(None, 0.0)
        if scripted.delay > 0:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
            try:
                async with asyncio.timeout(scripted.delay):
                    await self._stopping.wait()
                return self._answer(sms, 503)  # shutting down: the SMS was never sent
            except TimeoutError:
                pass
            finally:
                self._in_flight -= 1
        status = scripted.status if scripted.status is not None else self._default_status
        return self._answer(sms, status)

    def _answer(self, sms: ReceivedSms, status: int) -> web.Response:
        sms.status = status
        if 200 <= status < 300:
            self.delivered.append(sms)
        self._changed.set()
        if status in (204, 304):
            return web.Response(status=status)
        return web.json_response({"status": status}, status=status)


def _parse_json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _peer_port(request: web.Request) -> int | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return peer[1] if peer else None


def _str_field(body: dict[str, Any] | None, key: str) -> str:
    value = body.get(key) if body is not None else None
    return value if isinstance(value, str) else ""


def _is_contract_request(request: web.Request, body: dict[str, Any] | None) -> bool:
    if request.content_type != "application/json" or body is None:
        return False
    if set(body) != _BODY_KEYS or not all(isinstance(body[k], str) for k in _BODY_KEYS):
        return False
    try:
        message_id = str(UUID(body["message_id"]))
    except ValueError:
        return False
    return (
        message_id == body["message_id"]
        and request.headers.get("Idempotency-Key") == message_id
        and _E164.fullmatch(body["phone"]) is not None
        and body["text"] != ""
    )
