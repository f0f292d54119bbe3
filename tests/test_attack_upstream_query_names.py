"""A query parameter the upstream URL sets is the operator's: the client's copies of it never reach the upstream.

``upstreams[].url`` (or an ``asgi:`` upstream's ``path``) may carry a query: ``?room={room}`` from
a path parameter, ``?tenant=acme`` fixed. The client's query was appended after it, so
``GET /ws/chat/lobby?room=staff`` passed a policy that allowed only the room ``lobby`` (it reads the
path parameter) and the upstream was sent ``/chat?room=lobby&room=staff``: Starlette, PHP and Rack
read the last copy, ``staff``. Now the client's copies of every name the URL sets, in every spelling
a server reads as it (``ROOM``, ``r%6Fom``, ``room[]``, as ``set-query-parameter`` drops them), are
dropped before its query is appended. Real uvicorn, an upstream that records the request target.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.param_names import spelled_as
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.request import with_query
from support.apps import scope_recorder
from support.clients import connect
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

LOBBY_ONLY = [{"choose": {"when": [{"if": {"ref": "path.room", "not_equals": "lobby"},
                                    "policies": [{"ip-filter": {"deny": ["0.0.0.0/0", "::/0"]}}]}]}}]  # fmt: skip
SPELLINGS = ["room", "ROOM", "r%6Fom", "room[]", "room%5B%5D", "room[x]", "+room", "%20room", "Room", "room%00x"]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_client_cannot_add_a_copy_of_a_parameter_the_upstream_url_fills_from_the_path(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, spelling: str
) -> None:
    """Before: the upstream got ``room=lobby&<spelling>=staff`` (10 of 10), ``staff`` to last-wins readers."""
    api = {"name": "chat", "path": "/ws/chat/{room}", "upstreams": [upstream.url("/echo") + "?room={room}"],
           "policies": LOBBY_ONLY}  # fmt: skip
    url = _gateway(uvicorn_server, {"apis": [api]})
    async with await connect(url(f"/ws/chat/lobby?{spelling}=staff&keep=1")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert _query(upstream.handshakes[-1].path) == [("room", "lobby"), ("keep", "1")]


async def test_a_fixed_parameter_of_the_upstream_url_is_not_overridden(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    api = {"name": "t", "path": "/ws/t", "upstreams": [upstream.url("/echo") + "?tenant=acme&v=2"]}
    url = _gateway(uvicorn_server, {"apis": [api]})
    async with await connect(url("/ws/t?tenant=evil&TENANT=evil&tenant[]=evil&V=9&x=1&tenantx=kept")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert _query(upstream.handshakes[-1].path) == [("tenant", "acme"), ("v", "2"), ("x", "1"), ("tenantx", "kept")]


def test_an_in_process_upstreams_path_query_is_not_overridden() -> None:
    seen: dict[str, Any] = {}
    upstream = {"url": "asgi:", "app": scope_recorder(seen), "path": "/chat?room={room}"}
    config = {"apis": [{"name": "chat", "path": "/ws/chat/{room}", "upstreams": [upstream], "policies": LOBBY_ONLY}]}
    client = TestClient(WebSocketGateway(not_found, config=config))
    with client.websocket_connect("/ws/chat/lobby?room=staff&Room=staff&x=1") as ws, pytest.raises(WebSocketDisconnect):
        ws.receive_text()
    assert seen["path"] == "/chat"
    assert parse_qsl(seen["query_string"].decode()) == [("room", "lobby"), ("x", "1")]


_names = st.sampled_from(
    ["ROOM", "r%6Fom", "room[]", "%20room", "rooms", "A_B", "a%2Eb", "a b", "tenant[x]", "x"]
) | st.text(st.sampled_from("aRoOmM.[]_ %+2B5D6F"), min_size=1, max_size=8)


@given(st.lists(st.tuples(_names, st.text("xyz", max_size=3)), max_size=5), st.sampled_from(["room", "Tenant", "a.b"]))
def test_no_spelling_of_a_name_the_url_sets_is_appended(pairs: list[tuple[str, str]], own: str) -> None:
    url = with_query(f"ws://up/chat?{own}=set", "&".join(f"{n}={v}" for n, v in pairs).encode())
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    assert query[0] == (own, "set")
    assert not any(spelled_as(own)(name) for name, _ in query[1:])


def _gateway(uvicorn_server: UvicornFactory, config: dict[str, Any]) -> Any:
    server = uvicorn_server(WebSocketGateway(not_found, config=config), proxy_headers=False)
    return server.url


def _query(target: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(target).query, keep_blank_values=True)
