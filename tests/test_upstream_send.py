"""The websockets connector's send: its hot path is in use, and it keeps backpressure and close semantics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from asgi_ws_gateway.config import ApiConfig
from asgi_ws_gateway.upstream import UpstreamClosed, UpstreamRequest, WebSocketsConnection, WebSocketsConnector
from support.upstream import UpstreamServer


async def _open(url: str) -> WebSocketsConnection:
    api = ApiConfig.model_validate({"name": "echo", "path": "/ws", "upstreams": [url], "compression": None})
    connection = await WebSocketsConnector(api, api.upstreams[0]).connect(
        UpstreamRequest(url=url, headers=[], subprotocols=[], scope={})
    )
    assert isinstance(connection, WebSocketsConnection)
    return connection


@pytest.fixture
async def stalled_upstream() -> AsyncIterator[Server]:
    """A websockets server that accepts and then never reads."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()  # reads nothing: frames pile up until TCP pushes back

    async with serve(handler, "127.0.0.1", 0, max_queue=1, close_timeout=0.5) as server:
        yield server


async def test_send_hot_path_is_in_use_with_the_installed_websockets(upstream: UpstreamServer) -> None:
    connection = await _open(upstream.url("/echo"))
    assert connection._fast_send
    await connection.send("text")
    await connection.send(b"\x00bytes")
    assert [await connection.recv(), await connection.recv()] == ["text", b"\x00bytes"]
    await connection.close(1000, "")


async def test_send_waits_while_the_upstream_does_not_read(stalled_upstream: Server) -> None:
    port = stalled_upstream.sockets[0].getsockname()[1]
    connection = await _open(f"ws://127.0.0.1:{port}/")
    chunk = b"x" * 65536
    sent = 0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2):
            for _ in range(4000):  # 256 MiB: far more than the socket buffers hold
                await connection.send(chunk)
                sent += 1
    assert 0 < sent < 4000
    connection._ws.transport.abort()


async def test_send_after_close_raises_upstream_closed(upstream: UpstreamServer) -> None:
    connection = await _open(upstream.url("/echo"))
    await connection.close(1000, "done")
    with pytest.raises(UpstreamClosed):
        await connection.send("late")
