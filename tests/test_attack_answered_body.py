"""A request answered before its body is all in (the application did not read it): the rest is no next head.

Once the answer was out, the gateway's HTTP protocols counted what still arrived toward the next request
head: past ``max_head_bytes`` of body a 414 "request target too long" was written after the request's own
answer, and a body still arriving ``header_timeout`` later got a 408; two answers to one request (an upload
of 200 kB to a path with no API: 404, then 414). And the body's bytes counted toward the next head: a 6 kB
head behind a 62 kB body was refused 414. Now such a body is still bounded the same way (a client cannot
hold the connection with it), but the connection is closed without a second answer, and the next head
counts from the body's end. Real uvicorn
with each of the gateway's HTTP protocols, raw clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.server import GatewayH11Protocol, GatewayHTTPProtocol, GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import not_found
from support.configs import build_config
from support.servers import UvicornServer


class _QuickHTTP(GatewayHTTPProtocol):
    header_timeout = 0.5


class _QuickH11(GatewayH11Protocol):
    header_timeout = 0.5


def _upload(port: int, size: int, pause: float) -> bytes:
    """POST ``size`` bytes to a path with no API, half after the head's answer came, the rest ``pause``
    seconds later; all that is read until the connection ends (EOF, a reset, or 5 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size)
        received = sock.recv(65536)  # the 404, before the body
        with contextlib.suppress(OSError):  # the gateway closed: EPIPE or a reset
            sock.sendall(bytes(size // 2))
            time.sleep(pause)
            sock.sendall(bytes(size - size // 2))
        with contextlib.suppress(OSError):
            while block := sock.recv(65536):
                received += block
    return received


@pytest.mark.parametrize("http", [_QuickHTTP, _QuickH11], ids=["httptools", "h11"])
@pytest.mark.parametrize(("size", "pause"), [(400_000, 0.0), (20_000, 1.5)], ids=["over the head limit", "late"])
async def test_the_rest_of_an_answered_body_gets_no_second_answer(http: object, size: int, pause: float) -> None:
    gateway = WebSocketGateway(not_found, config=build_config())
    with UvicornServer(gateway, ws=GatewayWebSocketProtocol, http=http) as server:  # type: ignore[arg-type]
        received = await asyncio.to_thread(_upload, server.port, size, pause)
    assert received.startswith(b"HTTP/1.1 404 "), received[:200]
    assert received.count(b"HTTP/1.1 ") == 1, received


def _upload_then_request(port: int, size: int) -> bytes:
    """POST ``size`` bytes to a path with no API, the body after the answer, then a request with a 6 kB
    header on the same connection; all that is read until the connection ends (or 3 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size)
        received = sock.recv(65536)
        sock.sendall(bytes(size))
        time.sleep(0.2)  # the body read whole first
        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-A: " + b"a" * 6000 + b"\r\n\r\n")
        with contextlib.suppress(OSError):
            while block := sock.recv(65536):
                received += block
    return received


@pytest.mark.parametrize("http", [_QuickHTTP, _QuickH11], ids=["httptools", "h11"])
async def test_the_next_request_behind_an_answered_body_counts_from_its_own_start(http: object) -> None:
    gateway = WebSocketGateway(not_found, config=build_config())
    with UvicornServer(gateway, ws=GatewayWebSocketProtocol, http=http) as server:  # type: ignore[arg-type]
        received = await asyncio.to_thread(_upload_then_request, server.port, 62_000)
    statuses = [line[:12] for line in received.split(b"\n") if line.startswith(b"HTTP/1.1 ")]
    assert statuses == [b"HTTP/1.1 404"] * 2, received[-300:]


def _upload_and_request(port: int, size: int) -> bytes:
    """As :func:`_upload_then_request`, but the body and the next request in one write (one read, as often)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n" % size)
        received = sock.recv(65536)
        head = b"GET /nowhere HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-A: " + b"a" * 6000 + b"\r\n\r\n"
        sock.sendall(bytes(size) + head)
        with contextlib.suppress(OSError):
            while block := sock.recv(65536):
                received += block
    return received


@pytest.mark.parametrize("http", [_QuickHTTP, _QuickH11], ids=["httptools", "h11"])
async def test_the_next_request_in_the_same_read_as_an_answered_body_counts_from_its_own_start(http: Any) -> None:
    """asyncio's loop reads up to 256 KiB at a time (uvloop 64 KiB): a 62 kB body and a 6 kB head came in one
    read, counted whole toward the head under h11, which refused it (closed, the request unanswered)."""

    class ReadingLate(http):  # type: ignore[misc]
        """Reads again 0.2 s after its answer: what the client sent then is in one read, not split by timing."""

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self.transport.pause_reading()
                self.loop.call_later(0.2, self.transport.resume_reading)

    gateway = WebSocketGateway(not_found, config=build_config())
    with UvicornServer(gateway, ws=GatewayWebSocketProtocol, http=ReadingLate, loop="asyncio") as server:  # type: ignore[arg-type]
        received = await asyncio.to_thread(_upload_and_request, server.port, 62_000)
    statuses = [line[:12] for line in received.split(b"\n") if line.startswith(b"HTTP/1.1 ")]
    assert statuses == [b"HTTP/1.1 404"] * 2, received[-300:]
