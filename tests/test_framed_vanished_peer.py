"""The frame relay when one side is gone while the other's policy step waits: nothing piles up.

A step that waits (a delay, a Redis-backed limit) leaves its side unread, its frames held in the
assembler. When the other side went, the splice read that side again to see its close answer, and
every read was held behind the step: one connection grew a gateway by 300 MiB in 0.4 s, until
``close_timeout``. Now the step, whose result has nowhere to go, is cancelled and the side's frames
are dropped as they are read (its close frame still seen); and a side read while its step waits
stops being read past one frame (``MessageAssembler.hold_limit``). Fake transports for the sequences,
real uvicorn and a raw upstream for the memory.
"""

from __future__ import annotations

import asyncio
import struct
from typing import cast

from asgi_ws_gateway.messages.context import ConnectionContext, Direction, MessageHandler, WsMessage
from asgi_ws_gateway.messages.pipeline import MessagePolicySet
from asgi_ws_gateway.passthrough.frame_encoding import close_frame, encode_frame
from asgi_ws_gateway.passthrough.framed import FramedRelay
from asgi_ws_gateway.passthrough.raw_upstream import RawUpstream, _HandshakeReader
from asgi_ws_gateway.server import GatewayHTTPProtocol
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.policies import context
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, next_frame
from support.relay_fakes import FakeTransport
from support.servers import UvicornServer

MESSAGE = 65536
FLOOD = 256  # messages of MESSAGE bytes the upstream sends after the client went: 16 MiB
BOUND = 20.0  # seconds: a connection still open after this hangs (a failure, not a slow pass)
_UPGRADE = (b"GET /h HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip


class _Waits:
    """A message policy whose step waits for ever on the message ``slow``."""

    name = "waits"

    def attach(self, connection: ConnectionContext, direction: Direction) -> MessageHandler | None:
        def step(message: WsMessage) -> asyncio.Future[None] | None:
            return asyncio.get_running_loop().create_future() if message.data == "slow" else None

        return step


def _relay(*, inbound: bool = False, outbound: bool = False) -> tuple[FramedRelay, FakeTransport, FakeTransport]:
    client, upstream = FakeTransport(), FakeTransport()
    raw = RawUpstream(cast(asyncio.Transport, upstream), None, None, [], b"", _HandshakeReader())
    policies = MessagePolicySet([_Waits()] if inbound else [], [_Waits()] if outbound else [])
    framed = FramedRelay(raw, policies=policies, handshake=context("/ws/chat"), max_message_size=1000,
                         close_timeout=30.0)  # fmt: skip
    framed.client.connection_made(client)
    framed._start()
    return framed, client, upstream


def _text(data: str, *, mask: bool) -> bytes:
    return encode_frame(0x1, data.encode(), mask=mask)


async def test_a_vanished_client_cancels_the_upstreams_waiting_step_and_its_reads_are_dropped() -> None:
    """The upstream is read again for its answer: its messages are dropped as read, not held behind the step."""
    framed, client, upstream = _relay(outbound=True)
    framed.upstream.data_received(_text("slow", mask=False))
    step = framed.upstream.task
    assert isinstance(step, asyncio.Task) and not upstream.is_reading()
    framed.client.connection_lost(ConnectionResetError())
    assert framed.upstream.task is None and upstream.is_reading()  # cancelled before reading again
    for _ in range(200):
        framed.upstream.data_received(encode_frame(0x2, b"u" * 900, mask=False))
    assert framed.upstream.frames.buffered == 0
    assert bytes(upstream.written).startswith(close_frame(1001, "client went away", mask=True)[:2])
    framed.upstream.data_received(close_frame(1001, "", mask=False))  # its answer is seen
    assert upstream.is_closing() and not upstream.aborted
    await asyncio.sleep(0)
    assert step.cancelled()
    assert client.written == b""


async def test_a_vanished_upstream_cancels_the_clients_waiting_step_and_reads_it_to_its_answer() -> None:
    """The client's step has nowhere to go: cancelled; the client gets 1011 and is read to its answer."""
    framed, client, upstream = _relay(inbound=True)
    framed.client.data_received(_text("slow", mask=True))
    step = framed.client.task
    assert isinstance(step, asyncio.Task) and not client.is_reading()
    framed.upstream.connection_lost(ConnectionResetError())
    assert framed.client.task is None and client.is_reading() and not client.is_closing()
    framed.client.data_received(_text("late", mask=True) * 50)
    assert framed.client.frames.buffered == 0
    framed.client.data_received(close_frame(1011, "", mask=True))
    assert client.is_closing()
    assert upstream.written == b""
    await asyncio.sleep(0)
    assert step.cancelled()


async def test_a_side_read_while_its_step_waits_stops_being_read_past_one_frame() -> None:
    """The backstop: bytes of a read under way are held up to the largest frame, then the side is paused."""
    framed, client, _upstream = _relay(inbound=True)
    framed.client.data_received(_text("slow", mask=True))
    client.resume_reading()  # as if something read it again while the step waits
    frames = framed.client.frames
    frame = _text("x" * 500, mask=True)
    while client.is_reading():
        framed.client.data_received(frame)
        assert frames.buffered <= frames.hold_limit + len(frame)
    assert frames.buffered > frames.hold_limit
    framed.client.task.cancel()  # type: ignore[union-attr]


async def test_an_upstream_flooding_after_the_client_vanished_is_not_held_in_memory() -> None:
    """Real uvicorn: an outbound step delays, the client vanishes, the upstream sends 16 MiB and answers 1001.

    The gateway held all of it unread behind the step (+300 MiB in 0.4 s, measured), and the upstream's
    answer with it, until ``close_timeout`` reset the upstream. Now what it holds stays within one
    frame, and the answer, seen, ends the upstream's connection with a FIN."""
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        gateway_close = asyncio.create_task(close_frame_in(reader))
        frame = ws_frame(0x2, b"u" * MESSAGE, mask=False)
        for _ in range(FLOOD + 1):
            writer.write(frame)
            await writer.drain()
        code, _reason = await gateway_close
        writer.write(ws_frame(0x8, struct.pack("!H", code), mask=False))
        try:
            while await reader.read(65536):
                pass
            ended.set_result("eof")
        except ConnectionResetError:
            ended.set_result("reset")
        writer.close()

    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    delay = {"rate-limit-messages": {"messages": 1, "window": 60, "action": "delay"}}
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", message_policies={"outbound": [delay]},
                      max_message_size=2**20, close_timeout=5.0, ping_interval=None)  # fmt: skip
    gateway = ProbedGateway({"apis": [entry]})
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(_UPGRADE)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            assert (await next_frame(reader))[0] == 0x2  # the first message; the next waits 60 s
            (live,) = gateway.gateway.connections()
            relay = live.relay
            assert isinstance(relay, FramedRelay)
            writer.transport.abort()  # the client vanishes

            async def buffered() -> int:
                return relay.upstream.frames.buffered

            peak = 0
            async with asyncio.timeout(BOUND):
                while not ended.done():
                    peak = max(peak, await gateway.on_server(buffered))
                    await asyncio.sleep(0.005)
                await gateway.settle()
    assert peak <= relay.upstream.frames.hold_limit
    assert ended.result() == "eof"  # its answer was read: closed, not reset at close_timeout
