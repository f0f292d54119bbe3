"""End to end: one connection's flood must not hold the event loop that serves every other.

Each test floods one connection of a real gateway (real uvicorn, the gateway's protocol, a real
upstream) with a read of many tiny messages or frames and records, on the server's loop, how much of
it one callback handled: a ticker re-scheduled with ``call_soon`` counts the loop's turns, each read
counts as one more (uvloop runs I/O callbacks and ``call_soon`` ones in separate phases of a turn),
and what the gateway handles is stamped with the count when it ran. Wall-clock times are never asserted (the
numbers measured under ``asgi-ws-gateway run`` are in docs/security.md); the bound, the messages'
integrity and their order are.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.frames import Frame
from websockets.protocol import Protocol

from asgi_ws_gateway._types import Data
from asgi_ws_gateway.frame_rules import frame_rule_broken
from asgi_ws_gateway.held_pings import ANSWERED_PER_READ
from asgi_ws_gateway.loop_watch import BYTES_PER_TURN, FRAMES_PER_TURN, INFLATED_PER_TURN, MESSAGES_PER_TURN
from asgi_ws_gateway.messages.pipeline import MessagePipeline
from asgi_ws_gateway.passthrough import frames
from asgi_ws_gateway.passthrough.framed import _FramedSide
from asgi_ws_gateway.passthrough.sides import Side
from asgi_ws_gateway.server.server_protocol import _ServerProtocol
from asgi_ws_gateway.upstream.deflate_streams import DeflateStreams
from asgi_ws_gateway.upstream.websockets_client import WebSocketsConnection
from asgi_ws_gateway.upstream.websockets_protocol import GatewayClientConnection, _ClientProtocol
from support.gateway import PASSTHROUGH, ProbedGateway, gateway_config
from support.hostile import Handler
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, ended_after_the_close, next_frame, raw_client
from support.servers import UvicornServer
from support.upstream import UpstreamServer

MESSAGES = 20_000
"""Tiny JSON messages sent in one write: ~270 KB, reads of up to 256 KiB on the gateway's side."""


class LoopTurns:
    """Counts the turns of the loop it runs on: one ``call_soon`` callback per turn."""

    def __init__(self) -> None:
        self.turn = 0
        self._running = False

    def start(self) -> None:
        self._running = True
        asyncio.get_running_loop().call_soon(self._tick)

    async def started(self) -> None:
        """:meth:`start`, as a coroutine for ``ProbedGateway.on_server``."""
        self.start()

    def stop(self) -> None:
        self._running = False

    def _tick(self) -> None:
        self.turn += 1
        if self._running:
            asyncio.get_running_loop().call_soon(self._tick)


@pytest.fixture
def turns() -> Iterator[LoopTurns]:
    ticker = LoopTurns()
    yield ticker
    ticker.stop()


async def _each_back_then_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expected: list[tuple[int, bytes]]
) -> None:
    """The raw client gets each of ``expected`` (opcode, payload) in order, then closes cleanly."""
    for frame in expected:
        assert await asyncio.wait_for(next_frame(reader), 30) == frame
    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
    assert await asyncio.wait_for(close_frame_in(reader), 10) == (1000, b"")
    await ended_after_the_close(reader, writer)


async def test_a_read_of_many_tiny_messages_runs_the_policies_a_share_per_loop_turn(
    upstream: UpstreamServer, turns: LoopTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frame relay ran every message of a read through the policies in one callback: 256 KiB of
    tiny JSON messages (37,000) held the loop ~0.1 s with a size limit, a rate limit and a schema,
    and far longer with heavier policies; another client's echo waited 1.1-1.3 s. At most
    MESSAGES_PER_TURN messages a turn now, and every message arrives, in order."""
    stamps: list[int] = []
    process_now = MessagePipeline.process_now

    def stamped(self: MessagePipeline, data: Data, size: int) -> object:
        stamps.append(turns.turn)
        return process_now(self, data, size)

    monkeypatch.setattr(MessagePipeline, "process_now", stamped)
    data_received = _FramedSide.data_received

    def counted(self: _FramedSide, data: bytes) -> None:
        turns.turn += 1
        data_received(self, data)

    monkeypatch.setattr(_FramedSide, "data_received", counted)
    policies = {"inbound": [
        {"limit-message-size": {"max": 65536}},
        {"rate-limit-messages": {"messages": 1_000_000, "window": 1}},
        {"validate-message": {"schema": {"type": "object", "required": ["n"]}}},
    ]}  # fmt: skip
    gateway = ProbedGateway(gateway_config(upstream, message_policies=policies))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await raw_client(server.port, deflate=False)
        await gateway.on_server(turns.started)
        writer.write(b"".join(ws_frame(0x1, b'{"n":%d}' % i) for i in range(MESSAGES)))
        await writer.drain()
        await _each_back_then_closed(reader, writer, [(0x1, b'{"n":%d}' % i) for i in range(MESSAGES)])
    assert len(stamps) == MESSAGES
    most = max(Counter(stamps).values())
    assert most <= MESSAGES_PER_TURN, f"{most:,} messages through the policies in one callback"


async def test_the_relays_pump_forwards_a_share_of_queued_messages_per_loop_turn(
    upstream: UpstreamServer, turns: LoopTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's pump awaits receive() and the upstream's send(), neither of which waits while
    messages are queued and the socket takes them: a turn's 32 KiB of 1-byte messages (4,681) went
    upstream in one step, ~0.1-0.15 s. At most MESSAGES_PER_TURN now, every message in order."""
    stamps: list[int] = []
    send = WebSocketsConnection.send

    async def stamped(self: WebSocketsConnection, data: Data) -> None:
        stamps.append(turns.turn)
        await send(self, data)

    monkeypatch.setattr(WebSocketsConnection, "send", stamped)
    payloads = [bytes([i % 256]) for i in range(MESSAGES)]
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await raw_client(server.port, deflate=False)
        await gateway.on_server(turns.started)
        writer.write(b"".join(ws_frame(0x2, p) for p in payloads))
        await writer.drain()
        await _each_back_then_closed(reader, writer, [(0x2, p) for p in payloads])
    assert len(stamps) == MESSAGES
    most = max(Counter(stamps).values())
    assert most <= MESSAGES_PER_TURN, f"{most:,} messages sent upstream in one turn"


# -- the splice ----------------------------------------------------------------------------------------


class Scans:
    """The size of each read a splice's side got, and how many frames its scanner read in each
    callback (a read, or a turn's share of one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[int] = []
        self.frames: Counter[int] = Counter()
        self._callback = 0
        data_received, rule_broken = Side.data_received, frame_rule_broken

        def read(side: Side, data: bytes) -> None:
            self.reads.append(len(data))
            self._callback += 1
            data_received(side, data)

        def scan(*header: Any) -> str | None:  # called once per frame header the scanner reads
            self.frames[self._callback] += 1
            return rule_broken(*header)

        monkeypatch.setattr(Side, "data_received", read)
        monkeypatch.setattr(frames, "frame_rule_broken", scan)  # the name the scanner looks up

    def check(self, smallest_frame: int) -> None:
        assert max(self.reads) > BYTES_PER_TURN, "no read was large: nothing was tested"
        most = max(self.frames.values())
        assert most <= BYTES_PER_TURN // smallest_frame, f"{most:,} frames scanned in one callback"


def _compressed(payloads: list[bytes]) -> bytes:
    """Each payload as one compressed message of a client (permessage-deflate, context kept)."""
    deflate = zlib.compressobj(wbits=-15)
    return b"".join(
        ws_frame(0x2, (deflate.compress(p) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=0x40) for p in payloads
    )


async def test_a_read_of_many_tiny_compressed_messages_is_spliced_a_slice_per_loop_turn(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The splice scanned a whole read in one callback: 256 KiB of tiny compressed messages (29,000,
    an inflate call each, to hold them to the size limit) held the loop ~0.1 s, tiny plain ones ~70 ms.
    BYTES_PER_TURN bytes a turn now, and every message arrives, in order."""
    scans = Scans(monkeypatch)
    payloads = [b"%d" % i for i in range(MESSAGES)]
    gateway = ProbedGateway(gateway_config(upstream))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await raw_client(server.port, deflate=True)
        await _echoed_in_order(reader, writer, payloads)
        await gateway.settle()
    scans.check(smallest_frame=7)  # 6 bytes of header (masked), at least 1 of payload


async def test_an_upstreams_read_of_many_tiny_messages_is_spliced_a_slice_per_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other way: a hostile upstream's 20,000 tiny messages in one write, scanned a slice a turn."""
    scans = Scans(monkeypatch)
    payloads = [b"%d" % i for i in range(MESSAGES)]

    async def flooding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flood = b"".join(ws_frame(0x2, p, mask=False) for p in payloads)
        await accept_upstream(reader, writer, then=flood)
        await close_frame_in(reader)
        writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        writer.close()

    await _receive_every_message(flooding, payloads)
    scans.check(smallest_frame=3)


# -- the relay's upstream leg ---------------------------------------------------------------------------


async def test_an_upstreams_read_of_many_tiny_frames_is_parsed_a_slice_per_loop_turn_by_the_relay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """websockets' client parses a read whole, ~10 µs a frame: a hostile upstream's 256 KiB of tiny
    messages held the relay's loop 0.25 s (of pings: 0.45 s), another client's echo up to 1.4 s. What
    it parses in one turn is bounded now (BYTES_PER_TURN), and every message arrives, in order."""
    reads: list[int] = []
    parsed: list[int] = []
    data_received, receive_data = GatewayClientConnection.data_received, _ClientProtocol.receive_data

    def read(connection: GatewayClientConnection, data: bytes) -> None:
        reads.append(len(data))
        data_received(connection, data)

    def parse(protocol: _ClientProtocol, data: bytes) -> None:
        parsed.append(len(data))
        receive_data(protocol, data)

    monkeypatch.setattr(GatewayClientConnection, "data_received", read)
    monkeypatch.setattr(_ClientProtocol, "receive_data", parse)
    payloads = [b"%d" % i for i in range(MESSAGES)]

    async def flooding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=b"".join(ws_frame(0x2, p, mask=False) for p in payloads))
        await close_frame_in(reader)
        writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        writer.close()

    await _receive_every_message(flooding, payloads, passthrough=False)
    assert max(reads) > BYTES_PER_TURN, "no read was large: nothing was tested"
    assert max(parsed) <= BYTES_PER_TURN, f"{max(parsed):,} bytes of the upstream's frames parsed in one callback"


async def _receive_every_message(flooding: Handler, payloads: list[bytes], **api: Any) -> None:
    """A raw client of a gateway in front of the raw upstream ``flooding``: it gets each of ``payloads``,
    in order, then closes cleanly (nothing left behind: ``settle``)."""
    listener = await asyncio.start_server(flooding, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    gateway = ProbedGateway(gateway_config(f"ws://127.0.0.1:{port}", **api))
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            reader, writer = await raw_client(server.port, deflate=False)
            await _each_back_then_closed(reader, writer, [(0x2, p) for p in payloads])
            await gateway.settle()


async def test_the_rest_of_a_read_is_read_out_after_the_client_vanished_on_the_frame_relay() -> None:
    """The frame relay reads a share of a read's messages per turn and the rest at the next turn, and
    stops reading an upstream whose client reads nothing. A client that stopped reading, then
    vanished: the flooding upstream must be read out, since its answer to the gateway's 1001 is behind
    the flood. A next turn's resume took the gone client for one that still read nothing and left the
    upstream unread for good when no later share resumed it: the connection waited for the close
    timeout (30 s here). That depends on where the last pause fell: 1 run in 6 failed before."""
    big = ws_frame(0x2, bytes(1 << 20), mask=False)  # 24 of them overfill the way to the client: it pauses
    tiny = ws_frame(0x2, b"0123456789abcdef", mask=False) * 4096  # 72 KiB, 4,096 messages: many turns' shares
    blocked, answered = asyncio.Event(), asyncio.Event()

    async def flooding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)

        async def flood() -> None:
            writer.write(big * 24)
            while True:
                writer.write(tiny)
                if writer.transport.get_write_buffer_size() > len(tiny):
                    blocked.set()  # the gateway's socket buffers are full: it stopped reading this side
                await writer.drain()

        flooder = asyncio.create_task(flood())
        code, _reason = await close_frame_in(reader)  # the gateway's 1001, read while the flood is stuck
        flooder.cancel()
        writer.write(ws_frame(0x8, struct.pack("!H", code), mask=False))
        with contextlib.suppress(OSError):
            await writer.drain()  # reaches the gateway only once it reads the backlog out
            answered.set()
        writer.close()

    listener = await asyncio.start_server(flooding, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    size_limit = {"outbound": [{"limit-message-size": {"max": 2 << 20}}]}
    gateway = ProbedGateway(gateway_config(f"ws://127.0.0.1:{port}", message_policies=size_limit, close_timeout=30))
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            _reader, writer = await raw_client(server.port, deflate=False)
            await asyncio.wait_for(blocked.wait(), 10)  # this client reads nothing: backpressure to the upstream
            writer.transport.abort()
            await asyncio.wait_for(answered.wait(), 10)
            await gateway.settle()  # 5 s, while the close timeout is 30 s


async def test_the_relays_pump_forwards_an_inflated_share_of_queued_messages_per_loop_turn(
    upstream: UpstreamServer, turns: LoopTurns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted in messages alone, a turn's share was ~30 MB when the messages came compressed: ~1 KB on
    the wire each, 1 MB to send (compress again) upstream, 32 of them in a slice the protocol parsed.
    One client held the worker's loop (an echo beside it went from 1.5 ms to 1.6 s). The pumps end a
    turn's share at INFLATED_PER_TURN bytes too; every message arrives, in order."""
    stamps: Counter[int] = Counter()
    send = WebSocketsConnection.send

    async def stamped(self: WebSocketsConnection, data: Data) -> None:
        stamps[turns.turn] += len(data)
        await send(self, data)

    monkeypatch.setattr(WebSocketsConnection, "send", stamped)
    size, count = 1_000_000, 40
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await raw_client(server.port, deflate=True)
        await gateway.on_server(turns.started)
        payloads = [bytes([i]) * size for i in range(count)]
        await _echoed_in_order(reader, writer, payloads)
    assert sum(stamps.values()) == size * count
    most = max(stamps.values())
    assert most <= INFLATED_PER_TURN + size, f"{most:,} bytes sent upstream in one turn"


# -- the relay's parsers, by what they inflate ----------------------------------------------------------


async def _echoed_in_order(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payloads: list[bytes]) -> None:
    """Send ``payloads`` compressed in one write; each comes back, in order; then a clean close."""
    writer.write(_compressed(payloads))
    await writer.drain()
    inflate = zlib.decompressobj(wbits=-15)
    for expected in payloads:
        opcode, payload = await asyncio.wait_for(next_frame(reader), 30)
        assert (opcode, inflate.decompress(payload + b"\x00\x00\xff\xff")) == (0x2, expected)
    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
    assert await asyncio.wait_for(close_frame_in(reader), 10) == (1000, b"")
    await ended_after_the_close(reader, writer)


class InflatedPerParse:
    """Bytes of compressed messages a relay leg's websockets parser inflated in each call it got (one
    callback: a read, or a turn's share of one)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, protocol: type[Protocol]) -> None:
        self.inflated: list[int] = [0]
        self.parsing = False  # in a call of ``protocol``'s: the other leg's inflation is not counted
        receive_data, decode = protocol.receive_data, DeflateStreams.decode

        def parse(conn: Protocol, data: bytes) -> None:
            self.inflated.append(0)
            self.parsing = True
            try:
                receive_data(conn, data)
            finally:
                self.parsing = False

        def inflate(extension: DeflateStreams, frame: Frame, *, max_size: int | None = None) -> Frame:
            decoded = decode(extension, frame, max_size=max_size)
            if frame.rsv1 and self.parsing:
                self.inflated[-1] += len(decoded.data)
            return decoded

        monkeypatch.setattr(protocol, "receive_data", parse)
        monkeypatch.setattr(DeflateStreams, "decode", inflate)

    def check(self, sent: int, largest: int) -> None:
        """Everything inflated (``sent`` bytes), at most INFLATED_PER_TURN and one message (``largest``) a call."""
        assert sum(self.inflated) == sent
        most = max(self.inflated)
        assert most <= INFLATED_PER_TURN + largest, f"{most:,} bytes inflated in one callback"


async def test_a_read_of_highly_compressed_messages_is_parsed_an_inflated_share_per_loop_turn_by_the_relay(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's client leg is websockets' parser, fed a read BYTES_PER_TURN bytes a turn: 32 KiB of ~1 KB
    compressed messages (1 MB each inflated) was ~32 MB of inflation in one callback, and a healthy
    client's echo on the same worker waited 0.4-0.6 s. The parser now stops after the frame that takes a
    callback past INFLATED_PER_TURN, the rest parsed next turn; every message arrives, in order."""
    inflated = InflatedPerParse(monkeypatch, _ServerProtocol)
    size, count = 1_000_000, 40
    # The upstream agrees to compression: under the gateway's protocol the client's mirrors it.
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await raw_client(server.port, deflate=True)
        payloads = [bytes([i]) * size for i in range(count)]
        await _echoed_in_order(reader, writer, payloads)
        await gateway.settle()
    inflated.check(sent=size * count, largest=size)


async def test_an_upstreams_read_of_highly_compressed_messages_is_parsed_an_inflated_share_per_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other way: the relay's upstream leg (websockets' client, fed BYTES_PER_TURN bytes a turn) inflated
    a hostile upstream's 32 KiB of such messages in one callback too. It stops the same way now."""
    inflated = InflatedPerParse(monkeypatch, _ClientProtocol)
    size, count = 1_000_000, 40
    payloads = [bytes([i]) * size for i in range(count)]
    deflate = zlib.compressobj(wbits=-15)
    flood = b"".join(
        ws_frame(0x2, (deflate.compress(p) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=0x40, mask=False)
        for p in payloads
    )

    async def flooding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, extensions=b"permessage-deflate", then=flood)
        await close_frame_in(reader)
        writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        writer.close()

    await _receive_every_message(flooding, payloads, passthrough=False)
    inflated.check(sent=size * count, largest=size)


# -- the relay's two legs: frames per turn, one pong a read ----------------------------------------------


PINGS = 20_000
"""Empty-ish pings in one write (2-7 bytes each): 32 KiB of them was ~6,000-16,000 frames, each answered,
in one callback of the relay's websockets parser."""


class FramesPerParse:
    """How many frames a relay leg's websockets parser took in each call it got (one callback: a read, or a
    turn's share of one), held pings included."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, protocol: type[Protocol]) -> None:
        self.frames: list[int] = []
        receive_data, recv_frame = protocol.receive_data, protocol.recv_frame

        def parse(conn: Protocol, data: bytes | bytearray) -> None:
            self.frames.append(0)
            receive_data(conn, data)

        def counted(conn: Protocol, frame: Frame) -> None:
            self.frames[-1] += 1
            recv_frame(conn, frame)

        monkeypatch.setattr(protocol, "receive_data", parse)
        monkeypatch.setattr(protocol, "recv_frame", counted)

    def check(self, pongs: list[bytes], last_ping: bytes) -> None:
        """At most FRAMES_PER_TURN frames a call, ANSWERED_PER_READ pongs and one a call, the latest ping's last."""
        assert sum(self.frames) > PINGS, "the flood was not parsed: nothing was tested"
        most = max(self.frames)
        assert most <= FRAMES_PER_TURN, f"{most:,} frames parsed in one callback"
        most_pongs = len(self.frames) * (ANSWERED_PER_READ + 1)
        assert len(pongs) <= most_pongs, f"{len(pongs):,} pongs for {len(self.frames):,} reads"
        assert pongs[-1] == last_ping  # the latest ping of all is answered (RFC 6455 §5.5.3)


async def test_an_upstreams_flood_of_pings_and_tiny_messages_is_parsed_a_share_of_frames_per_turn_by_the_relay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile upstream's 20,000 pings then tiny messages, right after the 101: the relay's upstream leg
    parsed 32 KiB a turn, ~16,000 frames, and answered each ping (twice the parsing): 30 such upstreams held
    another API's handshake and echo on the same worker 3-6 s. Now FRAMES_PER_TURN frames a turn, and past a
    read's ANSWERED_PER_READ pings its latest answered once; every message arrives, in order."""
    parsed = FramesPerParse(monkeypatch, _ClientProtocol)
    pings = [b"%d" % i for i in range(PINGS)]
    payloads = [b"m%d" % i for i in range(MESSAGES // 4)]
    flood = b"".join(ws_frame(0x9, p, mask=False) for p in pings)
    flood += b"".join(ws_frame(0x2, p, mask=False) for p in payloads)
    pongs: list[bytes] = []

    async def flooding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=flood)
        while (frame := await next_frame(reader))[0] != 0x8:  # the gateway's pongs, then its close
            if frame[0] == 0xA:
                pongs.append(frame[1])
        writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        writer.close()

    await _receive_every_message(flooding, payloads, passthrough=False)
    parsed.check(pongs, last_ping=pings[-1])


async def test_a_clients_flood_of_pings_and_tiny_messages_is_parsed_a_share_of_frames_per_turn_by_the_relay(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way: the relay's client leg (the gateway's protocol, websockets' parser fed BYTES_PER_TURN
    bytes a turn) took a hostile client's 32 KiB of pings in one callback too, each answered with a write of
    its own. It stops the same way now, and past a read's ANSWERED_PER_READ pings answers its latest once."""
    parsed = FramesPerParse(monkeypatch, _ServerProtocol)
    pings = [b"%d" % i for i in range(PINGS)]
    payloads = [b"m%d" % i for i in range(MESSAGES // 4)]
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False))
    pongs: list[bytes] = []
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        reader, writer = await raw_client(server.port, deflate=False)
        writer.write(b"".join(ws_frame(0x9, p) for p in pings) + b"".join(ws_frame(0x2, p) for p in payloads))
        await writer.drain()
        echoed: list[bytes] = []
        while len(echoed) < len(payloads):  # the last echo comes after the last pong: its message followed the ping
            opcode, payload = await asyncio.wait_for(next_frame(reader), 30)
            (pongs if opcode == 0xA else echoed).append(payload)
        assert echoed == payloads
        writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
        assert await asyncio.wait_for(close_frame_in(reader), 10) == (1000, b"")
        await ended_after_the_close(reader, writer)
        await gateway.settle()
    parsed.check(pongs, last_ping=pings[-1])
