"""End to end: an upstream URL that leads back to the gateway costs a few connections, not thousands.

Every upstream request carries the gateway's ``Via`` entry; a handshake that arrives having passed
through the gateway ``handshake_limits.max_gateway_hops`` times is refused with 508 before any
policy or upstream connect. Real uvicorn servers, a real upstream; the gateway's upstream URLs name
the gateway's own port.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.handshake.forwarding_loop import check_forwarding_loop, gateway_hops
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.headers import upstream_headers
from support.clients import connect
from support.configs import api_entry
from support.gateway import MODES, PASSTHROUGH
from support.servers import UvicornFactory, free_port
from support.upstream import UpstreamServer


class _CountingGateway:
    """The gateway as an ASGI app that counts the WebSocket handshakes reaching it, by path."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.gateway = WebSocketGateway(not_found, config=config)
        self.paths: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.paths[scope["path"]] += 1
        await self.gateway(scope, receive, send)


def _gateway(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, mode: str, **limits: int
) -> tuple[_CountingGateway, int]:
    """A gateway whose ``/loop`` proxies to itself, ``/alias/{room}`` to its own ``/rooms/{room}``,
    and ``/rooms/{room}`` to the real upstream; returns it and its port."""
    port = free_port()
    own = f"ws://127.0.0.1:{port}"
    extra: dict[str, Any] = {"passthrough": True} if mode == "passthrough" else {}
    config: dict[str, Any] = {
        "apis": [
            api_entry(f"{own}/loop", name="loop", path="/loop", **extra),
            api_entry(f"{own}/rooms/{{room}}", name="alias", path="/alias/{room}", **extra),
            api_entry(upstream.url("/echo"), name="rooms", path="/rooms/{room}", **extra),
        ],
    }
    if limits:
        config["handshake_limits"] = limits
    app = _CountingGateway(config)
    ws: Any = PASSTHROUGH if mode == "passthrough" else mode
    uvicorn_server(app, ws=ws, port=port)
    return app, port


@pytest.mark.parametrize("mode", MODES)
async def test_a_gateway_proxying_to_itself_is_stopped_after_max_gateway_hops(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, mode: str
) -> None:
    app, port = _gateway(uvicorn_server, upstream, mode)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{port}/loop")
    assert refused.value.response.status_code == 508
    # The client's handshake, four more that had passed the gateway (the default limit) and the one
    # refused; without the check, one handshake became thousands before a header limit stopped it.
    assert app.paths["/loop"] == 6
    assert upstream.handshakes == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_chain_through_the_same_gateway_works_and_each_hop_appends_its_via(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, mode: str
) -> None:
    app, port = _gateway(uvicorn_server, upstream, mode)
    async with await connect(f"ws://127.0.0.1:{port}/alias/lobby",
                             additional_headers={"Via": "1.0 corporate-proxy (Squid)"}) as ws:  # fmt: skip
        await ws.send("hello")
        assert await ws.recv() == "hello"
    assert app.paths == Counter({"/alias/lobby": 1, "/rooms/lobby": 1})
    (record,) = upstream.handshakes
    # The client's own entry first, then one per gateway hop, in order (RFC 9110 §7.6.3).
    entries = [entry.strip() for value in record.headers["via"] for entry in value.split(",")]
    assert entries == ["1.0 corporate-proxy (Squid)", "1.1 asgi-ws-gateway", "1.1 asgi-ws-gateway"]


async def test_max_gateway_hops_bounds_the_chain(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    """With ``max_gateway_hops: 1`` the alias works from a client, not from one that already passed a
    gateway (then it arrives at its second API having passed twice); 0 refuses any handshake that
    has passed a gateway, so the alias never reaches the upstream."""
    app, port = _gateway(uvicorn_server, upstream, "websockets-sansio", max_gateway_hops=1)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{port}/alias/lobby", additional_headers={"Via": "1.1 asgi-ws-gateway"})
    assert refused.value.response.status_code == 508
    assert app.paths == Counter({"/alias/lobby": 1, "/rooms/lobby": 1})
    app.paths.clear()
    async with await connect(f"ws://127.0.0.1:{port}/alias/lobby") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    app, port = _gateway(uvicorn_server, upstream, "websockets-sansio", max_gateway_hops=0)
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{port}/alias/lobby")
    assert refused.value.response.status_code == 508
    assert app.paths == Counter({"/alias/lobby": 1, "/rooms/lobby": 1})


# -- counting the gateway's Via entries (pure) ------------------------------------------------------

_OWN = ["1.1 asgi-ws-gateway", "HTTP/1.1 asgi-ws-gateway", "1.1 asgi-ws-gateway (a comment, with commas)",
        "1.1\tasgi-ws-gateway"]  # fmt: skip
_OTHERS = ["1.0 corporate-proxy", "1.1 asgi-ws-gateway-2", "1.1 my.asgi-ws-gateway", "1.1 asgi-ws-gateway:8000",
           "1.1 nginx (asgi-ws-gateway)", "asgi-ws-gateway", "2 varnish"]  # fmt: skip


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=12), st.integers(1, 4))
def test_gateway_hops_counts_only_the_gateways_own_entries(entries: list[tuple[bool, int]], lines: int) -> None:
    values = [(_OWN if own else _OTHERS)[index % (4 if own else 7)] for own, index in entries]
    chunk = max(1, -(-len(values) // lines))  # spread over up to ``lines`` Via header lines
    headers = [(b"via", ", ".join(values[i : i + chunk]).encode()) for i in range(0, len(values), chunk)]
    headers.append((b"host", b"1.1 asgi-ws-gateway"))
    assert gateway_hops(headers) == sum(own for own, _ in entries)


def test_the_check_refuses_at_the_limit_with_508() -> None:
    headers = [(b"Via", b"1.1 asgi-ws-gateway, 1.1 asgi-ws-gateway")]
    check_forwarding_loop(headers, 2)
    with pytest.raises(HandshakeDenied) as denied:
        check_forwarding_loop(headers, 1)
    assert (denied.value.status, denied.value.reason) == (508, "loop_detected")
    assert "2 gateway hops" in denied.value.detail
    check_forwarding_loop([(b"via", b"1.0 squid")], 0)


def test_the_upstream_request_appends_the_gateways_via_after_the_clients() -> None:
    scope = {"headers": [(b"via", b"1.0 squid"), (b"host", b"example.com")], "client": ("10.0.0.1", 5)}
    headers = upstream_headers(scope)
    assert [value for name, value in headers if name == "via"] == ["1.0 squid", "1.1 asgi-ws-gateway"]
    assert gateway_hops([(n.encode(), v.encode()) for n, v in headers]) == 1


async def test_an_in_process_upstream_that_is_the_gateway_itself_is_stopped_too(
    uvicorn_server: UvicornFactory,
) -> None:
    """An ``app`` upstream leading back into the same gateway: the same bound, and the in-process
    hop gets the client's ``Host`` (before, it got none, so the gateway refused its own hop with 400)."""
    hosts: list[bytes | None] = []

    async def back_into_the_gateway(scope: Scope, receive: Receive, send: Send) -> None:
        hosts.append(dict(scope["headers"]).get(b"host"))
        await app(scope, receive, send)

    api = api_entry(name="loop", path="/loop")
    api["upstreams"] = [{"app": back_into_the_gateway, "path": "/loop"}]
    app = _CountingGateway({"apis": [api]})
    server = uvicorn_server(app)
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url("/loop"))
    assert refused.value.response.status_code == 508
    assert app.paths["/loop"] == 6
    assert hosts == [f"127.0.0.1:{server.port}".encode()] * 5
