"""Http1Client against real servers on loopback that answer as scripted, faults included."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from onboarding.adapters import http1
from onboarding.adapters.http1 import BadResponse, Http1Client

BODY = b'{"hello": "world"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Scripted:
    """A TCP server that reads each request whole and writes what ``answer`` returns for it
    (None: close the connection instead). Counts connections and requests."""

    def __init__(self, answer: Callable[[int, bytes], bytes | None], delay: float = 0.0) -> None:
        self._answer = answer
        self._delay = delay
        self.requests: list[bytes] = []
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms?x=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self._answer(len(self.requests), request)
                await asyncio.sleep(self._delay)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()


async def post(client: Http1Client, within: float = 2.0) -> int:
    request = client.request([("Content-Type", "application/json")], BODY)
    return await client.post(request, within_seconds=within)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Http1Client]]:
    made: list[Http1Client] = []

    def make(url: str, **kwargs: object) -> Http1Client:
        made.append(Http1Client(url, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for client in made:
        await client.close()


async def test_the_request_is_one_post_with_its_headers_and_body(client_for) -> None:
    async with Scripted(lambda _n, _r: OK) as server:
        assert await post(client_for(server.url)) == 200
    assert server.requests == [
        b"POST /sms?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nContent-Length: 18\r\n\r\n%s" % (server.port, BODY)
    ]


def test_host_header_of_a_default_port_and_of_an_ipv6_address() -> None:
    assert (
        Http1Client("https://sms.example/send")
        .request([], b"")
        .startswith(b"POST /send HTTP/1.1\r\nHost: sms.example\r\n")
    )
    assert b"\r\nHost: [::1]:8080\r\n" in Http1Client("http://[::1]:8080").request([], b"")


@pytest.mark.parametrize(
    "url", ["ftp://sms.example/", "sms.example", "http:///path", "https://u:p@sms.example/"]
)
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        Http1Client(url)


@pytest.mark.parametrize(
    "header", [("X-A", "b\r\nX-Injected: 1"), ("X-A", "b\nc"), ("X-A\r", "b"), ("X-A", "b\r")]
)
def test_a_line_break_in_a_header_is_refused(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="line break"):
        Http1Client("http://127.0.0.1:1").request([header], b"")


async def test_one_connection_is_kept_for_successive_posts(client_for) -> None:
    async with Scripted(lambda _n, _r: OK) as server:
        client = client_for(server.url)
        assert [await post(client) for _ in range(3)] == [200, 200, 200]
    assert server.connections == 1


async def test_at_most_max_connections_at_once(client_for) -> None:
    async with Scripted(lambda _n, _r: OK, delay=0.05) as server:
        client = client_for(server.url, max_connections=2)
        assert await asyncio.gather(*(post(client) for _ in range(6))) == [200] * 6
    assert server.connections == server.most_open == 2


async def test_a_chunked_body_is_read_to_its_end_and_the_connection_kept(client_for) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=503)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"x" * 1000)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/sms", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = client_for(f"http://127.0.0.1:{port}/sms")
        assert [await post(client), await post(client)] == [503, 503]
        assert len(client._idle) == 1
    finally:
        await runner.cleanup()


async def test_close_delimited_body(client_for) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 201 Created\r\n\r\nuntil the connection closes")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        client = client_for(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
        assert [await post(client), await post(client)] == [201, 201]
        assert client._idle == []


async def test_connection_close_is_honoured(client_for) -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    async with Scripted(lambda _n, _r: answer) as server:
        client = client_for(server.url)
        assert [await post(client), await post(client)] == [200, 200]
    assert server.connections == 2


async def test_an_interim_answer_is_skipped(client_for) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    async with Scripted(lambda _n, _r: answer) as server:
        assert await post(client_for(server.url)) == 200


async def test_an_answer_that_is_not_http_is_a_bad_response(client_for) -> None:
    async with Scripted(lambda _n, _r: b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as server:
        with pytest.raises(BadResponse):
            await post(client_for(server.url))


async def test_a_connection_closed_before_answering_is_a_connection_error(client_for) -> None:
    async with Scripted(lambda _n, _r: None) as server:
        with pytest.raises(ConnectionError) as raised:
            await post(client_for(server.url))
    assert not isinstance(raised.value, BadResponse)
    assert server.connections == 1  # a new connection is not tried again


async def test_a_kept_connection_the_peer_closed_is_replaced_once(client_for) -> None:
    # The server answers one request per connection, keep-alive advertised, then hangs up.
    async with Scripted(lambda n, _r: OK if n % 2 else None) as server:
        client = client_for(server.url)
        assert await post(client) == 200
        await asyncio.sleep(0.05)
        # Each later post finds the kept connection closed, and goes again on a new one.
        assert await post(client) == 200
    assert server.connections == 2


async def test_a_stalled_body_after_the_status_counts_the_status(client_for) -> None:
    answer = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 1000\r\n\r\npartial"
    async with Scripted(lambda _n, _r: answer) as server:
        client = client_for(server.url)
        assert await post(client, within=0.3) == 429
        assert client._idle == []


async def test_no_status_in_time_is_a_timeout(client_for) -> None:
    async with Scripted(lambda _n, _r: b"HTTP/1.1 2") as server:
        with pytest.raises(TimeoutError):
            await post(client_for(server.url), within=0.3)


async def test_a_flood_of_body_is_not_read_to_its_end(
    client_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 10_000)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 50_000
    async with Scripted(lambda _n, _r: answer) as server:
        client = client_for(server.url)
        assert await post(client, within=5.0) == 200
        assert client._idle == []


async def test_idle_connections_older_than_keepalive_are_not_reused(client_for) -> None:
    async with Scripted(lambda _n, _r: OK) as server:
        client = client_for(server.url, keepalive_seconds=0.05)
        assert await post(client) == 200
        await asyncio.sleep(0.1)
        assert await post(client) == 200
    assert server.connections == 2


async def test_close_closes_the_idle_connections(client_for) -> None:
    async with Scripted(lambda _n, _r: OK) as server:
        client = client_for(server.url)
        assert await post(client) == 200
        await client.close()
        await asyncio.sleep(0.05)
        assert server.open_now == 0


async def test_refused_connection_raises_connection_refused(client_for) -> None:
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await post(client_for(f"http://127.0.0.1:{port}/"))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_verifies_the_server(client_for, tmp_path: Path) -> None:
    cert_path, key_path = _self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert_path, key_path)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(BODY))
            writer.write(OK)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_side)
    async with server:
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/sms"
        trusting = ssl.create_default_context(cafile=str(cert_path))
        assert await post(client_for(url, ssl_context=trusting)) == 200
        # The system's roots do not know this certificate: no connection.
        with pytest.raises(ssl.SSLError):
            await post(client_for(url))
