"""The gateway with no application of the user's own: what ``asgi-ws-gateway run`` serves."""

from __future__ import annotations

import os
from pathlib import Path

from ._types import Receive, Scope, Send
from .config import GatewayConfig
from .middleware import WebSocketGateway
from .plugins import load_plugins, plugins_from_env

CONFIG_ENV = "ASGI_WS_GATEWAY_CONFIG"


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers what the gateway does not own: 404 for HTTP and WebSocket, lifespan accepted."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no WebSocket API at this path\n"})
        return
    body = b"no WebSocket API at this path\n"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(config: GatewayConfig | str | Path | None = None) -> WebSocketGateway:
    """The standalone gateway; ``config`` defaults to the file named by ``ASGI_WS_GATEWAY_CONFIG``.

    The modules ``run --plugin`` named (``ASGI_WS_GATEWAY_PLUGINS``) are imported first; those the
    configuration's ``plugins`` names, while it is loaded.
    """
    load_plugins(plugins_from_env(), field="--plugin")
    if config is None:
        config = os.environ[CONFIG_ENV]
    return WebSocketGateway(not_found, config=config)


__all__ = ["CONFIG_ENV", "create_app", "not_found"]
