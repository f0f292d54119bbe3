"""A client that sends its close frame and then nothing, to an upstream that never answers a close: its
``limit-concurrency`` lease, measured (a review, 2026-12-06).

The cap holds: while the gateway waits for the upstream's answer, the client's lease still counts, so a
second connection of the same key is refused 429 and the upstream never has more connections of it than
the cap. The bound is the close wait's: on the splice and the frame relay the lease ends when the client's
side does, once the gateway's own answer (at the close wait's end, ``close_timeout`` after the close at
the least) is written to it and its lingering close begins; on the relay once the client's close is
read, the upstream's close frame sent (its close bounded by ``close_timeout``). Synchronised on what the
client reads, never on the clock: docs/security.md, "A client that closes and an upstream that does not".
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable

import pytest

from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import next_frame
from support.servers import UvicornFactory

ONE_SLOT = {"limit-concurrency": {"key": "everyone", "max": 1, "lease_ttl": 120}}
CLOSE_TIMEOUT = 1.0  # the second connection (a handshake, milliseconds) comes long before the close wait's first look


class _NeverAnswers:
    """A raw upstream that reads a close frame and never answers it, its connection left open."""

    def __init__(self) -> None:
        self.open = 0
        self.most = 0  # connections open at once, at most
        self.closes = 0  # close frames it was sent
        self.writers: list[asyncio.StreamWriter] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.open += 1
        self.most = max(self.most, self.open)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            while True:
                opcode, _ = await next_frame(reader)
                self.closes += opcode == 0x8
        self.open -= 1
        writer.close()


async def _connect(url: str) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("ws://").split("/", 1)[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /h HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    return int(head.split(b" ", 2)[1]), reader, writer


@pytest.mark.parametrize("fin", [False, True], ids=["close-only", "close-then-fin"])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_half_closed_clients_lease_counts_until_its_close_is_answered(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, fin: bool
) -> None:
    upstream = _NeverAnswers()
    _, url = gateway_before(
        await hostile(upstream), connector, uvicorn_server, close_timeout=CLOSE_TIMEOUT, policies=[ONE_SLOT]
    )
    writers: list[asyncio.StreamWriter] = []
    try:
        status, reader, writer = await _connect(url)
        writers.append(writer)
        assert status == 101
        writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
        if fin:
            writer.write_eof()
        if connector != "relay":  # the close wait has begun: the lease still counts
            second, _, other = await _connect(url)
            writers.append(other)
            assert second == 429
        opcode, payload = await asyncio.wait_for(next_frame(reader), 10 * CLOSE_TIMEOUT)
        assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1000))  # answered: the gateway's at the wait's end
        assert await asyncio.wait_for(reader.read(), 10 * CLOSE_TIMEOUT) == b""  # then its FIN: the lease is gone
        status, _, again = await _connect(url)
        writers.append(again)
        assert status == 101
        assert upstream.most == 1 if connector != "relay" else upstream.closes >= 1
    finally:
        for each in writers + upstream.writers:
            each.transport.abort()
