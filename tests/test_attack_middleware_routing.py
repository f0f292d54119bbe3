"""A policy-protected API behind FastAPI's own routes at the same path, reached every way a client can spell it.

An attack pass on the middleware mode: ``app.add_middleware(WebSocketGateway, ...)`` in FastAPI whose
routers define a WebSocket route at the API's own path, and the gateway inside a FastAPI sub-app
mounted at a prefix (a fixed one, a path parameter). Every spelling a client or a router may make of
the API's path (extra or trailing ``/``, case, ``%2F``, ``;params``, dot segments, control characters,
the prefix spelled otherwise) is refused or is the API's with its policies; the app's own route at
the API's path is never reached. Held; kept as a regression test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_ws_gateway import WebSocketGateway
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import upgrade_status
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

DENY_LOOPBACK = [{"ip-filter": {"deny": ["127.0.0.0/8", "::1/128"]}}]
SPELLINGS = [
    "//ws/x", "/ws/x/", "/WS/x", "/ws/X", "/ws%2Fx", "/ws/x%2F", "/%2Fws/x", "/ws//x", "/ws/./x", "/./ws/x",
    "/ws/y/../x", "/ws/x%0A", "/ws/x%0D", "/ws/x%00", "/ws/x%09", "/ws/x%23", "/ws/x%3F", "/ws/x#",
    "http://other/ws/x", "/ws/x;a=b", "/ws;a=b/x", "/ws/%78", "/%77s/x", "/ws/x%20",
    "/ws/rooms/a/", "//ws/rooms/a", "/ws/rooms/a%2Fb", "/ws/rooms/%2e%2e", "/ws/rooms//a", "/ws/rooms/a;b",
]  # fmt: skip
"""Not the API's path as the gateway routes it; 400, or the API's own refusal, or no route of the app's."""


def _config(upstream: UpstreamServer, ws: WSImpl) -> dict[str, Any]:
    passthrough = {"passthrough": True} if ws == PASSTHROUGH else {}
    return {
        "apis": [
            api_entry(upstream, name="x", path="/ws/x", policies=DENY_LOOPBACK, **passthrough),
            api_entry(upstream, name="rooms", path="/ws/rooms/{room}", policies=DENY_LOOPBACK, **passthrough),
        ]
    }


def _own_routes(reached: list[str]) -> APIRouter:
    router = APIRouter()

    async def own(websocket: WebSocket) -> None:
        reached.append(websocket.scope["path"])
        await websocket.accept()
        await websocket.close()

    for path in ("/ws/x", "/ws/rooms/{room}", "/open"):
        router.add_api_websocket_route(path, own)
    return router


def _added(upstream: UpstreamServer, ws: WSImpl, reached: list[str]) -> tuple[ASGIApp, str]:
    app = FastAPI()
    app.include_router(_own_routes(reached))
    app.add_middleware(WebSocketGateway, config=_config(upstream, ws))
    return app, ""


def _mounted(prefix: str) -> Callable[[UpstreamServer, WSImpl, list[str]], tuple[ASGIApp, str]]:
    def make(upstream: UpstreamServer, ws: WSImpl, reached: list[str]) -> tuple[ASGIApp, str]:
        sub = FastAPI()
        sub.include_router(_own_routes(reached))
        sub.add_middleware(WebSocketGateway, config=_config(upstream, ws))
        app = FastAPI()
        app.mount(prefix, sub)
        return app, prefix.replace("{tenant}", "acme")

    return make


SETUPS = {"add-middleware": _added, "mounted": _mounted("/sub"), "mounted-param": _mounted("/{tenant}")}


@pytest.mark.parametrize("setup", list(SETUPS), ids=list(SETUPS))
@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto", PASSTHROUGH])
async def test_the_apps_own_route_at_an_apis_path_is_never_reached(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, setup: str
) -> None:
    reached: list[str] = []
    app, prefix = SETUPS[setup](upstream, ws, reached)
    server = uvicorn_server(app, ws=ws)
    for target in ("/ws/x", "/ws/rooms/lobby"):
        assert await upgrade_status(server.port, prefix + target) == 403, target  # the API's policy
    for spelling in SPELLINGS:
        status = await upgrade_status(server.port, prefix + spelling)
        assert status in (400, 403), spelling
    assert reached == []
    assert await upgrade_status(server.port, prefix + "/open") == 101


async def test_a_path_rewritten_in_front_without_its_raw_path_is_refused(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """A middleware in front that rewrites ``path`` and leaves ``raw_path``: routed by neither reading alone."""
    reached: list[str] = []
    inner, _ = _added(upstream, "websockets-sansio", reached)

    async def rewrite(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith("/legacy/"):
            scope = {**scope, "path": "/ws/" + scope["path"].removeprefix("/legacy/")}
        await inner(scope, receive, send)

    server = uvicorn_server(rewrite)
    assert await upgrade_status(server.port, "/legacy/x") == 400
    assert reached == []


async def test_a_mount_that_takes_the_root_off_the_path_alone(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Starlette's ``Mount`` before 0.33 passed ``path`` less its prefix and ``raw_path`` as sent: every
    handshake to an API under it was a 400 (its raw path named no API, its decoded one did). Now the raw
    path less the root path is read; spellings of the API's path are refused as before."""
    reached: list[str] = []
    inner, _ = _added(upstream, "websockets-sansio", reached)

    async def old_mount(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith("/sub/"):
            scope = {**scope, "root_path": "/sub", "path": scope["path"].removeprefix("/sub")}
        await inner(scope, receive, send)

    server = uvicorn_server(old_mount)
    for target in ("/sub/ws/x", "/sub/ws/rooms/lobby"):
        assert await upgrade_status(server.port, target) == 403, target
    for spelling in ("/sub/ws%2Fx", "/sub//ws/x", "/sub/WS/x", "/sub/ws/x%0A", "/sub/ws/rooms/a%2Fb"):
        assert await upgrade_status(server.port, spelling) == 400, spelling
    assert reached == []
    assert await upgrade_status(server.port, "/sub/open") == 101
