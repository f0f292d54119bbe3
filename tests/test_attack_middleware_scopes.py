"""Scopes as other servers and the apps around the gateway make them, under real uvicorn.

Each test puts a scope edit between uvicorn and the gateway (what another server, or a middleware in
front, hands it) and asserts the refusal a client gets, or that it is served: a denial is always a
refusal before any accept, and no scope value is a 500 with a traceback. Found by an attack pass:
``extensions: None``, a ``raw_path`` that is a ``str`` and a ``subprotocols`` list of bytes (without
the header) were 500s with a traceback, the first two before the API's policies ran.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import ASGIApp, Receive, Scope, Send
from asgi_ws_gateway.routing import route_target
from support.clients import connect
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import upgrade_status
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

MODES = ["websockets-sansio", "wsproto", PASSTHROUGH]
Edit = Callable[[dict[str, Any]], None]


def _without_host(scope: dict[str, Any]) -> None:
    """An HTTP/2 extended CONNECT as a server may pass it on: ``:authority``, no ``Host``."""
    scope["http_version"] = "2"
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b":authority", b"gw")]


REFUSED_AS_BAD: dict[str, Edit] = {
    "subprotocols-bytes": lambda scope: scope.__setitem__("subprotocols", [b"chat"]),
    "subprotocols-int": lambda scope: scope.__setitem__("subprotocols", [1]),
    "subprotocols-str": lambda scope: scope.__setitem__("subprotocols", "chat"),
    "subprotocols-not-tokens": lambda scope: scope.__setitem__("subprotocols", ["a b", "", "x,y"]),
    "http2-without-host": _without_host,
}
"""Scope values the gateway cannot read a request from: 400 for every API, before any policy."""

SERVED: dict[str, Edit] = {
    "extensions-none": lambda scope: scope.__setitem__("extensions", None),
    "extensions-absent": lambda scope: scope.pop("extensions", None),
    "raw-path-str": lambda scope: scope.__setitem__("raw_path", scope["path"]),
    "raw-path-absent": lambda scope: scope.pop("raw_path", None),
    "client-none": lambda scope: scope.__setitem__("client", None),
    "server-none": lambda scope: scope.__setitem__("server", None),
    "server-unix": lambda scope: scope.__setitem__("server", ("/run/gw.sock", None)),
    "root-path-none": lambda scope: scope.__setitem__("root_path", None),
    "root-path-bytes": lambda scope: scope.__setitem__("root_path", b"/ws"),
    "client-text": lambda scope: scope.__setitem__("client", ("x1", 0)),
    "subprotocols-none": lambda scope: scope.__setitem__("subprotocols", None),
}
"""Scope values the gateway serves a request with: its policies refuse it or it is relayed."""


def _edited(app: ASGIApp, edit: Edit) -> ASGIApp:
    async def edited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope = dict(scope)
            edit(scope)
        await app(scope, receive, send)

    return edited


def _app(upstream: UpstreamServer, edit: Edit, reached: list[str]) -> ASGIApp:
    async def own_route(websocket: WebSocket) -> None:
        reached.append(websocket.scope["path"])
        await websocket.accept()
        await websocket.close()

    deny = [{"ip-filter": {"deny": ["127.0.0.0/8"]}}]
    config = {
        "apis": [
            api_entry(upstream, name="denied", path="/ws/denied", policies=deny, passthrough=True),
            api_entry(upstream, name="open", path="/ws/open", passthrough=True),
        ]
    }
    inner = Starlette(routes=[WebSocketRoute(path, own_route) for path in ("/ws/denied", "/ws/open")])
    return _edited(WebSocketGateway(inner, config=config), edit)


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR)
    return caplog


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


@pytest.mark.parametrize("edit", list(SERVED), ids=list(SERVED))
@pytest.mark.parametrize("ws", MODES)
async def test_a_denial_is_a_refusal_and_an_open_api_is_relayed(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, edit: str, errors: pytest.LogCaptureFixture
) -> None:
    reached: list[str] = []
    server = uvicorn_server(_app(upstream, SERVED[edit], reached), ws=ws)
    assert await upgrade_status(server.port, "/ws/denied") == 403
    async with await connect(server.url("/ws/open")) as client:
        await client.send("hi")
        assert await client.recv() == "hi"
    assert reached == []
    assert _tracebacks(errors) == []


@pytest.mark.parametrize("edit", list(REFUSED_AS_BAD), ids=list(REFUSED_AS_BAD))
@pytest.mark.parametrize("ws", MODES)
async def test_a_scope_the_gateway_cannot_read_is_a_400(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, edit: str, errors: pytest.LogCaptureFixture
) -> None:
    reached: list[str] = []
    server = uvicorn_server(_app(upstream, REFUSED_AS_BAD[edit], reached), ws=ws)
    for target in ("/ws/denied", "/ws/open"):
        assert await upgrade_status(server.port, target) == 400, target
    assert reached == []
    assert _tracebacks(errors) == []


@pytest.mark.parametrize("ws", MODES)
async def test_a_str_raw_path_still_refuses_a_disguised_path(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, errors: pytest.LogCaptureFixture
) -> None:
    """Read as absent, a ``str`` raw path leaves routing to the decoded path: the app's route is not reached."""
    reached: list[str] = []
    server = uvicorn_server(_app(upstream, SERVED["raw-path-str"], reached), ws=ws)
    assert await upgrade_status(server.port, "/ws%2Fdenied") == 403  # the decoded path: the API's, its policies
    assert await upgrade_status(server.port, "/ws/denied%0A") == 400
    assert await upgrade_status(server.port, "//ws/denied") == 400
    assert reached == []
    assert _tracebacks(errors) == []


@pytest.mark.parametrize(
    ("path", "raw_path", "root", "expected"),
    [
        ("/api/ws/x", "/api/ws/x", "/api", ("/ws/x", None)),  # a str raw path: read as absent
        ("/ws/x", "/ws/x", "", ("/ws/x", None)),
        ("/ws/x", b"/ws/x", b"/ws", ("/ws/x", b"/ws/x")),  # a bytes root path: read as none
    ],
)
def test_route_target_reads_values_of_no_asgi_type_as_absent(
    path: str, raw_path: Any, root: Any, expected: tuple[str, bytes | None]
) -> None:
    """What the management mount routes with too: a TypeError there was a 500 and a traceback."""
    assert route_target(path, raw_path, root) == expected
