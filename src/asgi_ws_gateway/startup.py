"""A gateway whose configuration is invalid, built by Starlette: it fails start-up instead of raising.

``app.add_middleware(WebSocketGateway, config="gateway.yaml")`` builds the middleware lazily, on
the first ASGI call (the lifespan start-up). An exception there is taken by uvicorn's default
``lifespan="auto"`` for "lifespan unsupported"; the server starts anyway and answers every request
with 500. Answering ``lifespan.startup`` with ``lifespan.startup.failed`` instead makes uvicorn
print the problems and exit. Without a lifespan (``--lifespan off``) there is nothing to fail: every
request is refused (HTTP 500, WebSocket 500 or close 1011) and the problems are logged at ERROR.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from ._types import Receive, Scope, Send
from .errors import ConfigError

logger = logging.getLogger("asgi_ws_gateway.middleware")

_BUILDERS = frozenset({"build_middleware_stack"})  # Starlette's and FastAPI's


def built_by_starlette() -> bool:
    """Whether the gateway being constructed was called from Starlette's (or FastAPI's) middleware build.

    The one piece of stack reading in the gateway: the caller of ``WebSocketGateway.__init__`` is
    two frames up. Called directly, the constructor raises; built by Starlette, it must not.
    """
    # 0: this function, 1: WebSocketGateway.__init__, 2: its caller (type.__call__ has no frame).
    return sys._getframe(2).f_code.co_name in _BUILDERS


_VARIABLE_PROBLEMS: list[str] = []


def report_variable_problem(problem: str) -> None:
    """A variable read when a module was imported (the server protocols' limits) holds a wrong value.

    Raising at import would break every importer, down to ``asgi-ws-gateway check``; instead the
    value's default is used, ``run`` refuses to serve, and a gateway fails its lifespan start-up.
    """
    if problem not in _VARIABLE_PROBLEMS:
        _VARIABLE_PROBLEMS.append(problem)


def variable_problems() -> list[str]:
    """What :func:`report_variable_problem` was told, in order."""
    return list(_VARIABLE_PROBLEMS)


STANDALONE_VARIABLES = {
    "ASGI_WS_GATEWAY_CONFIG": "the config= it is given",
    "ASGI_WS_GATEWAY_ACCESS_LOG": "telemetry.access_log in its configuration (off: disable the logger "
    "asgi_ws_gateway.access)",
    "ASGI_WS_GATEWAY_GC": "asgi_ws_gateway.standalone.settle_collector(), called at the end of the application's "
    "start-up",
    "ASGI_WS_GATEWAY_PLUGINS": "the configuration's plugins, or modules the application imports first",
}
"""The variables only the standalone gateway reads (``run``'s workers, ``asgi_ws_gateway.standalone:create_app``),
each with what does its work for a ``WebSocketGateway`` in an application of the user's."""
MANAGEMENT_VARIABLES = {
    "ASGI_WS_GATEWAY_MANAGEMENT_PATH": ("path", "path="),
    "ASGI_WS_GATEWAY_MANAGEMENT_PORT": ("port", "port="),
    "ASGI_WS_GATEWAY_STATE": ("store", "store=FileStore(path)"),
    "ASGI_WS_GATEWAY_REDIS_PREFIX": ("redis_prefix", "redis_prefix="),
}
"""As :data:`STANDALONE_VARIABLES`, for ``GatewayManagement`` (``run --management``'s workers,
``asgi_ws_gateway.management.standalone:create_app``): each with the argument that does its work, warned of
only when the application left that argument at its default; ``ASGI_WS_GATEWAY_REDIS`` and ``..._ADMIN_TOKEN``
are the management commands' too, often exported shell-wide, and not listed."""


def unread_variable_warnings(
    component: str = "WebSocketGateway",
    variables: Mapping[str, str] = STANDALONE_VARIABLES,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """The ``variables`` set where ``component`` is built by an application of the user's: nothing reads
    them there, and ``ASGI_WS_GATEWAY_ACCESS_LOG=off`` (say) was ignored without a word."""
    return [
        f"{name} is set, but only asgi-ws-gateway run reads it (and its create_app factories): this {component} "
        f"ignores it (use {instead})"
        for name, instead in variables.items()
        if environ.get(name)
    ]


class StartupFailure:
    """An ASGI app that fails the lifespan start-up with ``error``'s message and refuses requests."""

    def __init__(self, error: ConfigError) -> None:
        self.error = error
        self._logged = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": str(self.error)})
                raise self.error  # as Starlette's router does: servers expect the app to end with the error
            else:
                await send({"type": "lifespan.shutdown.complete"})
            return
        if not self._logged:  # uvicorn printed the error at start-up, unless there was no lifespan
            self._logged = True
            logger.error("every request is refused: %s", self.error)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await send({"type": "websocket.http.response.start", "status": 500, "headers": []})
                await send({"type": "websocket.http.response.body", "body": b""})
            else:
                await send({"type": "websocket.close", "code": 1011})
            return
        body = b"the gateway's configuration is invalid\n"
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = [
    "MANAGEMENT_VARIABLES",
    "STANDALONE_VARIABLES",
    "StartupFailure",
    "built_by_starlette",
    "report_variable_problem",
    "unread_variable_warnings",
    "variable_problems",
]
