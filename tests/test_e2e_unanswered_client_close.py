"""End to end: a close frame that the other side never answers, because it vanished.

RFC 6455 §5.5.1: an endpoint that receives a close frame sends one in response. The relay answers a
client's close itself (its own code echoed); the splice forwards it and waits for the upstream's
answer, and an upstream that then vanished (a reset, or a FIN with no close frame) left the client with
its TCP connection closed and no close frame: a 1006 on the client's side, its closing handshake
failed, where the relay gave it its close back. Now the gateway answers for the vanished upstream: the
client gets its own code and reason echoed, as from the relay, on every connector. The mirror, an
upstream's close frame a vanished client never answered, is answered for the client the same way (the
upstream saw 1006 on the splice and the frame relay, its own code back on the relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from support.clients import connect
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import raw_client_of
from support.servers import UvicornFactory

BOUND = 10.0  # the test's wait: far under close_timeout, so only an answer ends the client's close in time
NEVER = 60.0


def _vanishing(how: str) -> Handler:
    """Accepts, reads the start of the gateway's close frame, then vanishes by ``how``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readexactly(2)
            if how == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                writer.write_eof()
                await reader.read()
        writer.close()

    return handle


@pytest.mark.parametrize("how", ["reset", "fin"])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_clients_close_the_upstream_vanished_on_is_answered_by_the_gateway(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, how: str
) -> None:
    """The client's 4001 "bye" comes back, at once, though the upstream vanished without answering it."""
    port = await hostile(_vanishing(how))
    gateway, url = gateway_before(port, connector, uvicorn_server, close_timeout=NEVER, ping_interval=None)
    async with await connect(url) as ws:
        async with asyncio.timeout(BOUND):
            await ws.close(4001, "bye")
        answer = ws.protocol.close_rcvd
        assert answer is not None and (answer.code, answer.reason) == (4001, "bye")
    await gateway.settle()


def _closing_on_bye(closes: list[tuple[int, str]], done: asyncio.Event) -> Handler:
    """Accepts; on a text frame closes with 4000 "bye", and records the close frame it gets back (1006: none)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        try:
            head = await reader.readexactly(2)
            await reader.readexactly(4 + (head[1] & 0x7F))  # the client's message, masked
            writer.write(ws_frame(8, (4000).to_bytes(2, "big") + b"bye", mask=False))
            head = await reader.readexactly(2)
            key, payload = await reader.readexactly(4), await reader.readexactly(head[1] & 0x7F)
            body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            closes.append((int.from_bytes(body[:2], "big"), body[2:].decode()))
        except (OSError, asyncio.IncompleteReadError):
            closes.append((1006, ""))
        finally:
            writer.close()
            done.set()

    return handle


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_an_upstreams_close_a_vanished_client_never_answered_is_answered_by_the_gateway(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """The upstream's 4000 "bye" comes back to it, at once, though the client reset instead of answering."""
    closes: list[tuple[int, str]] = []
    done = asyncio.Event()
    port = await hostile(_closing_on_bye(closes, done))
    gateway, url = gateway_before(port, connector, uvicorn_server, close_timeout=NEVER, ping_interval=None)
    reader, writer = await raw_client_of(url)
    writer.write(ws_frame(1, b"bye"))
    assert (await reader.readexactly(2))[0] == 0x88  # the upstream's close frame reached the client
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()  # a reset, no answer
    async with asyncio.timeout(BOUND):
        await done.wait()
    assert closes == [(4000, "bye")]
    await gateway.settle()


async def _silent_after_the_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, reads the gateway's close frame's start, then neither answers nor closes."""
    await accept_upstream(reader, writer)
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        await reader.readexactly(2)
        await reader.read()  # until the gateway drops it
    writer.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_clients_close_a_silent_upstream_never_answered_is_answered_at_close_timeout(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """At ``close_timeout`` the client gets its 4001 "bye" back, not a reset without a close frame (1006)."""
    port = await hostile(_silent_after_the_close)
    gateway, url = gateway_before(port, connector, uvicorn_server, close_timeout=1.0, ping_interval=None)
    async with await connect(url, close_timeout=BOUND) as ws:
        async with asyncio.timeout(BOUND):
            await ws.close(4001, "bye")
        answer = ws.protocol.close_rcvd
        assert answer is not None and (answer.code, answer.reason) == (4001, "bye")
    await gateway.settle()
