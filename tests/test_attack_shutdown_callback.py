"""An application's ``asgi_ws_gateway.on_shutdown`` that raises ends no one's shutdown but its own connection's.

The gateway's WebSocket protocol calls the callable an accept carried when it sends the client its 1012 at
shutdown, from uvicorn's loop over its connections: one that raised ended the server (its ``run`` raised),
every client cut off without a close frame. Now it is logged at ERROR and each client still gets its 1012.
A real uvicorn with the gateway's protocol; real clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect

from asgi_ws_gateway.passthrough.asgi_extension import ON_SHUTDOWN
from asgi_ws_gateway.server import GatewayWebSocketProtocol
from support.servers import UvicornServer


def _failing(disconnect: dict[str, Any]) -> None:
    raise RuntimeError("the application's bug")


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if scope["path"] == "/failing":
        accept[ON_SHUTDOWN] = _failing
    await send(accept)
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def _close_code(client: Any) -> int | None:
    try:
        await asyncio.wait_for(client.recv(), 10)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    return -1


async def test_a_failing_on_shutdown_is_logged_and_every_client_gets_its_1012(caplog: pytest.LogCaptureFixture) -> None:
    ws: Any = GatewayWebSocketProtocol
    server = UvicornServer(_app, ws=ws, lifespan="off", log_level="info")
    with caplog.at_level(logging.INFO):
        server.start()
        try:
            clients = [await connect(server.url(path)) for path in ("/a", "/failing", "/b")]
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            codes = [await _close_code(client) for client in clients]
            await stopping
        finally:
            server.stop()
        for client in clients:
            await client.close()
    assert codes == [1012, 1012, 1012]
    assert server._error is None, server._error
    failed = [r for r in caplog.records if "on_shutdown failed" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in failed] == [(logging.ERROR, True)]
