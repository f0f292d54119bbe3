"""A client that closes and reads on, to an upstream that never answers and streams on: one close wait on
every connector (docs/security.md, "A client that closes and an upstream that does not").

What the upstream sends after the client's close frame is on its way to the client, and the client's taking
it in is the close wait's progress (docs/architecture.md: "a side that bytes are still on their way to took
some of them in since the last look"), until the wait's bounds: ``CLOSE_WAIT_LOOKS`` looks here (the stream
stays far below ``CLOSE_WAIT_BYTES``). The splice waited so (32 looks, 32 s at ``close_timeout: 1``); the frame
relay dropped what the upstream sent once the close began on a direction with message policies, so the
client took in nothing and the wait ended at its second look (2 s), and forwarded it on a direction without
policies (32 looks). The relay's server answers the client's close at once: nothing more can go to the
client, and the upstream gets the client's close frame and ``close_timeout`` to answer it. Counted in the
upstream's message numbers and the close wait's looks (its log line), never on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway.relay.close_wait import CLOSE_WAIT_LOOKS
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import next_frame
from support.servers import UvicornFactory

CLOSE_TIMEOUT = 0.25
VARIANTS = {**CONNECTORS, "frame relay (inbound policies)": {}}
"""Each connector; the frame relay also with its policies on the client's messages only."""
INBOUND_ONLY = {"message_policies": {"inbound": [{"limit-message-size": {"max": 65536}}]}}
LOOK = re.compile(r"closing handshake timed out at the close wait's look (\d+) \(([^)]*)\)")


class _StreamsOn:
    """A raw upstream that sends numbered text messages (~0.5 MB/s) for good and never answers a close
    frame: ``after`` is the first number it sent once it had read the client's close frame, ``closes`` the
    codes of the close frames it read."""

    def __init__(self) -> None:
        self.sent = 0
        self.after: int | None = None
        self.closes: list[bytes] = []
        self.ended = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            feed = asyncio.create_task(self._feed(writer))
            try:
                while True:
                    opcode, payload = await next_frame(reader)
                    if opcode == 0x8:
                        self.closes.append(payload[:2])
                        if self.after is None:
                            self.after = self.sent + 1
            finally:
                feed.cancel()
        self.ended.set()
        writer.transport.abort()

    async def _feed(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                self.sent += 1
                writer.write(ws_frame(0x1, b"%d " % self.sent + b"u" * 1000, mask=False))
                await writer.drain()
                await asyncio.sleep(0.002)  # Load, not synchronisation: a steady stream


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("ws://").split("/", 1)[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /h HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _close_then_read_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[list[int], bytes]:
    """Once the stream is on, send a close frame and read to the end: the numbers of the messages read after
    it, and the code of the close frame read (b"": none, the connection aborted)."""
    first, _ = await asyncio.wait_for(next_frame(reader), 10)
    assert first == 0x1
    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
    numbers: list[int] = []
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            opcode, payload = await asyncio.wait_for(next_frame(reader), 60)
            if opcode == 0x8:
                assert await asyncio.wait_for(reader.read(), 60) == b""
                return numbers, payload[:2]
            numbers.append(int(payload.split(b" ", 1)[0]))
    return numbers, b""


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_a_client_reading_an_unanswering_upstreams_stream_past_its_close_is_waited_for_to_the_bound(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    variant: str,
) -> None:
    """The client closes and reads on, the upstream streams on and never answers: the client takes in what
    the upstream sent after reading the close, and the close wait ends at ``CLOSE_WAIT_LOOKS`` looks (its
    bounds), on the splice and the frame relay whichever direction has policies; the relay answers the
    client's close at once and closes the upstream with its code."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    upstream = _StreamsOn()
    connector = variant if variant in CONNECTORS else "splice"
    extra = INBOUND_ONLY if variant not in CONNECTORS else {}
    _, url = gateway_before(await hostile(upstream), connector, uvicorn_server, close_timeout=CLOSE_TIMEOUT, **extra)
    reader, writer = await _connect(url)
    try:
        numbers, code = await _close_then_read_on(reader, writer)
        await asyncio.wait_for(upstream.ended.wait(), 60)  # the gateway dropped it
        assert upstream.after is not None and upstream.closes == [struct.pack("!H", 1000)]
        if connector == "relay":
            assert code == struct.pack("!H", 1000)  # its own close echoed, by the server, at once
            return
        fed = [number for number in numbers if number >= upstream.after]
        assert fed, f"none of {len(numbers)} messages read after the close was sent after the upstream read it"
        looks = {(int(found[1]), found[2]) for found in map(LOOK.search, caplog.messages) if found}
        assert looks == {(CLOSE_WAIT_LOOKS, "its bounds")}, looks
    finally:
        writer.transport.abort()
        for each in upstream.writers:
            each.transport.abort()
