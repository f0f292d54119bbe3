"""An API's path reached through the application's router, with an encoded '/': refused, not passed on.

The gateway routes on ``raw_path`` split at the ``/`` the client sent, so ``/ws%2Fchat`` is no API's
path to it; it used to hand such a request to the wrapped application, whose router (Starlette's,
like every ASGI router) routes on the decoded ``path``: ``/ws/chat``, the API's path. An application
route there (the service the API fronts, or an ``asgi:`` upstream's own router) took the connection
with none of the API's policies. Found by an attack pass under plain ``uvicorn app:app``.
"""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import upgrade_status
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

DENY_LOOPBACK = [{"ip-filter": {"deny": ["127.0.0.0/8", "::1/128"]}}]


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto", PASSTHROUGH])
@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_an_encoded_slash_cannot_reach_the_apps_route_at_an_apis_path(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, http: str
) -> None:
    reached: list[str] = []

    async def own_route(websocket: WebSocket) -> None:
        reached.append(websocket.scope["path"])
        await websocket.accept()
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws/chat", own_route), WebSocketRoute("/secure/{room}", own_route),
                            WebSocketRoute("/open", own_route)])  # fmt: skip
    config = {
        "apis": [
            api_entry(upstream, name="chat", path="/ws/chat", policies=DENY_LOOPBACK),
            api_entry(upstream, name="rooms", path="/secure/{room}", policies=DENY_LOOPBACK),
        ]
    }
    server = uvicorn_server(WebSocketGateway(app, config=config), ws=ws, http=http)
    assert await upgrade_status(server.port, "/ws/chat") == 403
    for target in ("/ws%2Fchat", "/ws%2fchat", "/secure%2Fx", "%2Fws%2Fchat"):
        assert await upgrade_status(server.port, target) == 400, target
    assert reached == []
    # The application's own paths are its own: an encoded slash there is its business.
    assert await upgrade_status(server.port, "/open") == 101
    assert reached == ["/open"]


@pytest.mark.parametrize("ws", ["websockets-sansio", PASSTHROUGH])
@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_a_control_character_cannot_reach_the_apps_route_at_an_apis_path(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: WSImpl, http: str
) -> None:
    """Starlette's route patterns end in ``$``, which matches before a final newline: ``/ws/chat%0A``
    was its ``/ws/chat`` route, and no API's path to the gateway, so the app's own route took the
    connection with none of the API's policies (found by an attack pass). Any control character that
    leaves an API's path once removed is refused, the app's own paths stay its own."""
    reached: list[str] = []

    async def own_route(websocket: WebSocket) -> None:
        reached.append(websocket.scope["path"])
        await websocket.accept()
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws/chat", own_route), WebSocketRoute("/t/{tenant}/events", own_route),
                            WebSocketRoute("/open", own_route)])  # fmt: skip
    config = {
        "apis": [
            api_entry(upstream, name="chat", path="/ws/chat", policies=DENY_LOOPBACK),
            api_entry(upstream, name="events", path="/t/{tenant}/events", policies=DENY_LOOPBACK),
        ]
    }
    server = uvicorn_server(WebSocketGateway(app, config=config), ws=ws, http=http)
    assert await upgrade_status(server.port, "/t/acme/events") == 403
    disguised = ["/ws/chat%0A", "/ws/chat%0a", "/ws%2Fchat%0A", "/t/acme/events%0A", "/ws/chat%0D%0A", "/ws/ch%00at",
                 "/ws/chat%7F", "/ws/%09chat", "/t/acme/%1Bevents"]  # fmt: skip
    for target in disguised:
        assert await upgrade_status(server.port, target) == 400, target
    assert reached == []
    assert await upgrade_status(server.port, "/open%0A") == 101
    assert reached == ["/open\n"]
