"""Attacks on the HTTP stage: a request head of any size used to be buffered (httptools has no limit).

Real uvicorn with the gateway's HTTP protocols (httptools and h11) and its WebSocket protocol, a
real upstream. Every head over ``max_head_bytes`` gets 431 and the socket is closed, whether it is
a plain HTTP request or a WebSocket upgrade, one huge header or many small ones, the first request
on a connection or a later one; a head under the limit is served as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway.server.head_deadline import DEFAULT_MAX_HEAD_BYTES, _max_head_bytes_from_env
from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import create_app
from support.rawhttp import EOF_TIMEOUT, exchange, status_of
from support.servers import UvicornServer
from support.upstream import UpstreamServer

PROTOCOLS: dict[str, Any] = {"httptools": GatewayHTTPProtocol, "h11": GatewayH11Protocol}
GATEWAY_WS: Any = GatewayWebSocketProtocol


def _serve(upstream: UpstreamServer, http: Any) -> UvicornServer:
    echo = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}
    app = create_app({"apis": [echo]})  # type: ignore[arg-type]
    return UvicornServer(app, ws=GATEWAY_WS, http=http)


@pytest.fixture
def port(upstream: UpstreamServer) -> Iterator[int]:
    """The default HTTP protocol (httptools), which has no head limit of its own."""
    with _serve(upstream, GatewayHTTPProtocol) as server:
        yield server.port


@pytest.fixture(params=sorted(PROTOCOLS))
def any_port(request: pytest.FixtureRequest, upstream: UpstreamServer) -> Iterator[int]:
    with _serve(upstream, PROTOCOLS[request.param]) as server:
        yield server.port


def upgrade(extra: bytes = b"") -> bytes:
    return (
        b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra
    )


def plain(extra: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + extra


ONE_HUGE = b"X-Big: " + b"a" * (DEFAULT_MAX_HEAD_BYTES + 1024) + b"\r\n"
MANY_SMALL = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 60) for i in range(1500))  # about 100 KB


@pytest.mark.parametrize("build", [plain, upgrade], ids=["http", "upgrade"])
@pytest.mark.parametrize("extra", [ONE_HUGE, MANY_SMALL], ids=["one-huge-header", "many-headers"])
@pytest.mark.parametrize("complete", [True, False], ids=["complete", "unterminated"])
async def test_an_oversized_head_gets_431_and_is_closed(port: int, build: Any, extra: bytes, complete: bool) -> None:
    """Over the limit, finished with CRLF CRLF or still arriving: 431, then EOF, without waiting for the deadline."""
    response = await exchange(port, build(extra) + (b"\r\n" if complete else b""))
    assert status_of(response) == 431


async def test_an_oversized_head_on_a_kept_alive_connection_gets_431(port: int) -> None:
    """The limit counts each request's head: a second, oversized request after a served one gets 431."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(plain(b"\r\n"))
        async with asyncio.timeout(EOF_TIMEOUT):
            first = await reader.readuntil(b'{"status": "ok"}')
            writer.write(plain(ONE_HUGE) + b"\r\n")
            second = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert (status_of(first), status_of(second)) == (200, 431)


def _streaming_head(port: int, total: int) -> tuple[bytes, int, int]:
    """Stream a request head with one header of ``total`` bytes from a thread while reading: what was read
    (until EOF or a reset), what had been sent when the answer came, and what was sent in all."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=EOF_TIMEOUT)
    sent = 0

    def stream() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):  # closed by the server after its linger: expected
            sock.sendall(plain(b"X-Big: "))
            block = b"a" * 65536
            while sent < total:
                sent += sock.send(block)

    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    received, answered_at = b"", -1
    try:
        # A blocking socket, not asyncio's streams: their reader drops what it holds once the writer
        # meets the server's reset (EPIPE), and the answer read before it is what is checked.
        with contextlib.suppress(ConnectionResetError):
            while block := sock.recv(65536):
                if not received:
                    answered_at = sent
                received += block
    finally:
        sender.join(EOF_TIMEOUT)
        sock.close()
    return received, answered_at, sent


async def test_a_streamed_head_is_answered_while_it_streams(port: int) -> None:
    """A client streaming a 100 MB header gets 431 long before it is done (nothing waits for the end), and
    its connection ends soon after: the lingering close's 1 MiB read, not the rest of the stream."""
    total = 100 * 1024 * 1024
    received, answered_at, sent = await asyncio.to_thread(_streaming_head, port, total)
    assert status_of(received) == 431
    assert 0 <= answered_at < total
    assert sent < total


@pytest.mark.parametrize("piece", [None, 4096], ids=["whole", "in-pieces"])
@pytest.mark.parametrize("build", [plain, upgrade], ids=["http", "upgrade"])
async def test_a_head_under_the_limit_is_served(any_port: int, build: Any, piece: int | None) -> None:
    """24 KiB of headers: 200 for HTTP, 101 for an upgrade, whole or in pieces as a network delivers them
    (h11's own 16 KiB buffer refused a head that came in more than one read with 400, one read whole at any size)."""
    head = build(b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 1000) for i in range(24))) + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", any_port)
    try:
        for start in range(0, len(head), piece or len(head)):
            writer.write(head[start : start + (piece or len(head))])
            await writer.drain()
            if piece:
                await asyncio.sleep(0.05)  # a read each, most likely (were two reads joined, it would pass anyway)
        async with asyncio.timeout(EOF_TIMEOUT):
            line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert status_of(line) == (200 if build is plain else 101), line


async def test_an_http10_upgrade_request_is_not_upgraded(any_port: int, upstream: UpstreamServer) -> None:
    """RFC 9110 §7.8: ``Upgrade`` in an HTTP/1.0 request is ignored (an HTTP/1.0 proxy forwards it
    without knowing what it asks). uvicorn re-wrote the request as HTTP/1.1: 101, spliced upstream.
    It is plain HTTP now: the API's 426, the connection closed (HTTP/1.0), no upstream contacted."""
    response = await exchange(any_port, upgrade().replace(b"HTTP/1.1", b"HTTP/1.0", 1) + b"\r\n")
    assert response.split(b" ", 2)[1] == b"426", response[:200]
    assert upstream.handshakes == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n",  # no Connection: Upgrade
        b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n",
        b"GET /nowhere HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n",
    ],
    ids=["no-connection-upgrade", "websocket-and-h2c", "h2c", "elsewhere"],
)
async def test_an_upgrade_answered_as_http_closes_the_connection(any_port: int, head: bytes) -> None:
    """A request that asks to switch protocols and is answered as plain HTTP: the answer, then EOF.
    A proxy that took it for a switch tunnels the client's next bytes here: the request pipelined
    behind it (here /healthz, or the management API) was served on the kept-alive connection."""
    response = await exchange(any_port, head + b"\r\nGET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert status_of(response) in (200, 404, 426)
    assert response.count(b"HTTP/1.1 ") == 1, response


@pytest.mark.parametrize("size", [9000, DEFAULT_MAX_HEAD_BYTES + 10])
async def test_an_oversized_request_line_gets_414(port: int, size: int) -> None:
    """A request line over 8 KiB, or over the whole limit on its own, is 414 URI Too Long."""
    response = await exchange(port, b"GET /ws/echo?q=" + b"a" * size + b" HTTP/1.1\r\nHost: gw\r\n" + ONE_HUGE)
    assert status_of(response) == 414


@pytest.mark.parametrize("build", [plain, upgrade], ids=["http", "upgrade"])
async def test_h11_refuses_an_oversized_head_and_closes(any_port: int, build: Any) -> None:
    """The limit, under h11 too (its own buffer is as large): 431, the socket closed; never a hang or a 2xx."""
    response = await exchange(any_port, build(ONE_HUGE) + b"\r\n")
    assert status_of(response) == 431


def test_max_head_bytes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``$ASGI_WS_GATEWAY_MAX_HEAD_BYTES`` sets the limit; anything but a positive integer fails loudly."""
    monkeypatch.setenv("ASGI_WS_GATEWAY_MAX_HEAD_BYTES", "131072")
    assert _max_head_bytes_from_env() == 131072
    monkeypatch.delenv("ASGI_WS_GATEWAY_MAX_HEAD_BYTES")
    assert _max_head_bytes_from_env() == DEFAULT_MAX_HEAD_BYTES
    for bad in ("0", "-1", "1e6", "64k", " 10"):
        monkeypatch.setenv("ASGI_WS_GATEWAY_MAX_HEAD_BYTES", bad)
        with pytest.raises(ValueError, match="ASGI_WS_GATEWAY_MAX_HEAD_BYTES"):
            _max_head_bytes_from_env()


async def test_a_malformed_request_is_an_info_line_naming_the_client(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Any client can send one: uvicorn logged a WARNING naming nobody for each (a flood of them
    was a flood of warnings); the gateway's HTTP protocol logs an INFO line with the client."""
    with caplog.at_level("INFO", logger="uvicorn.error"):
        assert status_of(await exchange(port, b"GET / HTTP/1.1\r\nHost: gw\r\nBad Header\r\n\r\n")) == 400
    records = [r for r in caplog.records if r.name == "uvicorn.error" and "nvalid HTTP request" in r.getMessage()]
    assert [r.levelname for r in records] == ["INFO"]
    assert records[0].getMessage().startswith("127.0.0.1:")
