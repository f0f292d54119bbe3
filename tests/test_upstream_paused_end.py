"""The websockets connector sees the upstream's end while the relay leaves its messages unread.

Its receive queue holds a few messages; past them it pauses reading, and what follows (the upstream's
close frame, its FIN) waits in the kernel. Nothing then told the relay that the upstream was over: a
client that read nothing, its backlog behind that queue, was held with the keepalive off for as long as
it lived. Now, while reading is paused, the connection looks at the TCP state every ``close_timeout``: once
the upstream's TCP is over, it reads the rest (no more than the kernel holds) and its end is seen
(``ended``), while its messages still wait for ``recv``, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.upstream.base import UpstreamClosed, UpstreamRequest
from asgi_ws_gateway.upstream.websockets_client import WebSocketsConnection, WebSocketsConnector
from support.rawhttp import accept_upstream, ws_frame

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the TCP state is Linux's TCP_INFO")

MESSAGES = 8
"""More than the connector's queue holds (4): its reading is paused before the close frame comes."""


@pytest_asyncio.fixture
async def closing_upstream() -> AsyncIterator[str]:
    """Sends ``MESSAGES`` messages, and once they are read, its close frame, then closes TCP at once."""

    async def push(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await accept_upstream(reader, writer)
            for n in range(MESSAGES):
                writer.write(ws_frame(0x1, f"m{n}".encode(), mask=False))
            await asyncio.sleep(0.3)  # Load, not synchronisation: the connector reads them and pauses
            writer.write(ws_frame(0x8, struct.pack("!H", 1000) + b"done", mask=False))
        writer.close()

    server = await asyncio.start_server(push, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()


async def test_a_paused_connection_sees_the_upstreams_end_and_still_delivers_its_messages(
    closing_upstream: str,
) -> None:
    """Before: ``ended`` stayed pending (the close frame and the FIN unread) until someone called ``recv``."""
    api = ApiConfig.model_validate(
        {"name": "x", "path": "/ws", "upstreams": [closing_upstream], "compression": None, "close_timeout": 0.2}
    )
    connection = await WebSocketsConnector(api, api.upstreams[0]).connect(
        UpstreamRequest(url=closing_upstream, headers=[], subprotocols=[], scope={})
    )
    assert isinstance(connection, WebSocketsConnection) and connection.ended is not None
    async with asyncio.timeout(10):  # a hang guard: the first look after the FIN is 0.2 s later
        await asyncio.shield(connection.ended)
    assert [await connection.recv() for _ in range(MESSAGES)] == [f"m{n}" for n in range(MESSAGES)]
    with pytest.raises(UpstreamClosed) as closed:
        await connection.recv()
    assert (closed.value.code, closed.value.reason, closed.value.by_peer) == (1000, "done", True)
    await connection.close(1000, "")
