"""The websockets connector's send: its hot path is in use, and it keeps backpressure and close semantics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.upstream.base import UpstreamClosed, UpstreamRequest
from asgi_ws_gateway.upstream.websockets_client import WebSocketsConnection, WebSocketsConnector
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


def _open_protocol() -> ClientProtocol:
    """A sans-I/O client protocol after a real opening handshake with a sans-I/O server."""
    client, server = ClientProtocol(parse_uri("ws://upstream.invalid/")), ServerProtocol()
    client.send_request(client.connect())
    server.receive_data(b"".join(client.data_to_send()))
    (request,) = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    client.receive_data(b"".join(server.data_to_send()))
    client.events_received()
    assert client.state is State.OPEN
    return client


class _ResetWhilePaused:
    """The parts of a websockets 14 client connection the hot path uses (no ``close_exc`` of its own).

    Its write fills the buffer (``paused``), then the peer resets: ``drain`` raises, and ``abort``
    does what ``connection_lost`` does (EOF to the protocol, the waiter done).
    """

    def __init__(self) -> None:
        self.protocol = _open_protocol()
        self.paused = False
        self.send_in_progress = None
        self.transport = self
        self.connection_lost_waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subprotocol = None
        self.response = None
        self.aborted = False

    def send_data(self) -> None:
        self.protocol.data_to_send()
        self.paused = True

    async def drain(self) -> None:
        raise ConnectionResetError("connection reset by peer")

    def abort(self) -> None:
        self.aborted = True
        self.protocol.receive_eof()
        self.connection_lost_waiter.set_result(None)


@pytest.mark.parametrize("data", ["text", b"bytes"])
async def test_reset_while_paused_ends_as_upstream_closed_1006(data: str | bytes) -> None:
    """The hot path's paused-then-reset branch: a clean ``UpstreamClosed``, not an AttributeError."""
    ws = _ResetWhilePaused()
    connection = WebSocketsConnection(cast(ClientConnection, ws))
    assert connection._fast_send
    with pytest.raises(UpstreamClosed) as closed:
        await connection.send(data)
    assert (closed.value.code, closed.value.reason, closed.value.by_peer) == (1006, "", False)
    assert ws.aborted
