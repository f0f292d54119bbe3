"""End to end: the upstream ends first while the client still takes in its last messages (splice, frame relay).

The upstream sends ``MESSAGES`` messages of 64 KiB at once and ends: its close frame then its TCP
close, or its TCP close alone (a crash). The client has a small receive buffer, reads slowly and
acknowledges each message, as chat and market-data clients do. The gateway closed the client's
socket when the upstream's ended: it read the client no more, the client's next ack made the kernel
reset the connection, and what was still queued to the client was lost with the close frame (1 of
48 messages, on both connectors; the relay delivered 48 and the close). Real uvicorn under the
gateway's protocols, a raw upstream (and a ``websockets`` one) and a raw client in a thread.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable

import psutil
import pytest
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway.server import GatewayHTTPProtocol
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS, Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import split_frames, upgrade_blocking
from support.servers import UvicornServer

MESSAGES = 48
MESSAGE = 65536
BUFFER = 16384
"""The client's SO_RCVBUF: its kernel takes in little for it, the rest stays queued at the gateway."""
RATE = 4_000_000.0
"""Bytes a second the client reads: it takes ~0.8 s over what the upstream sent in a moment."""
BOUND = 20.0  # seconds: a client still reading after this hangs (a failure, not a slow pass)


def _acking_client(port: int) -> tuple[int, str]:
    """A client of ``/h`` with a small receive buffer reading ``RATE`` bytes a second, which acks each
    message and answers the close frame; returns the messages it got and how the connection ended
    (``close N``, ``reset``, ``ended`` without a close frame). Blocking: run it in a thread."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)  # before connect: the window it offers
        sock.settimeout(BOUND)
        sock.connect(("127.0.0.1", port))
        buffer, got, messages, started = upgrade_blocking(sock, port, "/h"), 0, 0, time.monotonic()
        while True:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                return messages, "reset"
            if not data:
                return messages, "ended"
            got += len(data)
            buffer += data
            frames, buffer = split_frames(buffer)
            for opcode, payload in frames:
                if opcode == 0x8:
                    sock.sendall(ws_frame(0x8, payload[:2]))  # its answer
                    return messages, f"close {struct.unpack('!H', payload[:2])[0]}"
                messages += 1
                sock.sendall(ws_frame(0x1, b"ack"))
            # Load, not synchronisation: the pace of a slow reader.
            time.sleep(max(0.0, started + got / RATE - time.monotonic()))


def _raw_upstream(*, close_frame: bool) -> Handler:
    """Sends the messages, then its close frame 1000 (unless it crashed) and its FIN, at once; reads what
    comes until the gateway closes (it never resets the gateway itself)."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        for i in range(MESSAGES):
            writer.write(ws_frame(0x2, bytes([i]) * MESSAGE, mask=False))
        if close_frame:
            writer.write(ws_frame(0x8, struct.pack("!H", 1000) + b"bye", mask=False))
        writer.write_eof()
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        writer.close()

    return upstream


async def _websockets_upstream(ws: ServerConnection) -> None:
    """A ``websockets`` server: the messages, then ``close(1000)``, waiting 0.5 s for the answer."""
    for i in range(MESSAGES):
        await ws.send(bytes([i]) * MESSAGE)
    await ws.close(1000, "done")


async def _through_gateway(upstream_port: int, connector: str) -> tuple[int, str]:
    """What the acking client gets from the upstream at ``upstream_port`` through ``connector``; then
    the gateway holds no connection, no task and no socket of it."""
    entry = api_entry(f"ws://127.0.0.1:{upstream_port}/", name="h", path="/h", **CONNECTORS[connector])
    gateway = ProbedGateway({"apis": [entry]})
    with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
        got = await asyncio.to_thread(_acking_client, server.port)
        await gateway.settle()
        await _no_sockets_left(server.port, upstream_port)
    return got


async def _no_sockets_left(server_port: int, upstream_port: int) -> None:
    """No socket of the gateway's stays open, to the client or to the upstream (fails after 5 s)."""

    def gateway_sockets() -> list[object]:
        return [c for c in psutil.Process().net_connections(kind="tcp")
                if c.status != psutil.CONN_LISTEN and c.laddr and (c.laddr.port == server_port
                    or (c.raddr and c.raddr.port == upstream_port))]  # fmt: skip

    async with asyncio.timeout(5):
        while gateway_sockets():  # noqa: ASYNC110 - sockets of another thread's loop
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("connector", ["splice", "frame relay"])
@pytest.mark.parametrize(("close_frame", "ending"), [(True, "close 1000"), (False, "close 1011")],
                         ids=["closed", "crashed"])  # fmt: skip
async def test_a_slow_acking_client_gets_every_message_and_the_close_after_the_upstream_ended(
    hostile: Callable[[Handler], Awaitable[int]], connector: str, close_frame: bool, ending: str
) -> None:
    """The upstream's TCP close does not reset the client: all 48 messages arrive, then 1000 (1011 for a crash)."""
    port = await hostile(_raw_upstream(close_frame=close_frame))
    assert await _through_gateway(port, connector) == (MESSAGES, ending)


@pytest.mark.parametrize("connector", ["splice", "frame relay"])
async def test_a_websockets_upstream_that_stops_waiting_for_the_answer_does_not_reset_the_client(
    connector: str,
) -> None:
    """A ``websockets`` upstream closes TCP 0.5 s after its close frame: the client still gets all 48 and 1000."""
    async with serve(_websockets_upstream, "127.0.0.1", 0, close_timeout=0.5, compression=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        assert await _through_gateway(port, connector) == (MESSAGES, "close 1000")
