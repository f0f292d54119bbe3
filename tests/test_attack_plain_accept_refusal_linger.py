"""Attack: a client whose upgrade request websockets' own checks or parser refuse, then keeps sending.

The refusal (400 for a bad ``Sec-WebSocket-Key`` or a request body, 405, 426, 414, 431) is answered while the
HTTP protocol hands the connection to the WebSocket protocol (``receive_parsed_request``), before it
makes that protocol the transport's. The lingering close that follows the refusal (read and drop what
the client still sends, :data:`~asgi_ws_gateway.passthrough.lingering_close.LINGER_BYTES` at most) was
undone by that hand-over: the WebSocket protocol read everything the client sent, at full speed, until
the linger's time bound (2.3 GB from one client over loopback) where a refusal by the application
(403, 404) stops after a megabyte. Now the gateway's HTTP protocol makes the WebSocket protocol the
transport's before it hands the request over.

uvicorn's own HTTP protocols (``uvicorn app:app --ws asgi_ws_gateway.server:GatewayWebSocketProtocol``, the
README's lighter form) also feed the request to the WebSocket protocol before making it the transport's, but
its refusals close after that: held to the same bound here, so that it stays so.

Real ``asgi-ws-gateway run`` (uvloop, the gateway's own protocols), a real uvicorn serving the gateway with
its WebSocket protocol under uvicorn's HTTP protocols, and raw clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.server import GatewayH11Protocol, GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import not_found
from support.configs import build_config
from support.processes import GatewayProcess, traceback_free_gateway
from support.rawhttp import handshake, refused_then_flooding, status_of
from support.servers import UvicornServer

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="Linux's TCP behaviour is what is measured"),
]

KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
REFUSED = {
    "websockets' 400 (key)": (handshake().replace(KEY, b"Sec-WebSocket-Key: c2hvcnQ=\r\n"), 400),
    "websockets' 400 (origin twice)": (handshake(extra=b"Origin: https://a\r\nOrigin: https://b\r\n"), 400),
    "websockets' 405": (b"POST" + handshake()[3:], 405),
    "websockets' 426": (handshake(extra=b"Upgrade: websocket\r\n"), 426),
    "the parser's 400 (a body)": (handshake(extra=b"Content-Length: 5\r\n") + b"abcde", 400),
    "the parser's 431": (handshake(extra=b"X-Long: " + b"a" * 8200 + b"\r\n"), 431),
    "the parser's 414": (handshake("/ws/echo?" + "q" * 8200), 414),
}
"""Requests refused while the connection is handed over, and their status."""
BOUND = 32 * 1024 * 1024
"""What a refused client may get the gateway to read: the linger's 1 MiB, the sockets' buffers, and room."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    async with traceback_free_gateway(tmp_path_factory.mktemp("refusal-linger")) as process:
        yield process


@pytest.mark.parametrize("name", REFUSED)
async def test_a_refused_client_still_sending_is_closed_at_the_lingers_bound(
    gateway: GatewayProcess, name: str
) -> None:
    """The refusal arrives whole, then the connection closes once the linger read its bound, not later."""
    request, status = REFUSED[name]
    received, sent = await asyncio.to_thread(refused_then_flooding, gateway.port, request, up_to=16 * BOUND)
    assert status_of(received) == status
    assert sent < BOUND, f"the gateway read {sent:,} bytes after the refusal"


async def test_an_application_refusal_is_held_to_the_same_bound(gateway: GatewayProcess) -> None:
    """The application's refusal (no API at the path: 404), after the hand-over, for comparison."""
    received, sent = await asyncio.to_thread(
        refused_then_flooding, gateway.port, handshake("/nowhere"), up_to=16 * BOUND
    )
    assert status_of(received) == 404
    assert sent < BOUND


UVICORN_REFUSED = ("websockets' 400 (key)", "websockets' 400 (origin twice)", "websockets' 426")
"""The refusals of the WebSocket protocol itself (the head limits are the gateway's HTTP protocol's)."""


@pytest.mark.parametrize("http", ["httptools", "h11", GatewayH11Protocol], ids=["httptools", "h11", "gateway-h11"])
@pytest.mark.parametrize("name", UVICORN_REFUSED)
async def test_a_refusal_handed_over_by_uvicorns_http_protocols_is_held_to_the_bound(http: object, name: str) -> None:
    gateway = WebSocketGateway(not_found, config=build_config())
    request, status = REFUSED[name]
    with UvicornServer(gateway, ws=GatewayWebSocketProtocol, http=http) as server:  # type: ignore[arg-type]
        received, sent = await asyncio.to_thread(refused_then_flooding, server.port, request, up_to=16 * BOUND)
    assert status_of(received) == status
    assert sent < BOUND, f"the gateway read {sent:,} bytes after the refusal"
