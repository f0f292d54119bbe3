"""Attack: the gateway's server protocol takes bytes from a client as its sign of life, read or not.

The splice and the frame relay keep a side that sent bytes since its ping: it is alive. The gateway's
server protocol (the relay's client leg, and an application's own WebSocket routes under it) waited
for the pong alone: a browser on a slow uplink, uploading one large message as a single frame (its
pong cannot go out before the frame ends), was failed with 1011 mid-upload and its message lost. And
a client the application does not read (its message waits for it) was never pinged, so one that then
went silent, dead, stayed open for ever (uvicorn's websockets implementations drop it; its
websockets-sansio drops a live one too, its pong unread).

Now a client that sent bytes since the ping, whether the gateway read them or not (what its TCP
delivered: Linux's TCP_INFO), is not charged, and the next ping follows; one that sent nothing and
did not answer gets 1011, read or not. Raw-socket clients play both.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.progress import may_send, received
from asgi_ws_gateway.standalone import not_found
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawws import close_frame_in, next_frame, raw_client
from support.servers import UvicornFactory

KEEPALIVE: dict[str, Any] = {"ping_interval": 0.5, "ping_timeout": 1.0}
"""The API's keepalive on the relay."""
SERVER_KEEPALIVE: dict[str, Any] = {"ws_ping_interval": 0.5, "ws_ping_timeout": 1.0}
"""uvicorn's, which serves the application's own routes."""
UPLOAD = 300_000
"""Bytes of the slow client's one message: a single frame, sent at RATE."""
RATE = 100_000
"""Bytes a second the slow client uploads: the frame takes three seconds, three of the API's pong waits."""
BOUND = 30
"""Seconds a test waits for what should come far sooner (before the fix, the silent client stays open)."""
ROUNDS = 3
"""Keepalive rounds a live client not read answers, and stays open through."""


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (size // 4 + 1))[:size], "big")).to_bytes(
        size, "big"
    )
    return head + mask + masked


async def _answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, bytes]:
    """Read frames, answering every ping with its pong, until one that is no ping or pong; returns it."""
    while True:
        opcode, payload = await next_frame(reader)
        if opcode == 0x9:
            writer.write(_frame(0xA, payload))
        elif opcode != 0xA:
            return opcode, payload


async def test_a_slow_single_frame_upload_on_the_relay_is_kept_and_answered(uvicorn_server: UvicornFactory) -> None:
    """A client uploads one 300 KB message as a single frame at 100 KB/s (no pong can go out before it
    ends), then answers pings: the upstream gets the message and its answer reaches the client. Before,
    the client was failed with 1011 "keepalive ping timeout" a second after the first ping, the message lost."""
    got: list[int] = []

    async def upstream(ws: ServerConnection) -> None:
        async for message in ws:
            got.append(len(message))
            await ws.send(f"got {len(message)}")

    async with serve(upstream, "127.0.0.1", 0, ping_interval=None, compression=None) as listening:
        port = listening.sockets[0].getsockname()[1]
        api = api_entry(f"ws://127.0.0.1:{port}/", passthrough=False, **KEEPALIVE)
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
        reader, writer = await raw_client(server.port, deflate=False)
        try:
            data, step = _frame(0x2, os.urandom(UPLOAD)), RATE // 10
            for start in range(0, len(data), step):
                writer.write(data[start : start + step])
                await writer.drain()
                await asyncio.sleep(0.1)  # the uplink's pace, not synchronisation
            answer = await asyncio.wait_for(_answering(reader, writer), BOUND)
        finally:
            writer.transport.abort()
    assert answer == (0x1, f"got {UPLOAD}".encode())
    assert got == [UPLOAD]


def _own_route(finished: threading.Event) -> Any:
    """The application's own WebSocket route (no API's path): it accepts, then never reads, until ``finished``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await not_found(scope, receive, send)
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await asyncio.to_thread(finished.wait)  # a push application with nothing to push yet

    return app


async def _unread_client(uvicorn_server: UvicornFactory, finished: threading.Event, messages: int) -> Any:
    """A raw client of the application's own route that sent ``messages`` messages the route never reads."""
    gateway = WebSocketGateway(_own_route(finished), config={"apis": [api_entry(path="/ws/api")]})
    server = uvicorn_server(gateway, ws=PASSTHROUGH, **SERVER_KEEPALIVE)
    reader, writer = await raw_client(server.port, deflate=False)
    for _ in range(messages):
        writer.write(_frame(0x1, b"hello"))
        await asyncio.sleep(0.2)  # the next one comes after the first was read (and reading paused): not a need
    return reader, writer


@pytest.mark.parametrize("messages", [1, 2], ids=["one-read", "one-left-in-the-kernel"])
async def test_a_silent_client_of_an_unread_route_is_dropped_with_1011(
    uvicorn_server: UvicornFactory, messages: int
) -> None:
    """The client's message waits for the route, which never reads it, and the client answers nothing:
    it is pinged and closed with 1011 "keepalive ping timeout" (the second message, if any, left unread
    in the kernel: the client had room to send its pong). Before, it was never pinged and stayed open."""
    if messages > 1 and not _kernel_tells_the_window():
        pytest.skip("the kernel does not tell its receive window (tcpi_rcv_wnd: Linux 6.2 and later)")
    finished = threading.Event()
    reader, writer = await _unread_client(uvicorn_server, finished, messages)
    try:
        code, reason = await asyncio.wait_for(close_frame_in(reader), BOUND)  # reads the ping, answers none
        assert (code, reason) == (1011, b"keepalive ping timeout")
        assert await asyncio.wait_for(_rest(reader), BOUND) == b""  # and the connection is over
    finally:
        finished.set()
        writer.transport.abort()


async def test_a_client_of_an_unread_route_that_answers_pings_is_kept(uvicorn_server: UvicornFactory) -> None:
    """Its message waits for the route all along, but it answers every ping (its pongs wait unread behind
    the message): pinged round after round, never closed. uvicorn's websockets-sansio drops it with 1011."""
    finished = threading.Event()
    reader, writer = await _unread_client(uvicorn_server, finished, 1)
    try:
        for _ in range(ROUNDS):
            opcode, payload = await asyncio.wait_for(next_frame(reader), BOUND)
            assert opcode == 0x9, (opcode, payload)  # a ping, not a close
            writer.write(_frame(0xA, payload))
    finally:
        finished.set()
        writer.transport.abort()


async def _rest(reader: asyncio.StreamReader) -> bytes:
    """What comes before the connection's end: EOF, or a reset (the gateway's socket closed with the
    client's second message still unread in it)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def _until(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within a few seconds (polled: what it watches sends no event)."""
    for _ in range(500):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return False


def _kernel_tells_the_window() -> bool:
    """Whether this kernel's TCP_INFO reaches tcpi_rcv_wnd (offset 232)."""
    if not hasattr(socket, "TCP_INFO"):
        return False
    with socket.socket() as sock:
        return len(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 236)) >= 236


async def test_the_probe_counts_what_a_paused_reader_leaves_unread_and_sees_its_window_close() -> None:
    """``received`` grows with bytes the reader does not read; ``may_send`` holds while the peer has room
    and fails once what it sent fills the window (on a kernel that tells it)."""
    with socket.create_server(("127.0.0.1", 0)) as listening, socket.create_connection(listening.getsockname()) as peer:
        accepted, _ = listening.accept()
        _, writer = await asyncio.open_connection(sock=accepted)
        try:
            transport = writer.transport
            transport.pause_reading()  # type: ignore[attr-defined]
            before = received(transport)
            if before is None:
                pytest.skip("no TCP_INFO's tcpi_bytes_received here")
            assert may_send(transport)  # nothing unread: the whole window is open
            peer.sendall(b"x" * 100)
            assert await _until(lambda: (received(transport) or 0) >= before + 100)
            peer.setblocking(False)
            with pytest.raises(BlockingIOError):
                while True:  # until the window (and the peer's own buffer) is full
                    peer.send(b"y" * 65536)
            if _kernel_tells_the_window():
                writer.write(b"ping")  # a segment that announces the window as it is now
                await writer.drain()
                assert await _until(lambda: not may_send(transport))  # the last of the flood may still arrive
        finally:
            writer.transport.abort()
