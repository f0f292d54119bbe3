"""End to end through the frame relay: an API with message policies under the gateway's protocol.

What every message policy does is tested in both the relay and the frame relay in
``test_e2e_messages.py`` (drops, closes, transforms, delays, Redis-shared limits); here, what only
the frame relay does with frames: fragments and control frames, UTF-8, sizes, backpressure.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from asgi_ws_gateway.passthrough.assembler import MessageAssembler
from asgi_ws_gateway.passthrough.framed import FramedRelay
from asgi_ws_gateway.relay.pumps import Relay
from asgi_ws_gateway.relay.stats import RelayStats
from support.clients import connect, expect_close
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import handshake
from support.rawhttp import ws_frame as frame
from support.servers import UvicornServer
from support.upstream import SilentUpstream, UpstreamServer

SCHEMA = {"type": "object", "required": ["a"]}
POLICIES = {"inbound": [{"validate-message": {"schema": SCHEMA}}], "outbound": [{"limit-message-size": {"max": 4096}}]}


@contextmanager
def framed(
    upstream: UpstreamServer | str, target: str = "/echo", top: dict[str, Any] | None = None, **api: Any
) -> Iterator[tuple[ProbedGateway, int]]:
    """The gateway (message policies on its one API, ``/ws/echo``) under its own protocol; yields it and its port."""
    url = upstream + target if isinstance(upstream, str) else upstream.url(target)
    entry = {"name": "echo", "path": "/ws/echo", "upstreams": [url], "message_policies": POLICIES, **api}
    gateway = ProbedGateway({"apis": [entry], **(top or {})})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        yield gateway, server.port


class RawClient:
    """A client that writes frames as given and reads the gateway's frames back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = MessageAssembler(RelayStats(sizes_in=[0] * 32, sizes_out=[0] * 32), inbound=False,
                                       max_message_size=1 << 24)  # fmt: skip

    async def next(self) -> tuple[int, Any]:
        """The next message or control frame from the gateway: ``(opcode, data)`` (close: its code and reason)."""
        async with asyncio.timeout(5):
            while (event := self.frames.next()) is None:
                assert self.frames.error is None, self.frames.error
                data = await self.reader.read(65536)
                assert data, "the gateway closed the TCP connection"
                self.frames.feed(data)
        if event[0] == 0x8:
            return 0x8, self.frames.close
        return event[0], event[1]


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake("/ws/echo"))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()


async def test_fragmented_message_with_interleaved_pings_passes_the_schema_whole(upstream: UpstreamServer) -> None:
    """The policy sees the reassembled message; the pings between its fragments are answered in order."""
    with framed(upstream) as (gateway, port):
        async with raw_client(port) as client:
            client.writer.write(frame(0x1, b'{"a":', fin=False) + frame(0x9, b"p1") + frame(0x0, b" [1,", fin=False)
                                + frame(0x9, b"p2") + frame(0x0, b' "\xc3\xa9"]}'))  # fmt: skip
            assert await client.next() == (0xA, b"p1")
            assert await client.next() == (0xA, b"p2")
            assert await client.next() == (0x1, '{"a": [1, "é"]}')
            (live,) = gateway.gateway.connections()
            assert isinstance(live.relay, FramedRelay)
            assert live.stats.policy_actions == {}
            client.writer.write(frame(0x8, struct.pack("!H", 1000)))
            assert await client.next() == (0x8, (1000, ""))
        await gateway.settle()
    assert (live.stats.messages_in, live.stats.messages_out) == (1, 1)


async def test_invalid_utf8_text_closes_the_client_and_the_upstream_with_1007(upstream: UpstreamServer) -> None:
    with framed(upstream) as (gateway, port):
        async with raw_client(port) as client:
            client.writer.write(frame(0x1, b'{"a": "\xff"}'))
            assert await client.next() == (0x8, (1007, "invalid UTF-8"))
        assert await upstream.wait_for_closes_async(1) == [(1007, "invalid UTF-8")]
        await gateway.settle()


async def test_message_over_max_message_size_closes_sender_1009_and_upstream_1001(upstream: UpstreamServer) -> None:
    with framed(upstream, max_message_size=1000) as (gateway, port):
        async with await connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            await ws.send('{"a": 1}')
            assert await ws.recv() == '{"a": 1}'
            await ws.send('{"a": "' + "x" * 1000 + '"}')
            assert await expect_close(ws) == (1009, "message too big")
        assert await upstream.wait_for_closes_async(1) == [(1001, "client message too big")]
        await gateway.settle()


async def test_compression_is_not_negotiated_and_messages_are_inspected(upstream: UpstreamServer) -> None:
    """The upstream negotiates deflate when offered; for a framed API the gateway offers it nothing."""
    with framed(upstream) as (gateway, port):
        async with await connect(f"ws://127.0.0.1:{port}/ws/echo", compression="deflate") as ws:
            assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("not json")
            assert "validate-message" in str(await ws.recv())  # dropped with an error reply
            (live,) = gateway.gateway.connections()
            assert await gateway.gateway.send_to_connection(live.id, "from the gateway")
            assert await ws.recv() == "from the gateway"
        assert upstream.handshakes[-1].header("sec-websocket-extensions") is None
        await gateway.settle()


async def test_a_client_that_does_not_read_pauses_the_upstream(upstream: UpstreamServer) -> None:
    """Backpressure: with the client not reading, the upstream is no longer read, and the gateway's
    buffer towards the client stays near its high-water mark instead of growing with the flood."""
    with framed(upstream, "/flood/4000") as (gateway, port):
        async with raw_client(port):  # reads nothing

            async def state() -> tuple[bool, int, int]:
                (live,) = gateway.gateway.connections()
                relay = live.relay
                assert isinstance(relay, FramedRelay)
                return relay.upstream.transport.is_reading(), relay.client.transport.get_write_buffer_size(), \
                    live.stats.messages_out  # fmt: skip

            # The flood never ends: unless the upstream stays paused, the count never stops growing. The
            # kernel's socket buffers may still take a few resumes before they are full (loopback buffers
            # grow with use), so wait for a 0.5 s window in which it was paused and nothing more was read.
            async with asyncio.timeout(10):
                while True:
                    reading, buffered, count = await gateway.on_server(state)
                    if reading:
                        await asyncio.sleep(0.05)
                        continue
                    await asyncio.sleep(0.5)
                    later = await gateway.on_server(state)
                    if not later[0] and later[2] == count:
                        break  # paused, and nothing more read from the upstream for 0.5 s
            # At most the high-water mark plus what one read brought (uvloop reads up to 256 KiB at a
            # time, and every whole frame of a read is passed on): bounded, not growing with the flood.
            assert max(buffered, later[1]) < 64 * 1024 + 256 * 1024 + 8 * 1024
        await gateway.settle()


async def test_per_message_telemetry_events_keep_the_relay(upstream: UpstreamServer) -> None:
    """``telemetry.message_events`` samples messages in the relay's pumps: such a gateway relays."""
    with framed(upstream, top={"telemetry": {"message_events": 0.5}}) as (gateway, port):
        async with await connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            await ws.send('{"a": 1}')
            assert await ws.recv() == '{"a": 1}'
            (live,) = gateway.gateway.connections()
            assert isinstance(live.relay, Relay)
        await gateway.settle()


async def test_dead_upstream_is_found_by_keepalive_and_the_client_gets_1011() -> None:
    async with SilentUpstream() as dead:
        with framed(f"ws://127.0.0.1:{dead.port}", "/x", ping_interval=0.2, ping_timeout=0.2) as (gateway, port):
            async with await connect(f"ws://127.0.0.1:{port}/ws/echo", ping_interval=None) as ws:
                (live,) = gateway.gateway.connections()
                assert isinstance(live.relay, FramedRelay)
                assert await expect_close(ws) == (1011, "upstream connection failed")
            await gateway.settle()
    assert (live.stats.closed_by, live.stats.close_code) == ("upstream", 1006)
