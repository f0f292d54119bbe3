"""The gateway with no application of the user's own: what ``asgi-ws-gateway run`` serves."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ._types import Receive, Scope, Send
from .config import GatewayConfig, load_config
from .middleware import WebSocketGateway

CONFIG_ENV = "ASGI_WS_GATEWAY_CONFIG"
ACCESS_LOG_ENV = "ASGI_WS_GATEWAY_ACCESS_LOG"
"""``text`` or ``json`` overrides the config's ``telemetry.access_log``; ``off`` silences the access log."""


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
    """The standalone gateway; ``config`` defaults to the file named by ``ASGI_WS_GATEWAY_CONFIG``."""
    if config is None:
        config = os.environ[CONFIG_ENV]
    access = os.environ.get(ACCESS_LOG_ENV)
    if access == "off":
        logging.getLogger("asgi_ws_gateway.access").disabled = True  # whatever a --log-config says
    elif access in ("text", "json"):
        loaded = load_config(config)
        config = loaded.model_copy(update={"telemetry": loaded.telemetry.model_copy(update={"access_log": access})})
    return WebSocketGateway(not_found, config=config)


__all__ = ["ACCESS_LOG_ENV", "CONFIG_ENV", "create_app", "not_found"]
