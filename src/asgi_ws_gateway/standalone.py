"""The gateway with no application of the user's own: what ``asgi-ws-gateway run`` serves.

Besides the WebSocket APIs it answers, for plain HTTP:

* ``GET /healthz``: 200 ``{"status": "ok"}`` while the process serves (liveness);
* ``GET /readyz``: 200 ``{"status": "ready"}``, or 503 ``{"status": "draining"}`` once the gateway
  drains (readiness), as the management API's endpoints of the same names;
* a plain HTTP request on an API's path: 426 Upgrade Required with ``Upgrade: websocket``;
* anything else: 404.

These belong to the standalone gateway only: ``WebSocketGateway`` as a middleware passes every
HTTP request to the application it wraps, which may serve its own pages on the same paths.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ._types import Receive, Scope, Send
from .config import GatewayConfig, parse_config
from .errors import ConfigError
from .middleware import WebSocketGateway
from .plugins import load_plugins, plugins_from_env

CONFIG_ENV = "ASGI_WS_GATEWAY_CONFIG"
_NOT_FOUND = b"no WebSocket API at this path\n"
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
        await send({"type": "websocket.http.response.body", "body": _NOT_FOUND})
        return
    await _respond(send, 404, _NOT_FOUND)


class StandaloneApp:
    """What the standalone gateway wraps: health endpoints, 426 on API paths, 404 elsewhere."""

    def __init__(self) -> None:
        self.gateway: WebSocketGateway | None = None  # set once the gateway around this app exists

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        if scope["type"] != "http" or gateway is None:
            await not_found(scope, receive, send)
        elif scope["path"] == "/healthz":
            await _respond_json(send, 200, {"status": "ok"})
        elif scope["path"] == "/readyz":
            if gateway.draining:
                await _respond_json(send, 503, {"status": "draining"})
            else:
                await _respond_json(send, 200, {"status": "ready"})
        elif gateway.serves(scope["path"]):
            body = b"this is a WebSocket API: open it with a WebSocket handshake\n"
            await _respond(send, 426, body, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])
        else:
            await not_found(scope, receive, send)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                   content_type: bytes = b"text/plain; charset=utf-8") -> None:  # fmt: skip
    headers = [*(headers or []), (b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, document: dict[str, str]) -> None:
    await _respond(send, status, json.dumps(document).encode(), content_type=b"application/json")


def create_app(config: GatewayConfig | str | Path | None = None) -> WebSocketGateway:
    """The standalone gateway; ``config`` defaults to the file named by ``ASGI_WS_GATEWAY_CONFIG``.

    The modules ``run --plugin`` named (``ASGI_WS_GATEWAY_PLUGINS``) are imported first; those the
    configuration's ``plugins`` names, while it is loaded.
    """
    load_plugins(plugins_from_env(), field="--plugin")
    if config is None:
        config = os.environ[CONFIG_ENV]
    access = os.environ.get(ACCESS_LOG_ENV)
    if access == "off":
        logging.getLogger("asgi_ws_gateway.access").disabled = True  # whatever a --log-config says
    origin = config
    if access in ("text", "json"):  # the data only: the gateway checks the policies, building them once
        loaded = parse_config(config)
        config = loaded.model_copy(update={"telemetry": loaded.telemetry.model_copy(update={"access_log": access})})
    app = StandaloneApp()
    try:
        gateway = WebSocketGateway(app, config=config)
    except ConfigError as exc:
        raise ConfigError(
            exc.problems, exc.source or (str(origin) if isinstance(origin, str | Path) else None)
        ) from None
    app.gateway = gateway
    return gateway


__all__ = ["ACCESS_LOG_ENV", "CONFIG_ENV", "StandaloneApp", "create_app", "not_found"]
