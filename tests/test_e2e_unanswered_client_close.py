"""End to end: a client's close frame that the upstream never answers, because it vanished.

RFC 6455 §5.5.1: an endpoint that receives a close frame sends one in response. The relay answers a
client's close itself (its own code echoed); the splice forwards it and waits for the upstream's
answer, and an upstream that then vanished (a reset, or a FIN with no close frame) left the client with
its TCP connection closed and no close frame: a 1006 on the client's side, its closing handshake
failed, where the relay gave it its close back. Now the gateway answers for the vanished upstream: the
client gets its own code and reason echoed, as from the relay, on every connector.
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
from support.rawhttp import accept_upstream
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
