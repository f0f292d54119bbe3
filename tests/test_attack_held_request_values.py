"""What a connection keeps of its request's values once the handshake is decided.

An attack pass sent 8 KiB of ``a=&`` in the query and 24 KiB of ``a=b;`` cookies to an API whose
``set-header`` policies read ``{query.room}`` and ``{cookie.theme}``: each idle connection kept the
parsed pairs, about 1 MB (1,000 connections took a worker from 103 MB to 1.1 GB). Parses of many
values are dropped once the upstream requests are built, and read again if asked; and a request
with more cookies than a browser sends (180) or more than 1,000 query parameters is refused where a
policy reads them (24 KiB of cookies took 12 ms of the event loop to parse and fold).
"""

from __future__ import annotations

import gc

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.handshake.request_view import RequestView
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.policies import context
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

MANY_COOKIES = "; ".join(["a=b"] * 179) + "; theme=dark"
MANY_PARAMS = "room=lobby&" + "&".join(["a="] * 999)


def _views() -> list[RequestView]:
    gc.collect()
    return [view for view in gc.get_objects() if isinstance(view, RequestView)]


async def test_an_open_connection_keeps_no_parse_of_many_values(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    policies = [{"set-header": {"header": "x-room", "value": "{query.room}"}},
                {"set-header": {"header": "x-theme", "value": "{cookie.theme}"}}]  # fmt: skip
    api = {"name": "r", "path": "/ws/r", "upstreams": [upstream.url("/echo")], "policies": policies}
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}))
    url = server.url(f"/ws/r?{MANY_PARAMS}")
    pairs = MANY_COOKIES.split("; ")
    headers = [("Cookie", "; ".join(pairs[at : at + 100])) for at in range(0, len(pairs), 100)]
    async with await connect(url, additional_headers=headers) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        assert upstream.handshakes[-1].header("x-room") == "lobby"
        assert upstream.handshakes[-1].header("x-theme") == "dark"
        held = [view for view in _views() if view.scope.get("query_string", b"").startswith(b"room=lobby&a=")]
        assert held, "the open connection's view"
        for view in held:
            assert not {"_query_pairs", "_cookie_pairs", "_folded_cookies", "_cookie_pairs_python_reads"} & set(
                view.__dict__
            )


def test_a_dropped_parse_is_read_again_alike() -> None:
    ctx = context("/ws/r", query=MANY_PARAMS, headers=[("Cookie", MANY_COOKIES)])
    view = ctx.request
    first = (view.query_copies("room"), view.cookie_copies("theme"), view.cookies["theme"], len(view.query["a"]))
    view.forget_many_values()
    assert "_cookie_pairs" not in view.__dict__ and "_query_pairs" not in view.__dict__
    again = (view.query_copies("room"), view.cookie_copies("theme"), view.cookies["theme"], len(view.query["a"]))
    assert again == first


def test_a_usual_requests_values_stay_parsed() -> None:
    view = context("/ws/r", query="room=lobby", headers=[("Cookie", "theme=dark; sid=1")]).request
    assert view.query_copies("room") == ["lobby"] and view.cookie_copies("theme")[0] == "dark"
    view.forget_many_values()
    assert "_cookie_pairs" in view.__dict__ and "_query_pairs" in view.__dict__


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> str:
    policies = [{"set-header": {"header": "x-room", "value": "{query.room}"}},
                {"set-header": {"header": "x-theme", "value": "{cookie.theme}"}}]  # fmt: skip
    api = {"name": "r", "path": "/ws/r", "upstreams": [upstream.url("/echo")], "policies": policies}
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]})).url("/ws/r")


@pytest.mark.parametrize(
    ("cookies", "params", "status"),
    [(181, 1, 431), (1, 1001, 414), (200, 1, 431), (91, 1, 431), (-181, 1, 431)],  # 91 + 91 in two headers;
)  # -181: 181 separated by spaces alone, one cookie to a ";" reading, 181 to a Python server's
async def test_more_values_than_a_browser_sends_are_refused(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, cookies: int, params: int, status: int
) -> None:
    url = _gateway(uvicorn_server, upstream) + "?" + "&".join(["room=lobby"] + ["a="] * (params - 1))
    jar = ("; " if cookies > 0 else " ").join(["theme=dark"] + ["a=b"] * (abs(cookies) - 1))
    headers = [("Cookie", jar)] * (2 if cookies == 91 else 1)
    before = len(upstream.handshakes)
    got, _, _ = await expect_status(url, additional_headers=headers)
    assert got == status
    assert len(upstream.handshakes) == before


def test_space_separated_cookies_are_dropped_after_the_handshake_too() -> None:
    """``a=b a=b ...`` is one cookie to the ``;`` reading and many to a Python server's: both count."""
    view = context("/ws/r", headers=[("Cookie", "theme=dark " + " ".join(["a=b"] * 170))]).request
    assert view.cookie_copies("theme")
    view.forget_many_values()
    assert not {"_cookie_pairs", "_cookie_pairs_python_reads", "_folded_cookies"} & set(view.__dict__)
