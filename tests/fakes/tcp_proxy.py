"""A TCP proxy on 127.0.0.1 for fault tests: forwards bytes to a target and can cut them off.

The proxy keeps its ephemeral port for its whole life, so a client configured with it (say, a
server's ``ONBOARDING_DATABASE_URL``) reaches the target again once the proxy is back up.

* ``down()``: every live connection is reset and the port stops listening (connects are
  refused), as when the database host goes away;
* ``blackhole()``: the port keeps accepting but nothing is forwarded either way, on new and live
  connections alike: packets vanish and connections hang, as in a network partition;
* ``up()``: listening (and forwarding) again on the same port. Connections that lived through a
  blackhole are reset first: bytes were dropped, so their streams are broken.

Forwarding is byte-exact in both directions, and a half-close is passed on as a half-close.

    async with TcpProxy("127.0.0.1", 5432) as proxy:
        ...  # point the client at 127.0.0.1:proxy.port
        await proxy.down()
        await proxy.up()
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

_CHUNK = 64 * 1024


class _Link:
    """One client connection and its upstream connection, with the two pumps between them."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Flush what is buffered, then close both sides."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """See the module docstring."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._blackholed = False
        #: Connections accepted so far (a way for tests to see that clients reconnected).
        self.accepted = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._port is not None:
            raise RuntimeError("TcpProxy already started")
        await self._listen(0)

    async def stop(self) -> None:
        await self._stop_listening()
        self._reset_all()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

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
            raise RuntimeError("TcpProxy is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def live_connections(self) -> int:
        return len(self._links)

    # -- faults ----------------------------------------------------------------------------

    async def down(self) -> None:
        """Reset every live connection and stop listening: new connects are refused."""
        self._blackholed = False
        await self._stop_listening()
        self._reset_all()

    async def up(self) -> None:
        """Forward again, listening on the same port as before."""
        if self._blackholed:
            self._blackholed = False
            self._reset_all()
        if self._server is None:
            await self._listen(self.port)

    async def blackhole(self) -> None:
        """Keep accepting, forward nothing: every connection, new or live, hangs."""
        self._blackholed = True
        if self._server is None:
            await self._listen(self.port)

    # -- internals -------------------------------------------------------------------------

    async def _listen(self, port: int) -> None:
        server = await asyncio.start_server(
            self._accept, self.host, port, reuse_address=True, limit=_CHUNK
        )
        self._server = server
        self._port = server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # Connections are ours to close: wait_closed (which on 3.12+ waits for them too)
            # only once they are gone.
            self._reset_all()
            await server.wait_closed()

    def _reset_all(self) -> None:
        for link in list(self._links):
            link.reset()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        link = _Link(writer)
        self._links.add(link)
        self.accepted += 1
        try:
            await self._serve(link, reader)
            if link in self._links:  # both directions ended by themselves: close politely
                self._links.discard(link)
                await link.close()
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            self._links.discard(link)
            link.reset()

    async def _serve(self, link: _Link, client_reader: asyncio.StreamReader) -> None:
        if self._blackholed:
            await self._swallow(client_reader)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port, limit=_CHUNK
            )
        except OSError:
            return  # the target is down: the client sees its connection reset
        link.upstream = upstream_writer
        if link not in self._links:  # reset (down) while we were connecting
            return
        pumps = {
            asyncio.create_task(self._pump(client_reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, link.client)),
        }
        link.tasks |= pumps
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        """Read and drop until the client gives up."""
        while await reader.read(_CHUNK):
            pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if self._blackholed:
                    continue  # dropped on the floor
                writer.write(data)
                await writer.drain()
            if not self._blackholed and writer.can_write_eof():
                writer.write_eof()  # pass the half-close on
        except (ConnectionError, OSError):
            with contextlib.suppress(Exception):
                writer.transport.abort()
