"""Attack: the relay's client leg keeps the API's keepalive, not the server's.

The splice and the frame relay ping a client, and drop one that takes in nothing of what is queued to it,
within the API's ``ping_interval``/``ping_timeout``. On the relay (``passthrough: false``, an ``asgi:``
upstream) the client leg is the gateway's server protocol, which took both from uvicorn's
``ws_ping_interval``/``ws_ping_timeout`` whatever the API said: ``ping_timeout: 2`` dropped a stalled
client after uvicorn's 20 s, and ``null`` (keepalive off) did not switch the stall rule off. The gateway
now passes the API's values in its ``websocket.accept``; uvicorn's still serve the connections the
gateway does not own.

Raw sockets with a small receive buffer play the clients that read nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.access import access_line, warnings_after_start
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawws import close_frame_in, next_frame, raw_client
from support.servers import UvicornFactory
from support.unread import MESSAGE, small_socket, streaming_app

SERVER_WIDE: dict[str, Any] = {"ws_ping_interval": 300, "ws_ping_timeout": 300}
"""uvicorn's keepalive, far longer than any wait of these tests."""
SERVER_SHORT: dict[str, Any] = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.5}
"""uvicorn's keepalive, shorter than the waits of these tests."""
API_SHORT: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 0.5}
BOUND = 30
"""Seconds a test waits for what the API's keepalive does (well under uvicorn's 300)."""
SERVER_SHORTER: dict[str, Any] = {"ws_ping_interval": 0.1, "ws_ping_timeout": 0.25}
"""uvicorn's keepalive for the tests that wait out six of its windows."""
KEPT_FOR = 1.5
"""Seconds a client that reads nothing must stay open when the stall rule is off (six SERVER_SHORTER windows,
three of the API's longest timeout there)."""


def _dropped(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the client read nothing" in r.getMessage()]


async def test_a_relay_client_that_reads_nothing_is_dropped_within_the_apis_ping_timeout(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An in-process upstream streams to a client that reads nothing: dropped by the API's 0.5 s window, one
    INFO line, the gateway's close in the access line. Before, it waited for uvicorn's (300 s here)."""
    caplog.set_level(logging.INFO)
    ended = threading.Event()  # set in the server's thread
    api = api_entry({"url": "asgi:", "app": streaming_app(ended)}, **API_SHORT)  # type: ignore[arg-type]
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH, **SERVER_WIDE)
    _, writer = await raw_client(server.port, deflate=False, sock=small_socket(server.port))  # reads nothing
    try:
        assert await asyncio.to_thread(ended.wait, BOUND)
        line = await access_line(caplog)
        assert "closed by gateway with 1006" in line, line
    finally:
        writer.transport.abort()
    assert len(_dropped(caplog)) == 1, [r.getMessage() for r in caplog.records]
    assert "0.5 s" in _dropped(caplog)[0]
    assert warnings_after_start(caplog) == []


async def test_a_passthrough_false_client_that_reads_nothing_is_dropped_and_the_upstream_gets_1001(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``passthrough: false`` to a network upstream: the API's window drops the client, the upstream gets 1001
    "client went away". Before, neither was closed within uvicorn's 300 s."""
    caplog.set_level(logging.INFO)
    saw: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def streamer(ws: ServerConnection) -> None:
        try:
            while True:
                await ws.send(MESSAGE)
        except ConnectionClosed as exc:
            if not saw.done():
                saw.set_result(exc.rcvd.code if exc.rcvd is not None else None)

    async with serve(streamer, "127.0.0.1", 0, ping_interval=None, compression=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        api = api_entry(f"ws://127.0.0.1:{port}/", passthrough=False, **API_SHORT)
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH, **SERVER_WIDE)
        _, writer = await raw_client(server.port, deflate=False, sock=small_socket(server.port))
        try:
            assert await asyncio.wait_for(saw, BOUND) == 1001
        finally:
            writer.transport.abort()
    line = await access_line(caplog)
    assert "closed by gateway with 1006" in line, line
    assert len(_dropped(caplog)) == 1


@pytest.mark.parametrize(
    ("ping_interval", "ping_timeout"),
    [(None, None), (0.1, None), (None, 0.25)],
    ids=["both-null", "timeout-null", "interval-null"],
)
async def test_a_null_api_keepalive_keeps_a_relay_client_that_reads_nothing(
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    ping_interval: float | None,
    ping_timeout: float | None,
) -> None:
    """Either null turns the stall rule off, as on the splice: a client that reads nothing stays open through
    six of uvicorn's 0.25 s windows, the application still sending to it. Before, uvicorn's window dropped it."""
    caplog.set_level(logging.INFO)
    ended = threading.Event()  # set in the server's thread
    keepalive = {"ping_interval": ping_interval, "ping_timeout": ping_timeout}
    api = api_entry({"url": "asgi:", "app": streaming_app(ended)}, **keepalive)  # type: ignore[arg-type]
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH, **SERVER_SHORTER)
    _, writer = await raw_client(server.port, deflate=False, sock=small_socket(server.port))  # reads nothing
    try:
        assert not await asyncio.to_thread(ended.wait, KEPT_FOR)  # still sending: the connection is open
        assert _dropped(caplog) == []
    finally:
        writer.transport.abort()
    assert await asyncio.to_thread(ended.wait, BOUND)  # the client's abort ends it
    line = await access_line(caplog)
    assert "closed by client" in line, line
    assert _dropped(caplog) == []


async def test_a_relay_client_that_answers_no_ping_is_closed_by_the_apis_keepalive(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The client reads but never answers a ping: pinged every ``ping_interval`` and closed with 1011 once a
    pong is ``ping_timeout`` late, the API's values. Before, uvicorn's 300 s: no ping within the bound."""
    caplog.set_level(logging.INFO)

    async def waiting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    api = api_entry({"url": "asgi:", "app": waiting_app}, **API_SHORT)  # type: ignore[arg-type]
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH, **SERVER_WIDE)
    reader, writer = await raw_client(server.port, deflate=False)
    try:
        opcode, _ = await asyncio.wait_for(next_frame(reader), BOUND)
        assert opcode == 0x9  # a ping, unanswered
        code, reason = await asyncio.wait_for(close_frame_in(reader), BOUND)
        assert (code, reason) == (1011, b"keepalive ping timeout")
    finally:
        writer.transport.abort()
    await access_line(caplog)  # the connection is over
    assert warnings_after_start(caplog) == []


async def test_a_connection_the_gateway_does_not_own_keeps_uvicorns_window(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The application's own WebSocket endpoint (no API's path) under the gateway's protocol: a client that
    reads nothing is dropped within uvicorn's 0.5 s window, whatever the APIs say."""
    caplog.set_level(logging.INFO)
    ended = threading.Event()  # set in the server's thread
    api = api_entry(path="/ws/other", ping_interval=None, ping_timeout=None)
    gateway = WebSocketGateway(streaming_app(ended, other_scopes=True), config={"apis": [api]})
    server = uvicorn_server(gateway, ws=PASSTHROUGH, **SERVER_SHORT)
    _, writer = await raw_client(server.port, deflate=False, sock=small_socket(server.port))  # reads nothing
    try:
        assert await asyncio.to_thread(ended.wait, BOUND)
    finally:
        writer.transport.abort()
    assert len(_dropped(caplog)) == 1
    assert "0.5 s" in _dropped(caplog)[0]
