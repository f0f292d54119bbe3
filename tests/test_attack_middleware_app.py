"""The application around and behind the gateway: what is not an API's is the app's, untouched.

An attack pass as the wrapped application: HTTP scopes reach it as the same objects and its answers
reach the client byte for byte; lifespan messages pass through both ways; a WebSocket path of its own
that raises, never answers or sends after closing is its own business, and never counts against the
gateway's ``max_connections`` nor stops an API from being served. Each held.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import ASGIApp, Message, Receive, Scope, Send
from support.clients import connect, expect_close
from support.configs import api_entry
from support.rawhttp import exchange
from support.servers import UvicornFactory, UvicornServer
from support.upstream import UpstreamServer

_DATE = re.compile(rb"\r\ndate: [^\r]*", re.IGNORECASE)


async def _echo_http(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{request.method} {request.url.path} {body!r} {request.headers.get('x-odd')}",
                             headers={"X-Seen": request.scope["raw_path"].decode("latin-1")})  # fmt: skip


def _inner() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", _echo_http, methods=["GET", "POST"])])


REQUESTS = [
    b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",  # an API's path, plain HTTP: the app's
    b"GET /ws%2Fecho?x=1 HTTP/1.1\r\nHost: gw\r\nX-Odd: a\xffb\r\nConnection: close\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET //ws/echo/ HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", REQUESTS)
async def test_http_answers_are_the_apps_byte_for_byte(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, request_bytes: bytes
) -> None:
    bare = uvicorn_server(_inner())
    wrapped = uvicorn_server(WebSocketGateway(_inner(), config={"apis": [api_entry(upstream)]}))
    answers = [_DATE.sub(b"", await exchange(server.port, request_bytes)) for server in (bare, wrapped)]
    assert answers[0] == answers[1]
    assert answers[0].startswith(b"HTTP/1.1 200")


async def test_http_and_own_websocket_scopes_are_the_same_objects(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    given: list[tuple[Any, ...]] = []
    seen: list[tuple[Any, ...]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send, dict(scope)))
        await _inner()(scope, receive, send)

    gateway = WebSocketGateway(inner, config={"apis": [api_entry(upstream)]})

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            given.append((scope, receive, send, dict(scope)))
        await gateway(scope, receive, send)

    server = uvicorn_server(outer, lifespan="off")
    await exchange(server.port, b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    with contextlib.suppress(Exception):
        async with await connect(server.url("/app-own"), open_timeout=2):
            pass
    assert len(given) == len(seen) == 2
    for (scope, receive, send, copy), (scope2, receive2, send2, copy2) in zip(given, seen, strict=True):
        assert scope is scope2 and receive is receive2 and send is send2 and copy == copy2


async def test_lifespan_messages_pass_through_both_ways(upstream: UpstreamServer) -> None:
    received: list[Message] = []
    state_seen: list[Any] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        state_seen.append(scope.get("state"))
        while True:
            message = await receive()
            received.append(message)
            kind = message["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    gateway = WebSocketGateway(inner, config={"apis": [api_entry(upstream)]})
    with UvicornServer(gateway, lifespan="on") as server:
        async with await connect(server.url("/ws/echo")) as client:
            await client.send("hi")
            assert await client.recv() == "hi"
    assert [message["type"] for message in received] == ["lifespan.startup", "lifespan.shutdown"]
    assert state_seen == [{}]  # uvicorn's lifespan state, passed on


async def test_an_apps_failed_start_up_stops_the_server(upstream: UpstreamServer) -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the app's own failure"})

    server = UvicornServer(WebSocketGateway(inner, config={"apis": [api_entry(upstream)]}), lifespan="on")
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()


async def _django_like(scope: Scope, receive: Receive, send: Send) -> None:
    """Django's ASGI handler: HTTP and WebSocket only (a lifespan scope raises)."""
    if scope["type"] not in ("http", "websocket"):
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")


async def _no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare app that returns from a lifespan scope without reading it."""


@pytest.mark.parametrize("lifespan", ["auto", "on"])
@pytest.mark.parametrize("inner", [_django_like, _no_lifespan], ids=["raises", "returns"])
async def test_an_app_without_lifespan_still_shuts_the_gateway_down(
    upstream: UpstreamServer, inner: ASGIApp, lifespan: Any
) -> None:
    """The gateway answers the lifespan alone: at shutdown it drains and shuts its telemetry down (never
    before: spans and metrics still buffered were lost, the store never closed). Under ``on`` the
    server refused to start."""
    gateway = WebSocketGateway(inner, config={"apis": [api_entry(upstream)]})
    server = UvicornServer(gateway, lifespan=lifespan)
    server.start()
    try:
        client = await connect(server.url("/ws/echo"))
        await client.send("hi")
        assert await client.recv() == "hi"
        closed = asyncio.create_task(expect_close(client))
    finally:
        await asyncio.to_thread(server.stop)
    assert (await closed)[0] in (1001, 1012)  # uvicorn's own protocols close their connections first
    assert gateway.draining and gateway.telemetry.closed


def _misbehaving(started: threading.Event) -> ASGIApp:
    async def raises(websocket: WebSocket) -> None:
        raise RuntimeError("the app's own bug")

    async def hangs(websocket: WebSocket) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def sends_after_close(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()
        with contextlib.suppress(RuntimeError):
            await websocket.send_text("after close")

    routes = [WebSocketRoute("/app/raises", raises), WebSocketRoute("/app/hangs", hangs),
              WebSocketRoute("/app/after-close", sends_after_close)]  # fmt: skip
    return Starlette(routes=routes)


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
async def test_an_apps_own_websocket_misbehaving_leaves_the_apis_alone(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws: Any
) -> None:
    """With ``max_connections: 1``, a handshake the app never answers does not take the gateway's place."""
    started = threading.Event()
    gateway = WebSocketGateway(_misbehaving(started), config={"max_connections": 1, "apis": [api_entry(upstream)]})
    server = uvicorn_server(gateway, ws=ws, timeout_graceful_shutdown=1)
    for path in ("/app/raises", "/app/after-close"):
        with contextlib.suppress(Exception):
            async with await connect(server.url(path), open_timeout=2) as own:
                await own.recv()
    hanging = asyncio.create_task(connect(server.url("/app/hangs"), open_timeout=30))
    try:
        assert await asyncio.to_thread(started.wait, 5)  # the app holds a handshake it never answers
        async with await connect(server.url("/ws/echo")) as client:
            await client.send("hi")
            assert await client.recv() == "hi"
            assert gateway.open_connections == 1
    finally:
        hanging.cancel()
        with contextlib.suppress(BaseException):
            await hanging
    async with asyncio.timeout(5):  # the relay's end is counted once the server has wound it down
        while gateway.full:  # noqa: ASYNC110 - the server's loop, in another thread
            await asyncio.sleep(0.02)
