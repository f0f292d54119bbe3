"""The relay's wait for a client's close frame is the API's ``close_timeout``, not uvicorn's 10 s.

An attack pass closed relayed connections (``passthrough: false``, ``close_timeout: 1``) to a client
that read the close frame and never answered: the splice closed the TCP connection 1.0 s after its
close frame, the relay 10.0 s after (uvicorn's protocol waits a fixed 10 s), every such socket held
ten times as long as the API said. The gateway's protocol now takes the API's ``close_timeout`` from
the ``websocket.accept`` the gateway sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import handshake
from support.servers import UvicornFactory

CLOSE_TIMEOUT = 0.5
UVICORNS_WAIT = 10.0
BOUND = 7.0  # far above close_timeout, far below uvicorn's own wait


@pytest.fixture
async def closing_upstream() -> AsyncIterator[str]:
    """An upstream that closes (1000) as soon as the gateway connects: the gateway then closes the client."""

    async def handler(connection: ServerConnection) -> None:
        await connection.close(1000, "done")

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@pytest.mark.parametrize("policies", [False, True], ids=["relay", "relay-with-message-events"])
async def test_a_client_that_never_answers_the_close_is_let_go_at_close_timeout(
    uvicorn_server: UvicornFactory, closing_upstream: str, policies: bool
) -> None:
    api = api_entry(closing_upstream, passthrough=False, close_timeout=CLOSE_TIMEOUT, ping_interval=None)
    config = {"apis": [api], "telemetry": {"message_events": 1.0}} if policies else {"apis": [api]}
    server = uvicorn_server(WebSocketGateway(not_found, config=config), ws=PASSTHROUGH)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(handshake("/ws/echo"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        received = b""
        async with asyncio.timeout(BOUND):  # reads everything, answers nothing: EOF is the gateway's close
            while chunk := await reader.read(65536):
                received += chunk
        assert received[:1] == b"\x88", received[:20]  # the close frame came first
    finally:
        writer.close()
