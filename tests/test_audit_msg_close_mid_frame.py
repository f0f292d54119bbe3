"""Audit, end to end: the gateway closes a spliced connection while one side is in the middle of a frame.

The close frame towards the other side waits for that frame's end (a close frame cannot land inside a
payload: docs/security.md, the splice's module docstring). Found by a black-box pass against
``asgi-ws-gateway run``: when the rest of the frame arrived as the last bytes of a read (what a
sender's next write is), the frame scanner never marked the frame in flight as done, so the waiting
close frame was never sent: the receiving side was aborted at ``close_timeout`` with no close frame
(1006), after a management close, a drain (``DELETE /apis/{name}?drain=true``), the idle timeout or
the maximum lifetime. It was sent only when the next frame's header happened to follow in the same
read. The gateway's protocol under a real uvicorn, a real upstream, a raw peer on the other side.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.relay.stats import RelayStats
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, ended_after_the_close, next_frame
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/self/fd")

CLOSE_TIMEOUT = 30.0  # far past the tests' own bounds: a close frame that waits for it never comes in time


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _raw_client(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def _kick(gateway: ProbedGateway) -> None:
    """A management close, once the connection is open and its first bytes went through."""
    async with asyncio.timeout(5):
        while not gateway.gateway.connections():  # noqa: ASYNC110 - another loop's state
            await asyncio.sleep(0.01)
    (connection,) = gateway.gateway.connections()
    assert await gateway.on_server(lambda: gateway.gateway.close_connection(connection.id, 4321, "kicked"))


def test_the_frame_in_flight_ends_with_the_read_that_finishes_it() -> None:
    """Halted inside a frame, a read that ends exactly at the frame's end seals the scanner."""
    scanner = FrameScanner(RelayStats(sizes_in=[0] * 32, sizes_out=[0] * 32), inbound=True, max_message_size=4096)
    frame = ws_frame(2, b"x" * 900)
    assert scanner.feed(frame[:300]) == frame[:300]
    scanner.halt()
    forwarded = scanner.feed(frame[300:400])
    inside = scanner.sealed  # still inside it
    forwarded += scanner.feed(frame[400:])
    assert forwarded == frame[300:]
    assert (inside, scanner.sealed) == (False, True)  # sealed at its end
    assert scanner.feed(ws_frame(2, b"late")) == b""


async def test_a_close_while_the_client_is_mid_frame_reaches_the_upstream_once_the_frame_ends(
    upstream: UpstreamServer, uvicorn_server: UvicornFactory
) -> None:
    gateway = ProbedGateway({"apis": [api_entry(upstream, close_timeout=CLOSE_TIMEOUT)]})
    server = uvicorn_server(gateway, ws=PASSTHROUGH)
    before = _open_fds()
    reader, writer = await _raw_client(server.port, "/ws/echo")
    try:
        frame = ws_frame(2, b"y" * 900)
        writer.write(frame[:300])
        await writer.drain()
        await asyncio.sleep(0.1)  # (load, not synchronisation: the first part is through the splice)
        await _kick(gateway)
        assert await asyncio.wait_for(close_frame_in(reader), 5) == (4321, b"kicked")
        writer.write(frame[300:])  # the rest of the frame, one write
        await writer.drain()
        async with asyncio.timeout(5):  # not CLOSE_TIMEOUT: the upstream gets its close frame at once
            assert await upstream.wait_for_closes_async(1) == [(4321, "kicked")]
        writer.write(ws_frame(8, struct.pack("!H", 4321)))  # the client answers its close frame
        await ended_after_the_close(reader, writer)
        await gateway.settle()
    finally:
        writer.close()
        await writer.wait_closed()
    assert _open_fds() <= before


async def test_a_close_while_the_upstream_is_mid_frame_reaches_the_client_once_the_frame_ends(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory
) -> None:
    frame = ws_frame(2, b"z" * 900, mask=False)
    rest, client_closed = asyncio.Event(), asyncio.Event()
    got: list[tuple[int, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=frame[:300])
        await rest.wait()
        writer.write(frame[300:])  # the rest of the frame, one write
        await writer.drain()
        got.append(await asyncio.wait_for(close_frame_in(reader), 10))
        await client_closed.wait()  # its answer comes after the client's close frame, not before it
        writer.write(ws_frame(8, struct.pack("!H", 4321), mask=False))
        await writer.drain()
        writer.close()

    port = await hostile(handle)
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", close_timeout=CLOSE_TIMEOUT)
    gateway = ProbedGateway({"apis": [entry]})
    server = uvicorn_server(gateway, ws=PASSTHROUGH)
    before = _open_fds()
    reader, writer = await _raw_client(server.port, "/h")
    try:
        await asyncio.sleep(0.1)  # (load, not synchronisation: the first part is through the splice)
        await _kick(gateway)
        rest.set()
        async with asyncio.timeout(5):  # not CLOSE_TIMEOUT: the client gets the frame, then its close frame
            assert await next_frame(reader) == (2, b"z" * 900)
            assert await close_frame_in(reader) == (4321, b"kicked")
        client_closed.set()
        writer.write(ws_frame(8, struct.pack("!H", 4321)))
        await ended_after_the_close(reader, writer)
        await gateway.settle()
    finally:
        writer.close()
        await writer.wait_closed()
    assert got == [(4321, b"kicked")]
    assert _open_fds() <= before
