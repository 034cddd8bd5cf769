"""The TcpProxy the fault tests rely on: byte-exact both ways, and its faults do what they say."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from tests.fakes.tcp_proxy import TcpProxy


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """An echo server that, at the client's EOF, answers "bye" and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write(b"bye")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def proxy(echo: int) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", echo) as started:
        yield started


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = await asyncio.wait_for(reader.read(), 10)  # until EOF
        await sender
        return received
    finally:
        writer.close()


async def test_bytes_go_through_unchanged_both_ways_and_a_half_close_is_passed_on(
    proxy: TcpProxy,
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    assert await roundtrip(proxy.port, payload) == payload + b"bye"
    assert await roundtrip(proxy.port, b"") == b"bye"


async def test_down_resets_live_connections_refuses_new_ones_and_up_uses_the_same_port(
    proxy: TcpProxy,
) -> None:
    port = proxy.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

    await proxy.down()
    assert not proxy.listening
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)

    await proxy.up()
    assert proxy.port == port
    assert await roundtrip(port, b"again") == b"againbye"


async def test_blackhole_accepts_but_forwards_nothing_until_up(proxy: TcpProxy) -> None:
    live_reader, live_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    live_writer.write(b"x")
    assert await asyncio.wait_for(live_reader.readexactly(1), 5) == b"x"

    await proxy.blackhole()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", proxy.port), 5
    )  # still accepted
    for w in (writer, live_writer):
        w.write(b"hello?")
    for r in (reader, live_reader):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.read(1), 0.3)

    await proxy.up()  # connections that lost bytes are reset; new ones work
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(live_reader.readexactly(1), 5)
    for w in (writer, live_writer):
        w.close()
    assert await roundtrip(proxy.port, b"back") == b"backbye"


async def test_a_dead_target_closes_the_client_connection() -> None:
    async with TcpProxy("127.0.0.1", 1) as proxy:  # nothing listens on port 1
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            data = b""
        assert data == b""
        writer.close()
