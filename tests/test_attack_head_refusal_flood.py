"""Attack: a client whose request the gateway's HTTP protocol refuses (408, 414, 431, the parser's 400), then
floods the connection.

``HeadDeadline._refuse`` answered, half-closed and dropped what still arrived until its own 2 s timer
closed the socket: no byte bound, so one client had the worker read 10-12 GB over loopback in those 2 s (a
core busy per refused connection, and the parser's 400 joined them when it began to half-close), where a
refusal by the WebSocket protocol or the application lingers to 1 MiB (``test_attack_plain_accept_refusal_linger``).
Now those refusals close as every other one does: the lingering close's 2 s and 1 MiB. The answer still
arrives whole (``test_attack_bad_request_answer``). Real ``asgi-ws-gateway run`` (uvloop, httptools), a real
uvicorn with the gateway's h11 protocol, raw clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.passthrough.lingering_close import LINGER_BYTES
from asgi_ws_gateway.server import GatewayH11Protocol, GatewayHTTPProtocol, GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import not_found
from support.configs import build_config
from support.processes import GatewayProcess, traceback_free_gateway
from support.rawhttp import flood_bound, handshake, refused_then_flooding, status_of
from support.servers import UvicornServer

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="Linux's TCP behaviour is what is measured"),
]

REFUSED = {
    "the parser's 400 (head)": (b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "the parser's 400 (upgrade)": (handshake("/ws/\x01echo"), 400),
    "the parser's 400 (body)": (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "the head limit's 431": (handshake(extra=b"X-Long: " + b"a" * 70_000 + b"\r\n"), 431),
    "the head limit's 414": (b"GET /" + b"a" * 70_000, 414),
}
"""Requests the gateway's HTTP protocol refuses itself, and their status."""
BOUND = flood_bound(LINGER_BYTES)
"""What a refused client may get the kernel to take: the linger's 1 MiB, the gateway's receive buffer, and room."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    async with traceback_free_gateway(tmp_path_factory.mktemp("head-refusal-flood")) as process:
        yield process


@pytest.mark.parametrize("name", REFUSED)
async def test_a_client_flooding_after_its_refusal_is_closed_at_the_lingers_bound(
    gateway: GatewayProcess, name: str
) -> None:
    request, status = REFUSED[name]
    received, sent = await asyncio.to_thread(refused_then_flooding, gateway.port, request, up_to=16 * BOUND)
    assert status_of(received) == status
    assert sent < BOUND, f"the gateway read {sent:,} bytes after the refusal"


class _QuickHTTP(GatewayHTTPProtocol):
    header_timeout = 0.3


class _QuickH11(GatewayH11Protocol):
    header_timeout = 0.3


@pytest.mark.parametrize("http", [_QuickHTTP, _QuickH11], ids=["httptools", "h11"])
@pytest.mark.parametrize("name", [*REFUSED, "the deadline's 408"])
async def test_each_http_protocols_refusal_is_held_to_the_bound(http: object, name: str) -> None:
    request, status = REFUSED.get(name, (b"GET / HTTP/1.1\r\n", 408))  # a head never finished
    gateway = WebSocketGateway(not_found, config=build_config())
    with UvicornServer(gateway, ws=GatewayWebSocketProtocol, http=http) as server:  # type: ignore[arg-type]
        received, sent = await asyncio.to_thread(refused_then_flooding, server.port, request, up_to=16 * BOUND)
    assert status_of(received) == status
    assert sent < BOUND, f"the gateway read {sent:,} bytes after the refusal"
