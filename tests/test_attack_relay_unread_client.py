"""Attack: on the relay, a client that reads nothing is dropped; one that reads slowly is kept.

The splice drops a side that takes in nothing of what is queued to it for ``ping_timeout``. The relay's
client leg is the gateway's server protocol, which had no such rule: a client whose process was
stopped while its upstream streamed to it stayed open with MBs queued to it until it was killed
(uvicorn's keepalive ping waited behind the full buffer, and the close after its late pong waited for
that buffer to drain). The protocol now judges a client its writes wait for by the same probe as the
splice (bytes its TCP stack acknowledged), every ``ping_timeout`` (the API's). A client reading slowly but
steadily makes progress, so it is never dropped, nor failed for a pong that waits behind MBs.

Raw sockets with a small receive buffer play the clients (no SIGSTOP needed: they just do not read).
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
from support.rawws import raw_client, read_slowly
from support.servers import UvicornFactory
from support.unread import MESSAGE, SMALL_BUFFER, small_socket, streaming_app

KEEPALIVE: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 0.5}
"""The API's keepalive, which the relay's client leg takes its stall window from."""


def _dropped(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the client read nothing" in r.getMessage()]


async def test_an_in_process_upstream_streaming_to_a_client_that_reads_nothing_ends(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The client is dropped with one INFO line, the application's send fails and it returns. Before,
    the connection stayed open (and the application blocked in its send) as long as the client lived."""
    caplog.set_level(logging.INFO)
    ended = threading.Event()  # set in the server's thread
    upstream = {"url": "asgi:", "app": streaming_app(ended)}
    api = api_entry(upstream, **KEEPALIVE)  # type: ignore[arg-type]
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
    _, writer = await raw_client(server.port, deflate=False, sock=small_socket(server.port))  # reads nothing
    try:
        assert await asyncio.to_thread(ended.wait, 20)
        line = await access_line(caplog)  # the gateway's close, as the splice records a stall
        assert "closed by gateway with 1006" in line, line
    finally:
        writer.transport.abort()
    assert len(_dropped(caplog)) == 1, [r.getMessage() for r in caplog.records]
    assert warnings_after_start(caplog) == []


async def test_a_network_upstream_streaming_to_a_relay_client_that_reads_nothing_gets_1001(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``passthrough: false`` to a network upstream: the client is dropped, the upstream gets 1001
    "client went away" as from the splice. Before, neither was ever closed."""
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
        api = api_entry(f"ws://127.0.0.1:{port}/", passthrough=False, **KEEPALIVE)
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
        _, writer = await raw_client(server.port, deflate=False, sock=small_socket(server.port))
        try:
            assert await asyncio.wait_for(saw, 20) == 1001
        finally:
            writer.transport.abort()
    line = await access_line(caplog)
    assert "closed by gateway with 1006" in line, line
    assert len(_dropped(caplog)) == 1


RATE = 50_000
"""Bytes a second the slow client takes in: steady, far slower than the upstream sends."""
SLOW_KEEPALIVE: dict[str, Any] = {"ping_interval": 0.5, "ping_timeout": 1.5}
"""For the slow reader: a timeout a loaded 2-core machine's scheduling cannot exceed between its reads
(0.5 s dropped it once in a CI run, its reading thread starved)."""
TAKEN = int(3 * SLOW_KEEPALIVE["ping_timeout"] * RATE)
"""What it takes in: over three ping_timeouts."""


def _read_slowly(port: int, ended: threading.Event) -> str | None:
    """A client with a small receive buffer reads TAKEN bytes at RATE, answering pings as any client does;
    returns how the connection ended, if it did (None: it read them all, and the application was still
    sending to it then, asked before this client closes its socket: ``ended`` not set)."""

    def application_ended() -> str | None:
        return "the application ended" if ended.is_set() else None

    return read_slowly(port, taken=TAKEN, rate=RATE, buffer_size=SMALL_BUFFER, when_read=application_ended)[1]


async def test_a_relay_client_reading_slowly_but_steadily_is_kept(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """It reads at 50 KB/s through three ping_timeouts, answering pings: the writes to it stay paused all
    along (and its pong waits behind MBs) but it makes progress, so it is neither dropped nor failed."""
    caplog.set_level(logging.INFO)
    ended = threading.Event()  # set in the server's thread
    upstream = {"url": "asgi:", "app": streaming_app(ended)}
    gateway = WebSocketGateway(not_found, config={"apis": [api_entry(upstream, **SLOW_KEEPALIVE)]})  # type: ignore[arg-type]
    server = uvicorn_server(gateway, ws=PASSTHROUGH)
    assert await asyncio.to_thread(_read_slowly, server.port, ended) is None
    assert "closed by client with 1006" in await access_line(caplog)  # it went, when done reading
    assert _dropped(caplog) == []
