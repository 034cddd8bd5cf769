"""A small HTTP/1.1 client for POSTs to one URL: kept-alive connections, llhttp parsing.

The SMS gateway's contract needs one thing of an answer, its status; the body is drained and
dropped. aiohttp's client spent about 190 µs of CPU per POST on that (a session's request and
response objects, timers, cookie and redirect handling); this one spends about 40: the request
is one bytes object, one write, and the answer is parsed by httptools (Node.js's llhttp, the
parser uvicorn uses), which handles Content-Length, chunked and close-delimited bodies and
interim 1xx answers. What is ours is small: the connection pool, the timeout, and the rules below.

- The status line decides. A body that breaks off, stalls or floods after it changes nothing;
  the connection is then closed instead of kept.
- A kept-alive connection that the peer closed while idle fails before any byte comes back;
  the request then goes once more, on a new connection. Every request this client sends is
  safe to repeat (the gateway dedupes by ``Idempotency-Key``).
- Idle connections are dropped after ``keepalive_seconds``, before a peer's own idle timeout
  is likely to close them under us.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

import httptools

#: Idle connections older than this are closed rather than reused (aiohttp's default too).
KEEPALIVE_SECONDS = 15.0
#: Body bytes read before a connection is given up instead of drained.
MAX_BODY_BYTES = 1 << 20


class BadResponse(ConnectionError):
    """The peer answered something that is not an HTTP response."""


class _Connection(asyncio.Protocol):
    """One connection: the request written, then the answer's status awaited."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[int] | None = None
        #: The final status, once its headers are in.
        self.status: int | None = None
        self._body_bytes = 0
        #: Whether any byte of the current answer came back.
        self.heard = False
        self.open = True
        self.reusable = False
        self.idle_since = 0.0

    def exchange(self, request: bytes) -> asyncio.Future[int]:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.status, self._body_bytes, self.heard, self.reusable = None, 0, False, False
        self._transport.write(request)
        return self._answer

    def close(self) -> None:
        self.open = self.reusable = False
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():  # bytes nobody asked for: not ours to parse
            self.close()
            return
        self.heard = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # 101: the status is the answer; nothing to reuse
            self._finish(keep=False)
        except httptools.HttpParserError as error:
            self._fail(BadResponse(type(error).__name__))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.status is not None:  # a close-delimited body, or one broken off
            self._finish(keep=False)
        else:
            self._fail(exc or ConnectionResetError("closed before answering"))

    # httptools' callbacks

    def on_headers_complete(self) -> None:
        if self._answer is None or self._answer.done():  # a second answer to one request
            self.close()
            return
        status = self._parser.get_status_code()
        if not 100 <= status < 200 or status == 101:  # 1xx but 101: interim, the answer follows
            self.status = status

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            self._finish(keep=False)

    def on_message_complete(self) -> None:
        if self.status is not None:
            self._finish(keep=self._parser.should_keep_alive())

    def _finish(self, *, keep: bool) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        assert self.status is not None
        answer.set_result(self.status)
        self.reusable = keep and self.open
        if not self.reusable:
            self.close()

    def _fail(self, error: BaseException) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_exception(error)
        self.close()


class Http1Client:
    """POSTs to one ``http://`` or ``https://`` URL, at most ``max_connections`` at a time.

    :meth:`post` returns the answer's status or raises: ``TimeoutError`` when no status came
    within the timeout, :class:`BadResponse` when the answer is not HTTP, and ``OSError``
    (``ConnectionRefusedError``, ``ssl.SSLError``, …) when the connection could not be made
    or broke before the status line.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 32,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("needs an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("sends no credentials from its URL")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        https = parts.scheme == "https"
        self._ssl = (ssl_context or ssl.create_default_context()) if https else None
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._start = f"POST {target} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii")
        self._keepalive = keepalive_seconds
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    def request(self, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
        """The bytes of a POST with these headers and this body; a line break in a header is
        refused (it would start a header, or a request, of its own)."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        if head.count("\r") != len(headers) or head.count("\n") != len(headers):
            raise ValueError("a header name or value holds a line break")
        return b"%s%sContent-Length: %d\r\n\r\n%s" % (
            self._start,
            head.encode("latin-1"),
            len(body),
            body,
        )

    async def post(self, request: bytes, *, within_seconds: float) -> int:
        """Sends ``request`` (made by :meth:`request`) and returns the answer's status. The
        time limit covers all of it: waiting for a free connection, connecting, the answer;
        past it, an answer whose status is in counts, and none raises ``TimeoutError``."""
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(within_seconds), self._slots:
                while True:
                    connection = self._take_idle()
                    reused = connection is not None
                    if connection is None:
                        connection = await self._connect()
                    try:
                        status = await connection.exchange(request)
                    except OSError:
                        if reused and not connection.heard:
                            continue  # closed by the peer while idle: once more, anew
                        raise
                    self._give_back(connection)
                    return status
        except TimeoutError:
            if connection is not None:
                connection.close()
                if connection.status is not None:  # the status came; the body did not end
                    return connection.status
            raise
        except BaseException:
            if connection is not None:
                connection.close()
            raise

    async def close(self) -> None:
        """Closes the idle connections; those in use close when their answer is in."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            _Connection,
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl is not None else None,
        )
        return connection

    def _take_idle(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.open and now - connection.idle_since < self._keepalive:
                return connection
            connection.close()
        return None

    def _give_back(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.close()
