"""An API's path as the application's router tidies it: refused, not served by the app's own route.

The gateway routes on the path as sent, so ``//ws/chat``, ``/ws/chat/``, ``/WS/CHAT``,
``http://other/ws/chat`` or ``/ws/chat#x`` were no API's to it and went to the wrapped application;
routers that tidy the path served them at their own route for the API's path (the service the API
fronts, here the same app as the API's in-process upstream) with none of the API's policies. Found
by an attack pass: Litestar (101 for ``//ws/chat``, ``/ws/chat/``, ``/ws/chat%2F``…), Channels
(``//ws/chat/``, a ``re_path`` inside ``http://other/…``), path parameters too. The apps below route
the way those routers do (Litestar, Channels' ``URLRouter``, BlackSheep, a router that re-reads the
path as a URL), and Starlette's own; each behind real uvicorn, its protocols and the gateway's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from asgi_ws_gateway.standalone import not_found
from support.apps import ASGIApp, Receive, Scope, Send
from support.gateway import PASSTHROUGH
from support.rawhttp import upgrade_status
from support.servers import UvicornFactory, WSImpl

KEY_CHECK = [{"check-header": {"header": "x-key", "values": ["secret"], "failed_status": 401}}]


class RoutesLike:
    """An app whose router reads a WebSocket's path as ``reading`` does, then takes the first route
    whose pattern ``search``-es it (anchor a pattern to match it whole); anything else is a 404."""

    def __init__(self, reading: Callable[[Scope], str], routes: dict[str, str], flags: int = 0) -> None:
        self.reading = reading
        self.routes = {name: re.compile(pattern, flags) for name, pattern in routes.items()}
        self.reached: list[str] = []

    def route(self, scope: Scope) -> str | None:
        path = self.reading(scope)
        return next((name for name, pattern in self.routes.items() if pattern.search(path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self.route(scope) if scope["type"] == "websocket" else None
        if name is None:
            await not_found(scope, receive, send)
            return
        await receive()  # websocket.connect
        self.reached.append(name)
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})


def _litestar() -> RoutesLike:
    """Litestar's ``normalize_path``: leading and trailing '/' stripped, runs of '/' collapsed."""
    return RoutesLike(
        lambda scope: "/" + re.sub("/+", "/", scope["path"].strip("/")),
        {"chat": r"\A/ws/chat\Z", "rooms": r"\A/ws/rooms/[^/]+\Z", "own": r"\A/ws/chat2\Z", "static": r"\A/static/x\Z"},
    )


def _channels() -> RoutesLike:
    """Channels' ``URLRouter``: ``path.lstrip("/")``; ``path("ws/chat/")`` whole, ``re_path`` searched."""
    return RoutesLike(
        lambda scope: scope["path"].lstrip("/"),
        {"chat": r"\Aws/chat/\Z", "rooms": r"ws/rooms/(?P<room>\w+)/", "own": r"\Aws/chat2/\Z"},
    )


def _blacksheep() -> RoutesLike:
    """BlackSheep: the raw path against ``^pattern/?$``, the pattern's trailing '/' dropped, case ignored."""
    return RoutesLike(
        lambda scope: scope["raw_path"].decode("latin-1"),
        {"chat": r"\A/ws/chat/?\Z", "feed": r"\A/ws/feed/?\Z", "own": r"\A/ws/chat2/?\Z"},
        re.IGNORECASE,
    )


def _url_path() -> RoutesLike:
    """A router that re-reads the decoded path as a URL (``urlsplit``): a ``#`` starts a fragment, a ``?`` a query."""
    return RoutesLike(lambda scope: urlsplit(scope["path"]).path, {"chat": r"\A/ws/chat\Z", "own": r"\A/ws/chat2\Z"})


class StarletteApp:
    def __init__(self) -> None:
        self.reached: list[str] = []

        async def own_route(websocket: WebSocket) -> None:
            self.reached.append(websocket.scope["path"])
            await websocket.accept()
            await websocket.close()

        paths = ("/ws/chat", "/ws/chat2", "/static//x")
        self.app = Starlette(routes=[WebSocketRoute(path, own_route) for path in paths])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@dataclass
class Case:
    make_app: Callable[[], RoutesLike | StarletteApp]
    apis: dict[str, str]
    """The API paths by route name: each API fronts the app's route of that name."""
    tidied: list[str]
    """Targets the app's router serves at an API's route, which the gateway must refuse (400)."""
    own: list[str]
    """Targets at the app's own routes, no API's even tidied: the app's (101)."""


CASES = {
    "litestar": Case(
        _litestar,
        {"chat": "/ws/chat", "rooms": "/ws/rooms/{room}"},
        ["//ws/chat", "/ws//chat", "/ws/chat/", "/ws/chat///", "/ws/chat%2F", "/%2Fws/chat", "//ws/rooms/lobby",
         "/ws/rooms/lobby/", "/ws//rooms/lobby"],
        ["/ws/chat2", "/static//x", "//ws/chat2/"],
    ),
    "channels": Case(
        _channels,
        {"chat": "/ws/chat/", "rooms": "/ws/rooms/{room}/"},
        ["//ws/chat/", "///ws/chat/", "/%2Fws/chat/", "//ws/rooms/lobby/", "http://other/ws/rooms/lobby/",
         "ws/chat/"],
        ["/ws/chat2/", "//ws/chat2/"],
    ),
    "blacksheep": Case(
        _blacksheep,
        {"chat": "/ws/chat", "feed": "/ws/feed/"},
        ["/WS/CHAT", "/Ws/Chat/", "/ws/chat/", "/ws/feed", "/WS/FEED/"],
        ["/ws/chat2", "/WS/Chat2/"],
    ),
    "url-path": Case(
        _url_path,
        {"chat": "/ws/chat"},
        ["/ws/chat#x", "/ws/chat#/x", "/ws/chat%23x", "/ws/chat%3Fx"],
        ["/ws/chat2", "/ws/chat2#x"],
    ),
    "starlette": Case(
        StarletteApp,
        {"chat": "/ws/chat"},
        ["//ws/chat", "/ws/chat/", "/WS/chat", "http://other/ws/chat", "/ws/chat#x", "/ws/./chat", "/ws/x/../chat"],
        ["/ws/chat2", "/static//x"],
    ),
}  # fmt: skip

GATEWAY_WS: WSImpl = PASSTHROUGH
STACKS: dict[str, tuple[WSImpl, Any]] = {
    "sansio-httptools": ("websockets-sansio", "httptools"),
    "wsproto-h11": ("wsproto", "h11"),
    "gateway-httptools": (GATEWAY_WS, GatewayHTTPProtocol),
    "gateway-h11": (GATEWAY_WS, GatewayH11Protocol),
}


def _scope_for(target: str) -> Scope:
    """The scope uvicorn makes of a target: the path decoded, the raw path as sent."""
    return {"type": "websocket", "path": unquote(target), "raw_path": target.encode(), "root_path": "",
            "scheme": "ws", "server": ("gw", 80), "query_string": b"", "headers": [(b"host", b"gw")]}  # fmt: skip


@pytest.mark.parametrize("name", [name for name in CASES if name != "starlette"])
def test_each_tidied_target_is_the_apps_route_at_an_apis_path(name: str) -> None:
    """The models are faithful: without the gateway, every such target reaches an API's route."""
    case = CASES[name]
    app = case.make_app()
    assert isinstance(app, RoutesLike)
    for target in case.tidied:
        assert app.route(_scope_for(target)) in case.apis, target
    for target in case.own:
        assert app.route(_scope_for(target)) not in (None, *case.apis), target


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("name", list(CASES))
async def test_an_apis_path_as_the_app_tidies_it_is_refused(
    uvicorn_server: UvicornFactory, name: str, stack: str
) -> None:
    case = CASES[name]
    app = case.make_app()
    apis = [
        {"name": route, "path": path, "upstreams": [{"app": app}], "policies": KEY_CHECK}
        for route, path in case.apis.items()
    ]
    ws, http = STACKS[stack]
    gateway: ASGIApp = WebSocketGateway(app, config={"apis": apis})
    server = uvicorn_server(gateway, ws=ws, http=http)
    for path in case.apis.values():  # the control: the API's own path runs its policies
        assert await upgrade_status(server.port, path.replace("{room}", "lobby")) == 401, path
    for target in case.tidied:
        assert await upgrade_status(server.port, target) == 400, target
    assert app.reached == []
    for target in case.own:
        assert await upgrade_status(server.port, target) == 101, target
    assert len(app.reached) == len(case.own)
