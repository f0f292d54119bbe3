"""The gateway with no application of the user's own: what ``asgi-ws-gateway run`` serves.

Besides the WebSocket APIs it answers, for plain HTTP:

* ``GET /healthz``: 200 ``{"status": "ok"}`` while the process serves (liveness);
* ``GET /readyz``: 200 ``{"status": "ready"}``, or 503 ``{"status": "draining"}`` once the gateway
  drains, ``{"status": "full"}`` while it is at ``max_connections`` (readiness), as the management
  API's endpoints of the same names;
* another method on either (``POST /healthz``): 405 Method Not Allowed with ``Allow: GET, HEAD``;
* a plain HTTP request on an API's path: 426 Upgrade Required with ``Upgrade: websocket``;
* anything else: 404.

These belong to the standalone gateway only: ``WebSocketGateway`` as a middleware passes every
HTTP request to the application it wraps, which may serve its own pages on the same paths.

Under ``run``, the standalone gateway is its process's whole application, so it also settles the
process's garbage collector once started (:func:`settle_collector`, ``ASGI_WS_GATEWAY_GC``); a
middleware, or an app built in a process of its caller's, leaves the collector alone.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._types import Message, Receive, Scope, Send
from .config.gateway import GatewayConfig
from .config.parsing import parse_config
from .errors import ConfigError
from .plugins import load_plugins, plugins_from_env

if TYPE_CHECKING:
    from .middleware import WebSocketGateway

logger = logging.getLogger(__name__)

CONFIG_ENV = "ASGI_WS_GATEWAY_CONFIG"
_NOT_FOUND = b"no WebSocket API at this path\n"
ACCESS_LOG_ENV = "ASGI_WS_GATEWAY_ACCESS_LOG"
"""``text`` or ``json`` overrides the config's ``telemetry.access_log``; ``off`` silences the access log."""
GC_ENV = "ASGI_WS_GATEWAY_GC"
"""``tuned``: :func:`settle_collector` at start-up (``run`` sets it unless told otherwise); ``python`` or
unset: the collector as Python (or the process's application) sets it."""
YOUNG_THRESHOLD = 7000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def settle_collector() -> None:
    """Freeze what start-up made and collect the youngest generation less often.

    After start-up ~86,000 objects are tracked (the modules, the configuration, the telemetry SDK): a
    full collection walked them all, a ~50 ms pause of the event loop, and collections of the
    youngest generation every 700 allocations scanned the connections in progress again and again
    (docs/performance.md, "Garbage collection"). Frozen objects are never scanned, nor collected: a
    reference cycle among them (an API configuration replaced later) stays in memory. A threshold
    something else chose (not Python's 700) is kept.
    """
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    if young == 700:  # Python's default: nothing else chose a threshold
        gc.set_threshold(YOUNG_THRESHOLD, *older)
    logger.info("garbage collector settled: %d start-up objects frozen, thresholds %s (%s=python to leave it be)",
                gc.get_freeze_count(), gc.get_threshold(), GC_ENV)  # fmt: skip


def _collector_mode() -> str:
    return os.environ.get(GC_ENV, "").strip().lower() or "python"


def collector_problems() -> list[str]:
    """What is wrong with ``ASGI_WS_GATEWAY_GC`` (``run`` says it before serving: each worker would fail)."""
    mode = _collector_mode()
    return [] if mode in ("tuned", "python") else [f"{GC_ENV}: {_shown(mode)} is not supported (tuned or python)"]


ACCESS_LOG_VALUES = ("off", "text", "json")


def access_log_problems() -> list[str]:
    """What is wrong with ``ASGI_WS_GATEWAY_ACCESS_LOG``: before, any other value (``JSON``, ``yes``,
    ``false``) was ignored without a word, the access log staying on in the config's format."""
    access = os.environ.get(ACCESS_LOG_ENV)
    if not access or access in ACCESS_LOG_VALUES:
        return []
    return [f"{ACCESS_LOG_ENV}: {_shown(access)} is not one of off, text or json (exactly, in lower case)"]


def _shown(value: str) -> str:
    """An environment variable's value in a problem: quoted, at most 40 characters of it."""
    return repr(value[:40]) + ("..." if len(value) > 40 else "")


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
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
        await send({"type": "websocket.http.response.body", "body": _NOT_FOUND})
        return
    await _respond(send, 404, _NOT_FOUND)


class StandaloneApp:
    """What the standalone gateway wraps: health endpoints (GET and HEAD), 426 on API paths, 404 elsewhere."""

    standalone = True
    """Read by ``WebSocketGateway``: the standalone variables (``startup.STANDALONE_VARIABLES``) are this app's."""

    def __init__(self, *, settle: bool = False) -> None:
        self.gateway: WebSocketGateway | None = None  # set once the gateway around this app exists
        self.settle = settle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        if scope["type"] == "lifespan" and self.settle:
            await not_found(scope, receive, self._settle_when_started(send))
        elif scope["type"] != "http" or gateway is None:
            await not_found(scope, receive, send)
        elif scope["path"] in ("/healthz", "/readyz") and scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed: GET or HEAD\n", [(b"allow", b"GET, HEAD")])
        elif scope["path"] == "/healthz":
            await _respond_json(send, 200, {"status": "ok"})
        elif scope["path"] == "/readyz":
            if gateway.draining:
                await _respond_json(send, 503, {"status": "draining"})
            elif gateway.full:
                await _respond_json(send, 503, {"status": "full"})
            else:
                await _respond_json(send, 200, {"status": "ready"})
        elif gateway.serves(scope["path"]):
            body = b"this is a WebSocket API: open it with a WebSocket handshake\n"
            await _respond(send, 426, body, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])
        else:
            await not_found(scope, receive, send)

    def _settle_when_started(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                settle_collector()  # after start-up's objects (the gateway's, the telemetry's) exist
            await send(message)

        return sending


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
    # The gateway (the relay, telemetry, the upstream clients) is imported here: run reads this module's checks
    # of its variables in its supervisor too, which serves no connection with --workers N.
    from .middleware import WebSocketGateway

    load_plugins(plugins_from_env(), field="--plugin")
    if config is None:
        config = os.environ[CONFIG_ENV]
    problems = access_log_problems()
    if problems:
        raise ConfigError(problems, "environment")
    access = os.environ.get(ACCESS_LOG_ENV)
    if access == "off":
        logging.getLogger("asgi_ws_gateway.access").disabled = True  # whatever a --log-config says
    origin = config
    if access in ("text", "json"):  # the data only: the gateway checks the policies, building them once
        loaded = parse_config(config)
        config = loaded.model_copy(update={"telemetry": loaded.telemetry.model_copy(update={"access_log": access})})
    problems = collector_problems()
    if problems:
        raise ConfigError(problems, "environment")
    app = StandaloneApp(settle=_collector_mode() == "tuned")
    try:
        gateway = WebSocketGateway(app, config=config)
    except ConfigError as exc:
        raise ConfigError(
            exc.problems, exc.source or (str(origin) if isinstance(origin, str | Path) else None)
        ) from None
    app.gateway = gateway
    return gateway


__all__ = [
    "ACCESS_LOG_ENV",
    "ACCESS_LOG_VALUES",
    "CONFIG_ENV",
    "GC_ENV",
    "StandaloneApp",
    "access_log_problems",
    "collector_problems",
    "create_app",
    "not_found",
    "settle_collector",
]
