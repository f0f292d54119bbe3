"""An API's path reached under a root path: the application's route there must not take it unchecked.

Starlette routes on the path less the scope's ``root_path`` (``get_route_path``); uvicorn's
``--root-path`` puts the root before the path, FastAPI's ``root_path=`` sets it, and a ``Mount``
passes its prefix down as one. The gateway routed on the whole path, so ``/api/ws/chat`` under
``root_path="/api"`` was no API's path to it and went to the application, whose own route at
``/ws/chat`` took the connection with none of the API's policies (found by an attack pass, 3 of 3
set-ups). Now the gateway reads the path as the application does, and still owns the whole path
when an API names it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.routing import Router, matched_segments, resolve_scope, route_target
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import upgrade_status
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

DENY_LOOPBACK = [{"ip-filter": {"deny": ["127.0.0.0/8", "::1/128"]}}]


def _config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "apis": [
            api_entry(upstream, name="chat", path="/ws/chat", policies=DENY_LOOPBACK),
            api_entry(upstream, name="rooms", path="/secure/{room}", policies=DENY_LOOPBACK),
        ]
    }


Reached = list[str]


def _routes(reached: Reached) -> list[WebSocketRoute]:
    async def own_route(websocket: WebSocket) -> None:
        reached.append(websocket.scope["path"])
        await websocket.accept()
        await websocket.close()

    return [WebSocketRoute(path, own_route) for path in ("/ws/chat", "/secure/{room}", "/open")]


def _under_root(app: ASGIApp, root: str) -> ASGIApp:
    """What FastAPI's (deprecated) ``root_path=`` does: the root path set in every scope."""

    async def rooted(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "root_path": root} if scope["type"] != "lifespan" else scope, receive, send)

    return rooted


def _root_set(upstream: UpstreamServer, reached: Reached) -> tuple[ASGIApp, dict[str, Any], str]:
    app = Starlette(routes=_routes(reached))
    app.add_middleware(WebSocketGateway, config=_config(upstream))
    return _under_root(app, "/api"), {}, "/api"


def _mounted(upstream: UpstreamServer, reached: Reached) -> tuple[ASGIApp, dict[str, Any], str]:
    sub = WebSocketGateway(Starlette(routes=_routes(reached)), config=_config(upstream))
    return Starlette(routes=[Mount("/v1", app=sub)]), {}, "/v1"


def _server_root(upstream: UpstreamServer, reached: Reached) -> tuple[ASGIApp, dict[str, Any], str]:
    app = WebSocketGateway(Starlette(routes=_routes(reached)), config=_config(upstream))
    return app, {"root_path": "/api"}, ""  # clients send the path alone; uvicorn puts /api before it


SetUp = Callable[[UpstreamServer, Reached], tuple[ASGIApp, dict[str, Any], str]]


@pytest.mark.parametrize(
    "set_up", [_root_set, _mounted, _server_root], ids=["root-path-set", "mount", "uvicorn-root-path"]
)
@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto", PASSTHROUGH])
async def test_an_apis_path_under_a_root_path_runs_its_policies(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, set_up: SetUp
) -> None:
    reached: Reached = []
    app, server_config, prefix = set_up(upstream, reached)
    server = uvicorn_server(app, ws=ws, **server_config)
    for target in (f"{prefix}/ws/chat", f"{prefix}/secure/lobby"):
        assert await upgrade_status(server.port, target) == 403, target
    # (a final newline: Starlette's Mount then sets the root path "/v1/", which the gateway read whole)
    for target in (f"{prefix}/ws%2Fchat", f"{prefix}/secure%2Fx", f"{prefix}/ws/chat%0A", f"{prefix}/secure/x%0A"):
        assert await upgrade_status(server.port, target) == 400, target
    assert reached == []
    # The application's own path under the root path is still its own.
    assert await upgrade_status(server.port, f"{prefix}/open") == 101
    assert len(reached) == 1 and reached[0].endswith("/open")


async def test_the_whole_path_stays_an_apis_when_it_names_it(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """An API written with the root path in it (``/api/ws/full``) is still the gateway's."""
    reached: Reached = []
    config = {"apis": [api_entry(upstream, name="full", path="/api/ws/full", policies=DENY_LOOPBACK)]}
    app = Starlette(routes=_routes(reached))
    app.add_middleware(WebSocketGateway, config=config)
    server = uvicorn_server(_under_root(app, "/api"))
    assert await upgrade_status(server.port, "/api/ws/full") == 403
    assert reached == []


@pytest.mark.parametrize(
    ("path", "raw_path", "root", "expected"),
    [
        ("/api/ws/chat", b"/api/ws/chat", "/api", ("/ws/chat", b"/ws/chat")),
        ("/api", b"/api", "/api", ("", b"")),
        ("/apix/ws", b"/apix/ws", "/api", ("/apix/ws", b"/apix/ws")),  # not under /api
        ("/ws/chat", b"/ws/chat", "/api", ("/ws/chat", b"/ws/chat")),  # the root path not sent
        ("/v1/ws/chat", b"/v%31/ws/chat", "/v1", ("/v1/ws/chat"[3:], None)),  # the root spelled otherwise
        ("/api/ws%2Fchat", None, "/api", ("/ws%2Fchat", None)),
        ("/ws/chat", b"/ws/chat", "", ("/ws/chat", b"/ws/chat")),
    ],
)
def test_route_target_reads_the_path_as_starlette(
    path: str, raw_path: bytes | None, root: str, expected: tuple[str, bytes | None]
) -> None:
    from starlette._utils import get_route_path

    assert route_target(path, raw_path, root) == expected
    assert route_target(path, raw_path, root)[0] == get_route_path({"path": path, "root_path": root})


@pytest.mark.parametrize(
    ("path", "raw_path", "root", "pattern", "expected"),
    [
        ("/api/ws/chat", b"/api/ws/chat", "/api", "/ws/chat", ["ws", "chat"]),
        ("/api/ws/full", b"/api/ws/full", "/api", "/api/ws/full", ["api", "ws", "full"]),  # the API names the root
        ("/api/ws/rooms/a b", b"/api/ws/rooms/a%20b", "/api", "/ws/rooms/{room}", ["ws", "rooms", "a b"]),
        ("/v1/ws/chat", b"/v%31/ws/chat", "/v1", "/ws/chat", ["ws", "chat"]),  # the root spelled otherwise
        ("/ws/chat", b"/ws/chat", "", "/ws/chat", ["ws", "chat"]),
        # Starlette's Mount("/v1") for a path ending in a newline: the parameter is then refused (a control)
        ("/v1/ws/rooms/a\n", b"/v1/ws/rooms/a%0A", "/v1/", "/ws/rooms/{room}", ["ws", "rooms", "a\n"]),
    ],
)
def test_matched_segments_are_the_reading_the_router_matched(
    path: str, raw_path: bytes, root: str, pattern: str, expected: list[str]
) -> None:
    """What an in-process upstream without a ``path`` is sent: the path its API's policies judged."""
    scope = {"type": "websocket", "path": path, "raw_path": raw_path, "root_path": root}
    resolved, disguised = resolve_scope(Router([(pattern, "api")]), scope)
    assert resolved is not None and resolved[0] == "api" and disguised is None
    assert matched_segments(scope, pattern) == expected
