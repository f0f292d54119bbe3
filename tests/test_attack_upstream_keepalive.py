"""Attack: the keepalive blames the side that is really silent, and says so without an ERROR.

An upstream that answers no ping is a peer's fault, not the gateway's: one INFO line, the client
closed with 1011, no ERROR and no traceback (on the relay, websockets' keepalive logged "keepalive
ping failed" with an AssertionError's traceback per connection). The access line says the upstream
sent no close frame (1006), not that it closed with the gateway's own 1011.

A side the gateway stopped reading (because the other side reads nothing: backpressure) cannot
answer a ping in time: its pong waits behind the data the gateway does not read. The splice charges
that silence to nobody; it drops the side whose socket does not drain once a write to it stays stalled
longer than ``ping_timeout``, and closes the other side with a close frame.

A stall is no progress, though, not writes paused: a side that reads slowly but steadily keeps the
gateway's writes to it paused for long (the transport resumes only once the kernel's send buffer,
MBs, frees space in large gulps), and was dropped as "read nothing" after ``ping_timeout``; its pong,
behind MBs queued, was late too. The access line records a stall as the gateway's close, which
passive health does not count against the upstream.

A side sending is alive, whether its pong came or not: its pong cannot leave before the end of the
frame it is sending. The relay's upstream leg went by the pong alone: an upstream sending one message
as a single frame over a slow link for longer than ``ping_timeout`` was dropped with 1011, its message
lost, where the splice and the frame relay kept it (as they keep a client uploading so).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.websockets_protocol import GatewayClientConnection
from support.access import access_line, warnings_after_start
from support.clients import connect
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, accept_upstream_blocking, ws_frame
from support.rawws import next_frame, raw_client, read_slowly, upgrade_blocking
from support.servers import UvicornFactory

KEEPALIVE: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 0.5, "close_timeout": 0.5}


async def _hung_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Completes the handshake, then reads and drops everything: it never answers a ping."""
    await accept_upstream(reader, writer)
    while await reader.read(1 << 16):
        pass
    writer.close()


SLOW_MESSAGE = bytes(range(97, 123)) * 40  # 1,040 bytes


async def _to_the_close(reader: asyncio.StreamReader) -> None:
    """The frames ``reader`` gets, to a close frame or the end."""
    with contextlib.suppress(asyncio.IncompleteReadError):
        while (await next_frame(reader))[0] != 0x8:
            pass


async def _sends_one_frame_slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One text frame, 80 bytes of it every 0.1 s (1.3 s, past ``ping_timeout`` several times: no pong
    can leave meanwhile), then its close; what the gateway sends is read and dropped up to its close answer
    (or its EOF), and the connection closed then, as a server does (the relay's client waits for that)."""
    drained = None
    try:
        await accept_upstream(reader, writer, then=ws_frame(1, SLOW_MESSAGE, mask=False)[:4])
        drained = asyncio.ensure_future(_to_the_close(reader))  # the pings, the close answer
        for start in range(0, len(SLOW_MESSAGE), 80):
            writer.write(SLOW_MESSAGE[start : start + 80])
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(ws_frame(8, b"\x03\xe8", mask=False))
        await writer.drain()
        async with asyncio.timeout(5):
            await drained
    except (OSError, TimeoutError):
        pass  # dropped by the gateway (the old relay): the test says so
    finally:
        if drained is not None:
            drained.cancel()
        writer.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_an_upstream_sending_one_frame_slowly_is_alive_though_its_pong_cannot_come(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    port = await hostile(_sends_one_frame_slowly)
    _gateway, url = gateway_before(port, connector, uvicorn_server, ping_interval=0.1, ping_timeout=0.2)
    async with await connect(url) as ws:
        assert await ws.recv() == SLOW_MESSAGE.decode()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


@pytest.mark.parametrize("passthrough", [False, True], ids=["relay", "splice"])
async def test_an_upstream_that_answers_no_ping_is_dropped_with_one_info_line_and_no_error(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, passthrough: bool
) -> None:
    """The client gets 1011; the log has the gateway's INFO line, no ERROR, no traceback."""
    caplog.set_level(logging.INFO)
    listener = await asyncio.start_server(_hung_upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = api_entry(f"ws://127.0.0.1:{port}/", passthrough=passthrough, **KEEPALIVE)
    server = uvicorn_server(
        WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH
    )  # the gateway's protocol
    async with listener, await connect(server.url("/ws/echo")) as client:  # answers the gateway's pings itself
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    for _ in range(100):  # the access line is written once the upstream's connection is over
        if any(r.name == "asgi_ws_gateway.access" for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert any("the upstream did not answer a ping" in m for m in messages), messages
    assert warnings_after_start(caplog) == []
    assert not any(r.exc_info for r in caplog.records)
    (access,) = [r.getMessage() for r in caplog.records if r.name == "asgi_ws_gateway.access"]
    assert "closed by upstream with 1006" in access
    # The backend's failure says why, on both paths (the relay's said (1006 "")).
    failed = [m for m in messages if "failed: it failed a connection" in m]
    assert len(failed) == 1 and failed[0].endswith('(1006 "did not answer a ping")'), failed


def _gateway(port: int, mode: str, direction: str, keepalive: dict[str, Any] = KEEPALIVE) -> WebSocketGateway:
    """A gateway to ``port`` that relays, splices, or relays frames (a message policy on ``direction``)."""
    api: dict[str, Any] = {"passthrough": mode != "relay", **keepalive}
    if mode == "frame-relay":
        api["message_policies"] = {direction: [{"limit-message-size": {"max": 65536}}]}
    return WebSocketGateway(not_found, config={"apis": [api_entry(f"ws://127.0.0.1:{port}/", **api)]})


def _deaf(release: asyncio.Event) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """An upstream's connection handler: the handshake answered, then nothing read until ``release``."""

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await release.wait()
        writer.close()

    return deaf


@pytest.mark.parametrize("mode", ["relay", "splice", "frame-relay"])
async def test_an_upstream_that_reads_nothing_is_dropped_not_the_client_streaming_to_it(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """The client streams, the upstream reads nothing: the client (unread, so silent) gets 1011 with a
    close frame and the log blames the upstream. Before, the splice dropped the client without a close
    frame as "did not answer a ping", and the relay never found the upstream dead (its ping waited
    behind the full write buffer before its timeout started)."""
    caplog.set_level(logging.INFO)
    release = asyncio.Event()

    listener = await asyncio.start_server(_deaf(release), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server = uvicorn_server(_gateway(port, mode, "inbound"), ws=PASSTHROUGH)
    try:
        async with listener, await connect(server.url("/ws/echo"), ping_interval=None, max_size=None) as client:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(client.send(b"z" * 60000), 30)
    finally:
        release.set()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    messages = [r.getMessage() for r in caplog.records]
    # Whether its first ping was written before the pipe filled decides which of the two it is found by.
    blamed = ("the upstream read nothing", "the upstream did not answer a ping")
    assert any(words in m for m in messages for words in blamed), messages
    assert not any("the client did not answer a ping" in m for m in messages)
    if mode != "relay":  # a stall is the gateway's close: passive health does not count it (the relay's is not ours)
        assert "closed by gateway with 1011" in await access_line(caplog)


async def test_a_relayed_upstream_whose_ping_cannot_be_written_is_a_stall_as_on_the_splice(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's messages fill the buffers towards an upstream that reads nothing before the first
    ping: the relay drops it as "read nothing" and, as the splice and the frame relay record a stall,
    it is the gateway's close (1011 ``upstream read nothing``: the access line, ``ws_gateway.connection.
    closes``), not counted against the backend. The relay recorded it as the upstream's 1006, a backend
    failure, where the other two paths record the same silence as the gateway's."""
    caplog.set_level(logging.INFO)
    release = asyncio.Event()

    listener = await asyncio.start_server(_deaf(release), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    keepalive = {"ping_interval": 2.0, "ping_timeout": 0.5, "close_timeout": 0.5}  # the pipe fills well before
    server = uvicorn_server(_gateway(port, "relay", "inbound", keepalive), ws=PASSTHROUGH)
    try:
        async with listener, await connect(server.url("/ws/echo"), ping_interval=None, compression=None) as client:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(client.send(b"z" * 60000), 30)
    finally:
        release.set()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert "closed by gateway with 1011" in await access_line(caplog)
    messages = [r.getMessage() for r in caplog.records]
    assert any("the upstream read nothing (its ping could not be written)" in m for m in messages), messages
    assert not any("failed: it failed a connection" in m for m in messages), messages


def _streamer(size: int) -> tuple[asyncio.Future[int | None], Callable[[ServerConnection], Awaitable[None]]]:
    """An upstream handler sending ``size``-byte messages as fast as it may, and the close code it gets
    (None: no close frame)."""
    saw: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def streamer(ws: ServerConnection) -> None:
        try:
            while True:
                await ws.send(b"y" * size)
        except ConnectionClosed as exc:
            saw.set_result(exc.rcvd.code if exc.rcvd is not None else None)

    return saw, streamer


@pytest.mark.parametrize("mode", ["relay", "splice", "frame-relay"])
async def test_a_client_that_reads_nothing_is_dropped_not_the_upstream_streaming_to_it(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """A healthy upstream streams to a client that reads nothing: the upstream (unread, so its pongs
    wait) gets a close frame, 1001 "client went away"; the log blames the client. Before, the
    upstream was dropped as "did not answer a ping" and got no close frame."""
    caplog.set_level(logging.INFO)
    upstream_saw, streamer = _streamer(60000)

    async with serve(streamer, "127.0.0.1", 0, ping_interval=None, compression=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        server = uvicorn_server(_gateway(port, mode, "outbound"), ws=PASSTHROUGH)
        _, writer = await raw_client(server.port, deflate=False)  # reads nothing from here on
        assert await asyncio.wait_for(upstream_saw, 30) == 1001
        writer.transport.abort()
    messages = [r.getMessage() for r in caplog.records]
    assert any("the client read nothing" in m for m in messages), messages
    assert not any("the upstream did not answer a ping" in m for m in messages)
    assert "closed by gateway with 1006" in await access_line(caplog)  # the client got no close frame


SLOW_KEEPALIVE: dict[str, Any] = {"ping_interval": 0.5, "ping_timeout": 1, "close_timeout": 1}
"""A ping_timeout ten times the slow peer's pace (2 KiB every 0.1 s): wide enough under load, short
enough that three of them pass in 3 s."""
RATE = 20_000
"""Bytes a second the slow peer takes in: steady, far slower than the other side sends."""
TAKEN = 3 * SLOW_KEEPALIVE["ping_timeout"] * RATE
"""What the slow peer takes in over three ping_timeouts: the old splice dropped it after one."""
SMALL_BUFFER = 8192
"""The slow peer's SO_RCVBUF: what its kernel takes in for it stays small, so it takes in at RATE."""


def _read_slowly(port: int) -> tuple[int, str | None]:
    """A client with a small receive buffer reads TAKEN bytes at RATE from ``/ws/echo``, answering
    pings as any client does; returns what it read and how the connection ended, if it did."""
    return read_slowly(port, taken=int(TAKEN), rate=RATE, buffer_size=SMALL_BUFFER)


@pytest.mark.parametrize("mode", ["relay", "splice", "frame-relay"])
async def test_a_client_reading_slowly_but_steadily_is_not_dropped(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """An upstream streams 1 KiB messages as fast as it can to a client that reads 20 KB/s: the client
    reads on through three ping_timeouts. Before, it was dropped as "read nothing" after one (its
    writes stayed paused while the kernel's send buffer drained), before that as "did not answer a
    ping" (the ping behind MBs queued to it)."""
    caplog.set_level(logging.INFO)
    upstream_saw, streamer = _streamer(1024)

    async with serve(streamer, "127.0.0.1", 0, ping_interval=None, compression=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        server = uvicorn_server(_gateway(port, mode, "outbound", SLOW_KEEPALIVE), ws=PASSTHROUGH)
        got, ended = await asyncio.to_thread(_read_slowly, server.port)
        assert ended is None and got >= TAKEN, (got, ended)
        assert not upstream_saw.done()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("read nothing" in m or "did not answer a ping" in m for m in messages), messages


@pytest.mark.parametrize("framed", [False, True], ids=["splice", "frame-relay"])
async def test_an_upstream_consuming_slowly_but_steadily_is_not_dropped(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, framed: bool
) -> None:
    """A client uploads 1 KiB messages as fast as it can to an upstream that takes in 20 KB/s (and
    answers pings): the upstream is kept through three ping_timeouts. Before, it was dropped as "read
    nothing" after one, and the access line blamed it (``closed by upstream``)."""
    caplog.set_level(logging.INFO)
    consumed, stop = asyncio.Event(), asyncio.Event()
    upstream_ended = False

    async def consumer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal upstream_ended
        await accept_upstream(reader, writer)
        got, started = 0, time.monotonic()
        try:
            while not stop.is_set():
                opcode, payload = await next_frame(reader)
                got += len(payload)
                if opcode == 0x9:
                    writer.write(bytes([0x8A, len(payload)]) + payload)
                if got >= TAKEN:
                    consumed.set()
                await asyncio.sleep(max(0.0, started + got / RATE - time.monotonic()))  # the pace, as above
        except (asyncio.IncompleteReadError, ConnectionError):
            upstream_ended = True
        finally:
            writer.close()

    listening = socket.create_server(("127.0.0.1", 0))
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)  # its connections inherit it
    # A small StreamReader limit: the upstream's socket is read as the upstream consumes, not in 64 KiB gulps.
    listener = await asyncio.start_server(consumer, sock=listening, limit=2048)
    port = listening.getsockname()[1]
    mode = "frame-relay" if framed else "splice"
    server = uvicorn_server(_gateway(port, mode, "inbound", SLOW_KEEPALIVE), ws=PASSTHROUGH)
    async with listener, await connect(server.url("/ws/echo"), ping_interval=None, max_size=None) as client:

        async def upload() -> None:
            while True:
                await client.send(b"z" * 1024)

        uploading = asyncio.create_task(upload())
        done, _ = await asyncio.wait({uploading, asyncio.ensure_future(consumed.wait())}, timeout=60,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        uploading.cancel()
        stop.set()  # the upstream leaves, so the gateway closes the client (it does not read the client's close
        # frame meanwhile: the client waits behind the backlog queued to the upstream, MBs at 20 KB/s)
        assert uploading not in done, uploading.exception()  # the client's upload was not closed
        assert consumed.is_set() and not upstream_ended
    messages = [r.getMessage() for r in caplog.records]
    assert not any("read nothing" in m or "did not answer a ping" in m for m in messages), messages


BURST = 10 << 20
"""What the client sends at once: far more than the slow upstream takes in during the test."""
GULP, GULP_PAUSE = 16 << 10, 0.1
"""The slow upstream reads this many bytes, then pauses this long (seconds): 160 KB/s, steadily."""


def _gulping_upstream(listening: socket.socket, stop: threading.Event, taken: list[int]) -> None:
    """A raw upstream served from a thread: reads GULP bytes every GULP_PAUSE, answers pings; records what
    it read in ``taken[0]``, and -1 in ``taken[1]`` if the gateway ended the connection."""
    connection, _ = listening.accept()
    with connection:
        accept_upstream_blocking(connection)
        buffer = b""
        while not stop.is_set():
            block = connection.recv(GULP)
            if not block:
                taken[1] = -1
                return
            taken[0] += len(block)
            buffer += block
            while len(buffer) >= 2:  # the gateway's frames, masked: a ping's payload is unmasked for its pong
                length, start = buffer[1] & 0x7F, 6
                if length == 126:
                    length, start = struct.unpack("!H", buffer[2:4])[0], 8
                elif length == 127:
                    length, start = struct.unpack("!Q", buffer[2:10])[0], 14
                if len(buffer) < start + length:
                    break
                if buffer[0] & 0x0F == 0x9:
                    key = buffer[start - 4 : start]
                    payload = bytes(b ^ key[i % 4] for i, b in enumerate(buffer[start : start + length]))
                    connection.sendall(bytes([0x8A, len(payload)]) + payload)
                buffer = buffer[start + length :]
            time.sleep(GULP_PAUSE)


@pytest.mark.parametrize("passthrough", [False, True], ids=["relay", "splice"])
async def test_an_upstream_reading_steadily_behind_a_client_burst_is_not_dropped(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, passthrough: bool
) -> None:
    """A client sends 10 MiB at once to an upstream that reads 16 KiB every 0.1 s: the upstream is kept
    through several ping_timeouts. On the relay it was dropped as "read nothing (its ping could not be
    written)" after one (the gateway's 1011, not counted against it), its writes held over the high-water
    mark while it made progress; the splice judges it by that progress."""
    caplog.set_level(logging.INFO)
    listening = socket.create_server(("127.0.0.1", 0))
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)  # its connections inherit it
    stop, taken = threading.Event(), [0, 0]
    upstream = threading.Thread(target=_gulping_upstream, args=(listening, stop, taken), daemon=True)
    upstream.start()
    api = api_entry(f"ws://127.0.0.1:{listening.getsockname()[1]}/", passthrough=passthrough, **SLOW_KEEPALIVE)
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
    client = socket.create_connection(("127.0.0.1", server.port))
    message = ws_frame(0x2, bytes(1 << 16))

    def burst() -> None:
        with contextlib.suppress(OSError):  # closed at the end of the test (or by the gateway)
            for _ in range(BURST >> 16):
                client.sendall(message)

    try:
        upgrade_blocking(client, server.port, "/ws/echo")
        sender = threading.Thread(target=burst, daemon=True)
        sender.start()
        wanted = 4 * SLOW_KEEPALIVE["ping_timeout"] * GULP / GULP_PAUSE  # four ping_timeouts' worth
        for _ in range(600):
            if taken[0] >= wanted or taken[1]:
                break
            await asyncio.sleep(0.05)
        assert taken[0] >= wanted and not taken[1], taken
    finally:
        stop.set()
        client.close()
        await asyncio.to_thread(upstream.join, 10)
        listening.close()
    messages = [r.getMessage() for r in caplog.records]
    assert not any("read nothing" in m or "did not answer a ping" in m for m in messages), messages


async def test_a_ping_that_fails_as_the_keepalive_is_cancelled_leaves_no_unretrieved_error() -> None:
    """The upstream leg ends: its keepalive is cancelled and its ping fails in the same loop turn (a client's
    close the upstream never answered, dropped at ``close_timeout``, as a ping waited). The keepalive stopped
    waiting with the ping done and its exception unread: asyncio's "Task exception was never retrieved" with
    a traceback, at ERROR (found by a failure-path probe under ``uvicorn app:app``)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    keepalive: asyncio.Task[Any] | None = None

    class Ending:
        transport = asyncio.BaseTransport()

        async def ping(self) -> None:
            await asyncio.sleep(0)
            assert keepalive is not None
            keepalive.cancel()  # what connection_lost does, in the turn the ping fails
            raise ConnectionClosedError(None, None)

    try:
        keepalive = task = asyncio.ensure_future(GatewayClientConnection._ping_written(cast(Any, Ending()), 60.0))
        with contextlib.suppress(asyncio.CancelledError):
            await task
        del task
        keepalive = None
        gc.collect()  # the abandoned ping task is reported when it is freed
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
