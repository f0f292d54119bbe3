"""End to end: client values never change the upstream path's shape, and never harm a backend.

A real uvicorn runs the gateway; a real upstream records the request line of every handshake it
gets. Requests are sent over a raw socket so that the request target reaches uvicorn byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from asgi_ws_gateway.errors import HandshakeDenied, UpstreamError
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.websockets_client import WebSocketsConnector
from support.clients import connect
from support.configs import build_config
from support.gateway import PASSTHROUGH, ProbedGateway
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def _raw_handshake(port: int, target: str, host_lines: str | None = None) -> tuple[int, bytes]:
    """Send an upgrade request for ``target`` exactly as written (``host_lines``: its Host lines,
    CRLF-terminated; default one for the server); return the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host_lines = f"Host: 127.0.0.1:{port}\r\n" if host_lines is None else host_lines
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\n{host_lines}Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if status != 101 else b""
        return status, body
    finally:
        writer.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _config(upstream_url: str, *, path: str = "/rooms/{room}", **api: Any) -> dict[str, Any]:
    return build_config(upstream_url, name="rooms", path=path, api=api)


@pytest.fixture
def rooms(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> int:
    """The port of a gateway routing ``/rooms/{room}`` to the upstream's ``/rooms/{room}``."""
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/rooms/{room}"))))
    return _port(server.url())


@pytest.mark.parametrize(
    "segment",
    ["..", ".", "%2e%2e", "%2E%2E", "%2e%2E", ".%2e", "%2e.", "%2e", "a%2Fb", "a%2fb", "%2F", "a%5Cb", "%5c",
     "%00", "a%0Db", "%0A", "%7F", "%C2%85", "%ff", "%C0%AE%C0%AE", "%E0%80%AE", "%c0%af", "%EF%BC%8E%EF%BC%8E",
     "a%EF%BC%8Fb"],
)  # fmt: skip
async def test_a_parameter_that_would_change_the_upstream_path_is_a_400(
    rooms: int, upstream: UpstreamServer, segment: str
) -> None:
    """Dot segments, encoded separators, controls and non-UTF-8 (overlong) encodings: 400, no upstream contact."""
    status, body = await _raw_handshake(rooms, f"/rooms/{segment}")
    assert status == 400
    problem = json.loads(body)
    assert problem["status"] == 400 and "path parameter 'room'" in problem["detail"]
    assert upstream.handshakes == []


@pytest.mark.parametrize(
    ("segment", "upstream_path"),
    [
        ("%252e%252e", "/rooms/%252e%252e"),  # decoded once: the text '%2e%2e', re-encoded for the upstream
        ("%252F", "/rooms/%252F"),
        ("%255C", "/rooms/%255C"),
        ("..a", "/rooms/..a"),
        ("caf%C3%A9", "/rooms/caf%C3%A9"),
        ("a%20b", "/rooms/a%20b"),
        ("a%3Fb%23c", "/rooms/a%3Fb%23c"),
    ],
)
async def test_an_odd_but_safe_parameter_reaches_the_upstream_as_one_segment(
    rooms: int, upstream: UpstreamServer, segment: str, upstream_path: str
) -> None:
    status, _ = await _raw_handshake(rooms, f"/rooms/{segment}")
    assert status == 101
    assert [h.path for h in upstream.handshakes] == [upstream_path]


async def test_raw_path_routing_on_each_server_implementation(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl
) -> None:
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/rooms/{room}"))), ws=ws_impl)
    port = _port(server.url())
    assert (await _raw_handshake(port, "/rooms/%252e%252e"))[0] == 101
    assert (await _raw_handshake(port, "/rooms/%2e%2e"))[0] == 400
    assert (await _raw_handshake(port, "/rooms/a%2Fb"))[0] == 400
    assert [h.path for h in upstream.handshakes] == ["/rooms/%252e%252e"]


async def test_an_encoded_slash_does_not_reach_a_literal_route(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/echo"), path="/ws/chat")))
    port = _port(server.url())
    assert (await _raw_handshake(port, "/ws/chat"))[0] == 101
    assert (await _raw_handshake(port, "/ws%2Fchat"))[0] == 400  # the application would route it as /ws/chat
    assert len(upstream.handshakes) == 1


@pytest.mark.parametrize(
    "target",
    ["..", "%2e%2e", ".", "a%2Fb", "a%2fb", "..%2F..%2Fadmin", "a%5Cb", "%00"],
)
async def test_rewrite_uri_cannot_add_segments_or_dot_segments(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, target: str
) -> None:
    """A query value templated into ``rewrite-uri`` is refused when it would not stay one segment."""
    policies = [{"rewrite-uri": {"template": "/rooms/{query.to}"}}]
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/echo"), path="/ws", policies=policies)))
    status, _ = await _raw_handshake(_port(server.url()), f"/ws?to={target}")
    assert status == 400
    assert upstream.handshakes == []


async def test_rewrite_uri_keeps_a_safe_value_in_one_segment(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    policies = [{"rewrite-uri": {"template": "/rooms/{query.to}", "copy_unmatched_params": False}}]
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/echo"), path="/ws", policies=policies)))
    assert (await _raw_handshake(_port(server.url()), "/ws?to=%252e%252e"))[0] == 101
    assert [h.path for h in upstream.handshakes] == ["/rooms/%252e%252e"]


async def test_the_forwarded_query_cannot_smuggle_a_fragment_or_bytes(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/echo"), path="/ws")))
    status, _ = await _raw_handshake(_port(server.url()), '/ws?a=%23b&c="<x>"')
    assert status == 101
    assert [h.path for h in upstream.handshakes] == ["/echo?a=%23b&c=%22%3Cx%3E%22"]


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/ws?a=1;b=2", "/echo?a=1%3Bb=2"),
        ("/ws?room=1;admin=true&x=%3B", "/echo?room=1%3Badmin=true&x=%3B"),
    ],
)
async def test_a_semicolon_in_the_query_reaches_the_upstream_as_part_of_its_value(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, target: str, forwarded: str
) -> None:
    """The gateway reads ``a=1;b=2`` as one parameter; Rack 2, Go before 1.17 and Python before 3.10
    split it in two. Encoded, every upstream reads what the gateway's policies read."""
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/echo"), path="/ws")))
    assert (await _raw_handshake(_port(server.url()), target))[0] == 101
    assert upstream.handshakes[-1].path == forwarded


async def test_an_oversized_upstream_url_is_a_400(uvicorn_server: UvicornFactory, upstream: UpstreamServer) -> None:
    """Templates can multiply a value the server accepted into a URL longer than ``MAX_UPSTREAM_URL``."""
    policies = [{"rewrite-uri": {"template": "/r/{query.q}/{query.q}/{query.q}/{query.q}"}}]
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/echo"), path="/ws", policies=policies)))
    assert (await _raw_handshake(_port(server.url()), "/ws?q=" + "%E2%82%AC" * 300))[0] == 400
    assert upstream.handshakes == []


# Item 7: requests the gateway cannot build are the client's error, never the backend's.

_BAD_VALUES = [
    ("set-header", "/ws?q=%E2%82%AC"),  # not Latin-1
    ("set-header", "/ws?q=%F0%9F%98%80"),  # astral, not Latin-1
    ("rewrite-uri", "/ws?q=.."),
    ("rewrite-uri", "/ws?q=a%2Fb"),
    ("rewrite-uri", "/ws?q=%00"),
    ("set-header", "/ws?q=" + "%E2%82%AC" * 3),
]


def _policy(kind: str) -> dict[str, Any]:
    if kind == "set-header":
        return {"set-header": {"header": "x-q", "value": "{query.q}"}}
    return {"rewrite-uri": {"template": "/rooms/{query.q}"}}


@pytest.mark.parametrize(("kind", "target"), _BAD_VALUES)
async def test_a_flood_of_unbuildable_requests_leaves_a_healthy_backend_serving(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, kind: str, target: str
) -> None:
    gateway = ProbedGateway(_config(upstream.url("/echo"), path="/ws", policies=[_policy(kind)], unhealthy_after=1,
                                    cooldown=3600))  # fmt: skip
    server = uvicorn_server(gateway)
    port = _port(server.url())
    for _ in range(20):
        status, body = await _raw_handshake(port, target)
        assert status == 400
        assert b"unreachable" not in body
    assert upstream.handshakes == []
    backend = gateway.gateway._apis["rooms"].pool.backends[0]
    assert (backend.failures, backend.cooling_until) == (0, 0.0)
    async with await connect(server.url("/ws?q=fine")) as ws:
        await ws.send("still serving")
        assert await ws.recv() == "still serving"


async def test_a_non_latin1_path_parameter_in_a_header_is_a_400(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    policies = [{"set-header": {"header": "x-room", "value": "{path.room}"}}]
    gateway = ProbedGateway(_config(upstream.url("/echo"), policies=policies, unhealthy_after=1))
    server = uvicorn_server(gateway)
    assert (await _raw_handshake(_port(server.url()), "/rooms/%E2%82%AC"))[0] == 400
    assert upstream.handshakes == []
    assert gateway.gateway._apis["rooms"].pool.backends[0].failures == 0


async def test_a_real_upstream_failure_still_counts_against_the_backend(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    with UpstreamServer() as gone:
        dead = gone.url("/echo")
    config = _config(dead, path="/ws", unhealthy_after=1, cooldown=3600)
    config["apis"][0]["upstreams"] = [dead, upstream.url("/echo")]
    gateway = ProbedGateway(config)
    server = uvicorn_server(gateway)
    assert (await _raw_handshake(_port(server.url()), "/ws"))[0] == 101  # failed over to the live backend
    dead_backend, live_backend = gateway.gateway._apis["rooms"].pool.backends
    assert dead_backend.failures == 1 and dead_backend.cooling_until > 0
    assert live_backend.failures == 0


@pytest.mark.parametrize(
    ("url_path", "headers"),
    [("/echo", [("x-q", "\u20ac")]), ("/echo", [("x-q", "a\r\nb")]), ("/echo", [("x-q", "\x00")])],
)
async def test_the_connector_classifies_what_websockets_refuses_to_send_as_a_400(
    upstream: UpstreamServer, url_path: str, headers: list[tuple[str, str]]
) -> None:
    """Behind the gateway's own checks: websockets' header validation is the client's error, not the backend's."""
    api = load_config(_config(upstream.url(url_path), path="/ws")).apis[0]
    connector = WebSocketsConnector(api, api.upstreams[0])
    request = UpstreamRequest(url=upstream.url(url_path), headers=headers, subprotocols=[], scope={})
    with pytest.raises(HandshakeDenied) as caught:
        await connector.connect(request)
    assert caught.value.status == 400 and not isinstance(caught.value, UpstreamError)
    assert upstream.url(url_path) not in caught.value.detail
    assert upstream.handshakes == []


async def test_the_connector_classifies_an_invalid_uri_as_a_400(upstream: UpstreamServer) -> None:
    api = load_config(_config(upstream.url("/echo"), path="/ws")).apis[0]
    connector = WebSocketsConnector(api, api.upstreams[0])
    request = UpstreamRequest(url="ws://127.0.0.1:1/echo#frag", headers=[], subprotocols=[], scope={})
    with pytest.raises(HandshakeDenied) as caught:
        await connector.connect(request)
    assert caught.value.status == 400 and "127.0.0.1" not in caught.value.detail


async def test_an_in_process_upstream_sees_one_decoded_segment_or_nothing(uvicorn_server: UvicornFactory) -> None:
    """``asgi:`` upstreams get ASGI's decoded ``path``: safe only because unsafe values were refused."""
    seen: list[tuple[str, bytes]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["path"], scope["raw_path"]))
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    config = {"apis": [{"name": "rooms", "path": "/rooms/{room}", "upstreams": [{"app": app}]}]}
    server = uvicorn_server(ProbedGateway(config))
    port = _port(server.url())
    for attack in ("%2e%2e", "a%2Fb", "%00", ".%2E"):
        assert (await _raw_handshake(port, f"/rooms/{attack}"))[0] == 400
    assert (await _raw_handshake(port, "/rooms/caf%C3%A9%252F"))[0] == 101
    assert seen == [("/rooms/café%2F", b"/rooms/caf%C3%A9%252F")]


async def test_passthrough_routes_and_checks_the_same_way(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The splice opens the upstream itself: the same refusals, before it connects."""
    policies = [{"set-header": {"header": "x-q", "value": "{query.q}"}}]
    config = _config(upstream.url("/rooms/{room}"), passthrough=True, policies=policies, unhealthy_after=1)
    gateway = ProbedGateway(config)
    port = _port(uvicorn_server(gateway, ws=PASSTHROUGH).url())
    for attack in ("/rooms/%2e%2e", "/rooms/a%2Fb", "/rooms/.%2E", "/rooms/ok?q=%E2%82%AC"):
        assert (await _raw_handshake(port, attack))[0] == 400, attack
    assert gateway.gateway._apis["rooms"].pool.backends[0].failures == 0
    assert (await _raw_handshake(port, "/rooms/%252e%252e"))[0] == 101
    assert [h.path for h in upstream.handshakes] == ["/rooms/%252e%252e"]


async def _status_with_host_lines(port: int, host_lines: str) -> int:
    return (await _raw_handshake(port, "/rooms/lobby", host_lines))[0]


@pytest.mark.parametrize(
    "host_lines",
    [
        pytest.param("Host: gw.test\r\nHost: evil.test\r\n", id="two"),
        pytest.param("Host: gw.test\r\nhost: gw.test\r\n", id="two-equal"),
        pytest.param("", id="none"),
        pytest.param("Host: evil.test/path\r\n", id="path"),
        pytest.param("Host: user@evil.test\r\n", id="userinfo"),
        pytest.param("Host: gw.test:80x\r\n", id="bad-port"),
        pytest.param("Host: gw .test\r\n", id="space"),
        pytest.param('Host: gw.test"\r\n', id="quote"),
    ],
)
async def test_a_missing_repeated_or_malformed_host_is_a_400_on_each_server_implementation(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl, host_lines: str
) -> None:
    """RFC 9112 §3.2: exactly one Host, a host with an optional port; never passed on ambiguous."""
    server = uvicorn_server(ProbedGateway(_config(upstream.url("/rooms/{room}"))), ws=ws_impl)
    assert await _status_with_host_lines(_port(server.url()), host_lines) == 400
    assert upstream.handshakes == []


@pytest.mark.parametrize("host_lines", ["Host: gw.test\r\nHost: evil.test\r\n", "", "Host: evil.test/x\r\n"])
async def test_the_splice_refuses_the_same_hosts(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, host_lines: str
) -> None:
    config = _config(upstream.url("/rooms/{room}"), passthrough=True)
    port = _port(uvicorn_server(ProbedGateway(config), ws=PASSTHROUGH).url())
    assert await _status_with_host_lines(port, host_lines) == 400
    assert await _status_with_host_lines(port, "Host: gw.test\r\n") == 101
    assert len(upstream.handshakes) == 1


@pytest.mark.parametrize("host", ["gw.test", "gw.test:8443", "127.0.0.1", "[::1]:8000", "xn--bcher-kva.example"])
async def test_a_host_with_or_without_a_port_is_accepted(rooms: int, upstream: UpstreamServer, host: str) -> None:
    assert await _status_with_host_lines(rooms, f"Host: {host}\r\n") == 101
    assert upstream.handshakes[-1].headers.get("x-forwarded-host") == [host]
