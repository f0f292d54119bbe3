"""End to end: frames a hostile client or upstream sends, against the splice, the frame relay and the relay.

Raw sockets play the attacker (a client library would not send these frames); the gateway is real
uvicorn with the gateway's protocol, and the other side a real upstream (``websockets``) or a raw
one. Each test names what the attack achieved before it was fixed.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import ClassVar

import pytest

from asgi_ws_gateway.loop_watch import BYTES_PER_TURN
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from support.access import access_line
from support.apps import echo_app
from support.configs import api_entry
from support.gateway import MIB, PASSTHROUGH, ProbedGateway, Stack, gateway_config
from support.hostile import CONNECTORS, Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, next_frame, raw_client
from support.servers import UvicornFactory, UvicornServer
from support.upstream import UpstreamServer

EMPTY_FINAL_BLOCK = b"\x03\x00"
"""A deflate stream of one empty final block (fixed Huffman codes): two bytes that end a stream."""


@pytest.fixture
def spliced(upstream: UpstreamServer) -> Iterator[Stack]:
    """The splice (the default path) in front of a permessage-deflate ``websockets`` upstream."""
    gateway = ProbedGateway(gateway_config(upstream))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        yield Stack(gateway, server, upstream)


# -- permessage-deflate: one frame, thousands of deflate streams ----------------------------------------


async def test_a_client_message_of_many_deflate_streams_is_1007(spliced: Stack) -> None:
    """The splice inflates a compressed message to hold it to the limit, and inflated what follows a
    final block as a new stream: 1 MiB of empty final blocks (524,288 streams) took ~0.9 s of the
    worker's event loop (another client's echo waited 889 ms; 5 MiB: 3.7 s), and was forwarded. A
    frame may end one deflate stream now: the client gets 1007, the upstream 1007, nothing else."""
    reader, writer = await raw_client(spliced.server.port)
    try:
        writer.write(ws_frame(0x2, EMPTY_FINAL_BLOCK * 65536, rsv=0x40))
        await writer.drain()
        code, reason = await asyncio.wait_for(close_frame_in(reader), 10)
        assert (code, reason) == (1007, b"invalid compressed data (a frame ends more than one deflate stream)")
    finally:
        writer.close()
    ((upstream_code, _),) = await spliced.upstream.wait_for_closes_async(1)
    assert upstream_code == 1007
    await spliced.gateway.settle()


async def test_a_message_of_one_deflate_stream_per_fragment_still_passes(spliced: Stack) -> None:
    """A sender that flushes with a final block (RFC 7692 §7.2.3.3) ends one stream per frame: valid."""
    reader, writer = await raw_client(spliced.server.port)
    try:
        fragments = [ws_frame(0x1, EMPTY_FINAL_BLOCK, fin=False, rsv=0x40)]
        fragments += [ws_frame(0x0, EMPTY_FINAL_BLOCK, fin=False) for _ in range(8)]
        fragments.append(ws_frame(0x0, EMPTY_FINAL_BLOCK))
        writer.write(b"".join(fragments) + ws_frame(0x8, struct.pack("!H", 1000)))
        await writer.drain()
        assert await asyncio.wait_for(close_frame_in(reader), 10) == (1000, b"")
    finally:
        writer.close()
    assert await spliced.upstream.wait_for_closes_async(1) == [(1000, "")]


async def test_an_upstream_message_of_many_deflate_streams_is_1007() -> None:
    """The other way: a hostile upstream's message of empty final blocks; it gets 1007, the client 1011."""
    closed: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, extensions=b"permessage-deflate")
        writer.write(ws_frame(0x2, EMPTY_FINAL_BLOCK * 65536, mask=False, rsv=0x40))
        closed.set_result(await close_frame_in(reader))
        writer.close()

    listener = await asyncio.start_server(hostile, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    gateway = ProbedGateway(gateway_config(f"ws://127.0.0.1:{port}"))
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            reader, writer = await raw_client(server.port)
            try:
                assert await asyncio.wait_for(close_frame_in(reader), 10) == (1011, b"upstream connection failed")
            finally:
                writer.close()
            code, reason = await asyncio.wait_for(closed, 10)
            assert (code, reason) == (1007, b"invalid compressed data (a frame ends more than one deflate stream)")
            await gateway.settle()


# -- fragments no size counts ---------------------------------------------------------------------------


async def _data_frames_until_close(reader: asyncio.StreamReader) -> tuple[int, int]:
    """The data frames a raw upstream reads before the close frame, and that frame's code."""
    frames = 0
    while True:
        opcode, payload = await next_frame(reader)
        if opcode == 0x8:
            return frames, struct.unpack("!H", payload[:2])[0]
        frames += opcode < 0x8


async def test_an_endless_message_of_empty_fragments_is_1009_at_the_fragment_floor() -> None:
    """The splice forwarded every empty fragment of a message that never ends: no size limit counts
    them, and a uvicorn upstream (``--ws websockets-sansio``, what ``auto`` picks) kept ~10 bytes per
    fragment (two million: +19.9 MB RSS), so a client grew a backend without bound through one
    message. Each fragment but the last counts FRAGMENT_FLOOR (64) bytes toward max_message_size
    now: the client gets 1009, the upstream 1001 after max_message_size / 64 fragments."""
    upstream: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        upstream.set_result(await _data_frames_until_close(reader))
        writer.close()

    listener = await asyncio.start_server(counting, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    gateway = ProbedGateway(gateway_config(f"ws://127.0.0.1:{port}", max_message_size=6400))
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            reader, writer = await raw_client(server.port, deflate=False)
            try:
                writer.write(ws_frame(0x1, b"", fin=False) + ws_frame(0x0, b"", fin=False) * 20_000)
                await writer.drain()
                code, _ = await asyncio.wait_for(close_frame_in(reader), 10)
                assert code == 1009
            finally:
                writer.close()
            assert await asyncio.wait_for(upstream, 10) == (100, 1001)  # 6400 / 64 fragments, then the close
            await gateway.settle()


FLOOR_LIMIT = 6400
"""An API's ``max_message_size``: 100 one-byte fragments count 99 * 64 + 1 bytes, 101 count 6,401."""


def _one_byte_fragments(count: int) -> bytes:
    """A binary message of ``count`` bytes in ``count`` one-byte fragments, as a client sends it."""
    frames = [ws_frame(0x2 if i == 0 else 0x0, b"x", fin=i == count - 1) for i in range(count)]
    return b"".join(frames)


async def _before_a_raw_upstream(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, **server: object
) -> tuple[ProbedGateway, int, asyncio.Future[tuple[bytes, int]]]:
    """A gateway whose API ``/ws/echo`` (``max_message_size``: FLOOR_LIMIT) reaches a raw upstream through
    ``connector``; its port, and what the upstream read: the data frames' payloads, joined, until the
    gateway's close frame (answered), and that frame's code."""
    heard: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        data = bytearray()
        while (frame := await next_frame(reader))[0] != 0x8:
            data += frame[1] if frame[0] < 0x8 else b""
        writer.write(ws_frame(0x8, frame[1], mask=False))
        heard.set_result((bytes(data), struct.unpack("!H", frame[1][:2])[0]))
        writer.close()

    api = api_entry(f"ws://127.0.0.1:{await hostile(upstream)}/", max_message_size=FLOOR_LIMIT, **CONNECTORS[connector])
    gateway = ProbedGateway({"apis": [api]})
    return gateway, uvicorn_server(gateway, ws=PASSTHROUGH, **server).port, heard


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize(("count", "delivered"), [(100, True), (101, False)], ids=["at-the-floor", "past-it"])
async def test_one_byte_fragments_count_64_bytes_on_every_connector(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    connector: str,
    count: int,
    delivered: bool,
) -> None:
    """A message of N one-byte fragments is delivered while N * 64 <= ``max_message_size``, and past it the
    client gets 1009 and the upstream 1001 and no whole message (the splice forwarded the fragments before
    the one past the limit), on every connector: the relay's client leg counted only the bytes."""
    gateway, port, heard = await _before_a_raw_upstream(hostile, uvicorn_server, connector)
    reader, writer = await raw_client(port, deflate=False)
    try:
        writer.write(_one_byte_fragments(count) + ws_frame(0x8, struct.pack("!H", 1000)))
        await writer.drain()
        code, _reason = await asyncio.wait_for(close_frame_in(reader), 10)
    finally:
        writer.close()
    data, upstream_code = await asyncio.wait_for(heard, 10)
    if delivered:
        assert (code, data, upstream_code) == (1000, b"x" * count, 1000)
    else:
        assert (code, upstream_code) == (1009, 1001)
        assert len(data) < count, f"{len(data)} of {count} bytes reached the upstream"
    await gateway.settle()


async def test_the_relays_client_leg_refuses_a_small_message_in_too_many_fragments(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 bytes in 1,000 one-byte fragments count 64,000 bytes, past a limit of 6,400. The relay's client
    leg (the gateway's server protocol) counted 1,000 and delivered the message the splice and the frame
    relay refuse: the client gets 1009 now, the upstream nothing of it (1001), the log one line."""
    caplog.set_level(logging.INFO)
    gateway, port, heard = await _before_a_raw_upstream(hostile, uvicorn_server, "relay", log_level="info")
    reader, writer = await raw_client(port, deflate=False)
    try:
        writer.write(_one_byte_fragments(1000) + ws_frame(0x8, struct.pack("!H", 1000)))
        await writer.drain()
        code, reason = await asyncio.wait_for(close_frame_in(reader), 10)
    finally:
        writer.close()
    assert code == 1009 and b"exceeds limit of 6400 bytes" in reason, (code, reason)  # websockets' words or ours
    assert await asyncio.wait_for(heard, 10) == (b"", 1001)
    assert "closed by gateway with 1009" in await access_line(caplog)
    faults = [r.getMessage() for r in caplog.records if "closed with" in r.getMessage()]
    assert len(faults) == 1 and "closed with 1009" in faults[0], faults
    await gateway.settle()


# -- the frame relay: what a side sends after its close frame -------------------------------------------

FLOOD = 64 * 1024 * 1024


async def _flood(writer: asyncio.StreamWriter) -> None:
    """Send ``FLOOD`` bytes (no valid frame among them: nothing after a close frame is read)."""
    chunk = bytes(1024 * 1024)
    for _ in range(FLOOD // len(chunk)):
        writer.write(chunk)
        await writer.drain()


async def _read_all(reader: asyncio.StreamReader) -> None:
    while await reader.read(1 << 16):
        continue


@pytest.mark.parametrize("sender", ["client", "upstream"])
async def test_what_a_side_sends_after_its_close_frame_is_not_kept(sender: str) -> None:
    """The frame relay (an API with message policies) kept every byte a side sent after its close
    frame, unread, until the other side answered the close or ``close_timeout`` passed: a client
    grew a gateway by 2.7 GB in 8 s. It is dropped as it arrives now, as the splice drops it."""
    flooded, measured = asyncio.Event(), asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        if sender == "upstream":
            writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
            await _flood(writer)
            flooded.set()
        drain = asyncio.create_task(_read_all(reader))  # reads everything; never answers a close frame
        await measured.wait()
        drain.cancel()
        writer.close()  # then leaves: the gateway ends the connection

    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    config = gateway_config(f"ws://127.0.0.1:{port}", close_timeout=60,
                            message_policies={"inbound": [{"limit-message-size": {"max": 4096}}]})  # fmt: skip
    gateway = ProbedGateway(config)
    tracemalloc.start()
    try:
        async with listener:
            with UvicornServer(gateway, ws=PASSTHROUGH) as server:
                _reader, writer = await raw_client(server.port, deflate=False)  # reads nothing
                before = tracemalloc.get_traced_memory()[0]
                if sender == "client":
                    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
                    await asyncio.wait_for(_flood(writer), 30)
                else:
                    await asyncio.wait_for(flooded.wait(), 30)  # the client reads nothing meanwhile
                await asyncio.sleep(0.2)
                kept = tracemalloc.get_traced_memory()[0] - before
                measured.set()
                writer.close()
                await gateway.settle()
    finally:
        tracemalloc.stop()
    assert kept < FLOOD // 4, f"{kept:,} bytes kept for {FLOOD:,} sent after a close frame"


# -- the relay under the gateway's protocol: a message in many fragments --------------------------------


async def _pong(reader: asyncio.StreamReader) -> None:
    """Read frames until a pong (the server answers pings itself, in order with what came before)."""
    while True:
        b0, b1 = await reader.readexactly(2)
        await reader.readexactly(b1 & 0x7F)
        if b0 & 0x0F == 0xA:
            return


async def test_a_message_in_tiny_fragments_costs_the_relay_its_size(upstream: UpstreamServer) -> None:
    """The gateway's protocol (uvicorn's sans-I/O one) kept an object per fragment: 256 KiB in 1-byte
    fragments took ~10 MB, and empty fragments, which no size limit counted, grew a connection without
    bound (4.45 million in 10 s: +31 MB). Fragments are joined as they come now: the message's size.
    (Each counts 64 bytes toward the limit, test above: 16 MiB lets these 131,072 through.)"""
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False, max_message_size=16 * MIB))
    tracemalloc.start()
    try:
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            reader, writer = await raw_client(server.port, deflate=False)
            before = tracemalloc.get_traced_memory()[0]
            writer.write(ws_frame(0x2, b"x", fin=False))
            for _ in range(16):  # 64 KiB in 131,072 fragments: 3.3 MB kept before, 62 KB now
                writer.write(ws_frame(0x0, b"x", fin=False) * 4096 + ws_frame(0x0, b"", fin=False) * 4096)
                await writer.drain()
            writer.write(ws_frame(0x9, b"read?"))
            await asyncio.wait_for(_pong(reader), 60)  # every fragment before the ping was read
            kept = tracemalloc.get_traced_memory()[0] - before
            writer.write(ws_frame(0x0, b"") + ws_frame(0x8, struct.pack("!H", 1000)))
            assert await asyncio.wait_for(close_frame_in(reader), 10) == (1000, b"")
            writer.close()
            await gateway.settle()
    finally:
        tracemalloc.stop()
    assert kept < 1024 * 1024, f"{kept:,} bytes for a message of 64 KiB in 131,072 fragments"


class _RecordingProtocol(GatewayWebSocketProtocol):
    """The gateway's protocol, recording the size of each read and of each piece websockets parses."""

    reads: ClassVar[list[int]] = []
    parsed: ClassVar[list[int]] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        receive_data = self.conn.receive_data

        def recorded(data: bytes | bytearray) -> None:
            self.parsed.append(len(data))
            receive_data(data)

        self.conn.receive_data = recorded  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        self.reads.append(len(data))
        super().data_received(data)


async def test_a_large_read_of_tiny_frames_is_parsed_a_slice_per_loop_turn() -> None:
    """websockets parses a read at once, ~20 µs a frame: 256 KiB of 1-byte frames held the event loop
    0.8 s (another client's echo waited as long). What the gateway's protocol parses in one turn is
    bounded now (BYTES_PER_TURN, ~0.1 s of tiny frames), and the message is whole, in order. (Its
    40,000 fragments count 64 bytes each toward ws_max_size: 2.56 MB.)"""
    _RecordingProtocol.reads.clear()
    _RecordingProtocol.parsed.clear()
    payload = bytes(i % 251 for i in range(40_000))
    frames = ws_frame(0x2, payload[:1], fin=False)
    frames += b"".join(ws_frame(0x0, payload[i : i + 1], fin=i == len(payload) - 1) for i in range(1, len(payload)))
    with UvicornServer(echo_app, ws=_RecordingProtocol, ws_max_size=4 * MIB) as server:  # type: ignore[arg-type]
        reader, writer = await raw_client(server.port, deflate=False)
        writer.write(frames)
        await writer.drain()
        assert await asyncio.wait_for(next_frame(reader), 30) == (0x2, payload)
        writer.close()
        await writer.wait_closed()  # close() only schedules the FIN, and the server's stop blocks this loop
    assert max(_RecordingProtocol.reads) > BYTES_PER_TURN, "no read was large: nothing was tested"
    assert max(_RecordingProtocol.parsed) <= BYTES_PER_TURN


# -- a refused client that is still sending --------------------------------------------------------------


@pytest.mark.parametrize("framed", [False, True], ids=["splice", "frame-relay"])
@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (ws_frame(0x2, bytes(8 * 1024 * 1024)), 1009, b"message too big"),
        (ws_frame(0x2, b"x", rsv=0x20) + ws_frame(0x2, bytes(8 * 1024 * 1024)), 1002, b"reserved bits must be 0"),
    ],
    ids=["oversize", "bad-frame"],
)
async def test_a_refused_client_still_sending_reads_its_close_code(
    upstream: UpstreamServer, framed: bool, frame: bytes, code: int, reason: bytes
) -> None:
    """The gateway closed a refused client's socket at its next read: with 8 MiB still coming, the
    kernel reset the connection and the client lost the close frame (a websockets client sending
    2 MiB over a 64 KiB limit saw 1006 once in five). What it still sends is read and dropped now,
    and the gateway half-closes it after the close frame: it reads the code, then EOF."""
    api = {"message_policies": {"inbound": [{"limit-message-size": {"max": 4096}}]}} if framed else {}
    gateway = ProbedGateway(gateway_config(upstream, **api))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await raw_client(server.port, deflate=False)
        try:
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), 10)  # all of it read by the gateway, none of it reset
            assert await asyncio.wait_for(close_frame_in(reader), 10) == (code, reason)
            assert await asyncio.wait_for(reader.read(), 10) == b""  # then the gateway's end of TCP
        finally:
            writer.close()
        (upstream_code, _reason), *_ = await upstream.wait_for_closes_async(1)
        assert upstream_code == (1001 if code == 1009 else code)
        await gateway.settle()
