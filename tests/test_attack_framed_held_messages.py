"""The frame relay when a side ends while a policy step of its direction waits: what it sent still arrives.

A step that waits (``rate-limit-messages`` with ``action: delay``, a Redis-backed limit) holds that
side's frames in its assembler. When the side then ended (its last messages, its close frame and its
TCP close all read meanwhile), the splice took it for a side that vanished: everything held was
dropped, the waiting message, those after it and the side's close frame with its code, and the other
side got 1011 (or 1001) instead. An upstream that sent 10 messages and closed with 4001 left its
client with 3 messages and 1011. Now what it sent before it went is delivered in order once the steps
finish, then the closing goes on as the splice's (its close frame, code and reason; with none, 1011 or
1001 after its messages), within ``close_timeout`` of its end. Real uvicorn, real ``websockets``
peers (raw ones where a peer must leave without a close frame). Last, the splice's ``write_close`` for
a side whose peer vanished inside a frame: half-closed and read out, no longer reset.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from asgi_ws_gateway.passthrough.framed import FramedRelay
from asgi_ws_gateway.relay.stats import RelayStats
from support.clients import connect, expect_close
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.servers import UvicornServer

MESSAGES = 10
DELAY = {"rate-limit-messages": {"messages": 3, "window": 0.4, "action": "delay"}}
"""Messages 4, 7 and 10 each wait for a new window: three steps that wait, in turn."""
FOREVER = {"rate-limit-messages": {"messages": 2, "window": 60, "action": "delay"}}
"""Message 3 waits a minute: longer than any test."""
BOUND = 20.0  # seconds: a test still waiting after this hangs (a failure, not a slow pass)

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def websockets_upstream(handler: Handler) -> AsyncIterator[str]:
    """A ``websockets`` upstream running ``handler``; yields its URL. It ends its TCP connection
    0.05 s after its own close frame when no answer comes (``close_timeout``): while the step waits.
    Its keepalive pings, every 0.05 s (answered or not), have the gateway write to a client that left,
    and so see it gone (a side not read, as behind a step, is seen to end only when written to)."""
    async with serve(
        handler, "127.0.0.1", 0, close_timeout=0.05, ping_interval=0.05, ping_timeout=None, compression=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@asynccontextmanager
async def raw_upstream(script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                       ) -> AsyncIterator[str]:  # fmt: skip
    """A raw upstream: the handshake, then ``script``; yields its URL."""

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await script(reader, writer)

    listener = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    async with listener:
        yield f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}/"


@asynccontextmanager
async def gateway_for(url: str, *, close_timeout: float = 5.0, **policies: list[dict[str, Any]]
                      ) -> AsyncIterator[tuple[ProbedGateway, int]]:  # fmt: skip
    """The gateway with one API, ``/h``, whose message policies (``inbound``, ``outbound``) make it framed."""
    entry = api_entry(url, name="h", path="/h", message_policies=policies, close_timeout=close_timeout,
                      ping_interval=None)  # fmt: skip
    gateway = ProbedGateway({"apis": [entry]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        yield gateway, server.port


async def receive_all(ws: ClientConnection) -> tuple[list[str], tuple[int, str]]:
    """Every message the client gets, then the close frame it gets ((1006, "") for none)."""
    got: list[str] = []
    async with asyncio.timeout(BOUND):
        try:
            while True:
                message = await ws.recv()
                assert isinstance(message, str)
                got.append(message)
        except ConnectionClosed as exc:
            return got, (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")


def framed_stats(gateway: ProbedGateway) -> RelayStats:
    """The stats of the gateway's one connection (on the frame relay)."""
    (live,) = gateway.gateway.connections()
    assert isinstance(live.relay, FramedRelay)
    return live.stats


def sent(n: int = MESSAGES, start: int = 0) -> list[str]:
    return [f"m{i}" for i in range(start, n)]


async def until_upstream_gone(gateway: ProbedGateway, ws: ClientConnection) -> FramedRelay:
    """Wait until the gateway has seen the upstream end (a client's ping each turn: its reading paused
    behind the step, the upstream is seen to end when the gateway writes to it); returns the relay."""
    (live,) = gateway.gateway.connections()
    relay = live.relay
    assert isinstance(relay, FramedRelay)

    async def gone() -> bool:
        return not relay.upstream.open

    async with asyncio.timeout(BOUND):
        while not await gateway.on_server(gone):
            await ws.ping()
            await asyncio.sleep(0.02)
    return relay


async def waiting_steps(gateway: ProbedGateway) -> int:
    """Policy steps of the frame relay still running on the server's loop (none once it is over)."""

    async def count() -> int:
        return sum(getattr(t.get_coro(), "__qualname__", "") == "_FramedSide._finish" for t in asyncio.all_tasks())

    return await gateway.on_server(count)


async def burst_then_close(
    ws: ServerConnection | ClientConnection, messages: list[str], code: int, reason: str
) -> None:
    """Send ``messages`` and a close frame in one TCP segment (TCP_CORK), as a burst that arrives
    whole: the gateway reads it all before the step waits (a side not read meanwhile, what is left in
    the kernel's buffer when it is seen to end is gone with its socket, whatever the gateway does)."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    for message in messages:
        await ws.send(message)
    asyncio.get_running_loop().call_later(0.01, sock.setsockopt, socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    await ws.close(code, reason)  # (its close frame is written at once; uncorked 0.01 s later)


async def sends_then_closes(ws: ServerConnection) -> None:
    await burst_then_close(ws, sent(), 4001, "upstream done")  # no answer within 0.05 s: its TCP connection ends


async def test_an_upstream_that_closes_while_its_messages_wait_has_them_all_and_its_close_delivered() -> None:
    """Outbound delay: the client gets all 10 messages, then 4001 and its reason (it got 3 and 1011)."""
    async with websockets_upstream(sends_then_closes) as url, gateway_for(url, outbound=[DELAY]) as (gateway, port):
        async with await connect(f"ws://127.0.0.1:{port}/h") as ws:
            assert [await ws.recv() for _ in range(3)] == sent(3)  # the 4th waits for the next window
            stats = framed_stats(gateway)
            await until_upstream_gone(gateway, ws)
            got, close = await receive_all(ws)
        await gateway.settle()
    assert got == sent(start=3), close
    assert close == (4001, "upstream done")
    assert (stats.closed_by, stats.close_code, stats.close_reason) == ("upstream", 4001, "upstream done")


async def test_a_client_that_closes_and_leaves_while_its_messages_wait_has_them_all_and_its_close_delivered() -> None:
    """Inbound delay: the upstream gets all 10 messages, then 4002 and its reason (it got 3 and 1001)."""
    received: list[str] = []
    closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def records(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                assert isinstance(message, str)
                received.append(message)
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        closed.set_result((rcvd.code, rcvd.reason) if rcvd else (1006, ""))

    async with websockets_upstream(records) as url, gateway_for(url, inbound=[DELAY]) as (gateway, port):
        ws = await connect(f"ws://127.0.0.1:{port}/h", close_timeout=0.05)
        await burst_then_close(ws, sent(), 4002, "client done")  # no answer within 0.05 s: it leaves
        assert ws.protocol.close_rcvd is None  # it left before its messages were through
        async with asyncio.timeout(BOUND):
            code = await closed
        await gateway.settle()
    assert received == sent()
    assert code == (4002, "client done")


async def test_an_upstream_that_leaves_without_a_close_frame_has_its_messages_delivered_then_1011() -> None:
    """Raw upstream: 10 messages, half a frame, its TCP close: the client gets the 10, then 1011."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(ws_frame(0x1, m.encode(), mask=False) for m in sent()))
        writer.write(ws_frame(0x1, b"never whole", mask=False)[:5])
        writer.close()

    async with raw_upstream(script) as url, gateway_for(url, outbound=[DELAY]) as (gateway, port):
        async with await connect(f"ws://127.0.0.1:{port}/h") as ws:
            assert [await ws.recv() for _ in range(3)] == sent(3)
            await until_upstream_gone(gateway, ws)
            got, close = await receive_all(ws)
        await gateway.settle()
    assert got == sent(start=3), close
    assert close == (1011, "upstream connection failed")


async def test_a_client_that_leaves_without_a_close_frame_has_its_messages_delivered_then_1001() -> None:
    """Raw client: 10 messages then its TCP close: the upstream gets the 10, then 1001."""
    received: list[str] = []
    closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def pings() -> None:  # (the gateway sees the client gone when it writes them to it)
            while True:
                writer.write(ws_frame(0x9, b"", mask=False))
                await asyncio.sleep(0.05)

        pinging = asyncio.create_task(pings())
        got: list[tuple[int, bytes]] = []
        buffer = b""
        while not any(opcode == 0x8 for opcode, _ in got) and (data := await reader.read(65536)):
            got, buffer = _frames(buffer + data, got)
        pinging.cancel()
        received.extend(payload.decode() for opcode, payload in got if opcode == 0x1)
        close = next((payload for opcode, payload in got if opcode == 0x8), None)
        closed.set_result((struct.unpack("!H", close[:2])[0], close[2:].decode()) if close else (1006, ""))
        writer.close()

    async with raw_upstream(script) as url, gateway_for(url, inbound=[DELAY]) as (gateway, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake("/h"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(b"".join(ws_frame(0x1, m.encode()) for m in sent()))
        await writer.drain()
        writer.close()  # its FIN, no close frame
        async with asyncio.timeout(BOUND):
            code = await closed
        await gateway.settle()
    assert received == sent()
    assert code == (1001, "client went away")


def _frames(buffer: bytes, got: list[tuple[int, bytes]]) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole (masked) frames at the start of ``buffer`` added to ``got``, and the rest."""
    while len(buffer) >= 6:
        length = buffer[1] & 0x7F
        if length >= 126:
            raise AssertionError("short frames only")
        if len(buffer) < 6 + length:
            break
        key, payload = buffer[2:6], buffer[6 : 6 + length]
        got.append((buffer[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(payload))))
        buffer = buffer[6 + length :]
    return got, buffer


async def test_the_messages_of_a_side_gone_are_dropped_after_close_timeout_with_1011_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bound: a step still waiting ``close_timeout`` after the upstream's end: the rest is dropped, 1011."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.passthrough.framed")
    async with (
        websockets_upstream(sends_then_closes) as url,
        gateway_for(url, close_timeout=0.5, outbound=[FOREVER]) as (gateway, port),
    ):
        async with await connect(f"ws://127.0.0.1:{port}/h") as ws:
            assert [await ws.recv() for _ in range(2)] == sent(2)
            await until_upstream_gone(gateway, ws)
            got, close = await receive_all(ws)
        await gateway.settle()
        assert await waiting_steps(gateway) == 0
    assert got == []
    assert close == (1011, "upstream connection failed")
    assert any(r.levelno == logging.INFO and "gave up" in r.getMessage() for r in caplog.records), caplog.text


async def test_a_policy_that_closes_while_a_gone_sides_messages_are_delivered_closes_the_other_side() -> None:
    """limit-message-size closes on the upstream's 6th message, reached once the upstream is gone."""
    size = {"limit-message-size": {"max": 100, "action": "close"}}

    async def sends_a_big_one(ws: ServerConnection) -> None:
        messages = ["x" * 200 if i == 5 else message for i, message in enumerate(sent())]
        await burst_then_close(ws, messages, 4001, "upstream done")

    async with websockets_upstream(sends_a_big_one) as url, gateway_for(url, outbound=[DELAY, size]) as (gateway, port):
        async with await connect(f"ws://127.0.0.1:{port}/h") as ws:
            assert [await ws.recv() for _ in range(3)] == sent(3)
            await until_upstream_gone(gateway, ws)
            got, close = await receive_all(ws)
        await gateway.settle()
    assert got == sent(5, start=3), close
    assert close == (1001, "upstream message too big")  # the policy's close for the sender's other side


async def test_the_client_leaving_while_a_gone_upstreams_messages_wait_ends_the_connection() -> None:
    """Both ends gone: the waiting step is cancelled, nothing waits for it (a minute) or close_timeout."""
    async with (
        websockets_upstream(sends_then_closes) as url,
        gateway_for(url, close_timeout=60.0, outbound=[FOREVER]) as (gateway, port),
    ):
        ws = await connect(f"ws://127.0.0.1:{port}/h")
        assert [await ws.recv(), await ws.recv()] == sent(2)
        stats = framed_stats(gateway)
        await until_upstream_gone(gateway, ws)
        assert await waiting_steps(gateway) == 1
        ws.transport.abort()
        await gateway.settle()
        assert await waiting_steps(gateway) == 0
    assert stats.closed_by == "upstream"  # it went first (and its close frame never went on)


async def test_the_gateway_closing_while_a_gone_upstreams_messages_wait_closes_the_client_with_its_code() -> None:
    """A drain (``relay.close``) during the wait: the client gets the gateway's close, the rest is dropped."""
    async with (
        websockets_upstream(sends_then_closes) as url,
        gateway_for(url, close_timeout=60.0, outbound=[FOREVER]) as (gateway, port),
    ):
        async with await connect(f"ws://127.0.0.1:{port}/h") as ws:
            assert [await ws.recv(), await ws.recv()] == sent(2)
            relay = await until_upstream_gone(gateway, ws)

            async def drain() -> None:
                await relay.close(1001, "going away", 1001, "going away")

            await gateway.on_server(drain)
            assert await expect_close(ws) == (1001, "going away")
        await gateway.settle()
        assert await waiting_steps(gateway) == 0


async def test_a_client_refused_after_its_upstream_vanished_mid_frame_is_read_out_not_reset() -> None:
    """The splice (``Side.write_close``, the peer gone inside a frame): the client's bad frame no longer
    closes its socket, which reset it at its next bytes; what it still sends is read and dropped."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(ws_frame(0x2, b"u" * 1000, mask=False)[:104])  # its header and 100 bytes of 1000
        await writer.drain()
        writer.close()

    async with raw_upstream(script) as url:
        entry = api_entry(url, name="h", path="/h", passthrough=True, ping_interval=None)
        gateway = ProbedGateway({"apis": [entry]})
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(handshake("/h"))
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            (live,) = gateway.gateway.connections()
            assert not isinstance(live.relay, FramedRelay)  # spliced
            async with asyncio.timeout(BOUND):
                got = await reader.read()  # the frame cut short, then the gateway's FIN (no close frame fits)
            assert len(got) == 104
            writer.write(ws_frame(0x1, b"x", rsv=0x40))  # a bad frame: RSV1, no extension
            for _ in range(40):  # still sending (acks, say): a reset would fail these writes
                writer.write(ws_frame(0x2, b"a" * 1024))
                await writer.drain()
                await asyncio.sleep(0.005)
            writer.close()
            await gateway.settle()
