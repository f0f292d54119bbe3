"""TCP_INFO read for the stall and close-wait rules (``progress``) through uvloop's socket stand-in: asked
of its descriptor with a bare socket object (uvloop's ``PseudoSocket.getsockopt`` makes a ``socket.socket``
for each call), the same counts as the stand-in's own answer, on uvloop and asyncio; nothing once closed."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from asgi_ws_gateway import progress

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux's TCP_INFO")

_COUNTS = struct.Struct("=QQ")  # tcpi_bytes_acked, tcpi_bytes_received (offsets 120 and 128)


def _counts(info: bytes) -> tuple[int, int]:
    acked, received = _COUNTS.unpack_from(info, 120)
    return acked, received


class _Sink(asyncio.Protocol):
    def __init__(self, got: asyncio.Queue[int]) -> None:
        self.got, self.total = got, 0

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        self.got.put_nowait(self.total)


async def _compare() -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[int] = asyncio.Queue()
    server = await loop.create_server(lambda: _Sink(got), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        transport.write(b"x" * 5000)
        while await got.get() < 5000:
            pass
        sock = transport.get_extra_info("socket")
        size = 136
        for _ in range(200):  # until the peer's acknowledgement is in (then the counts hold still)
            own: bytes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, size)
            if _counts(own)[0] > 5000:  # (the SYN counts one)
                break
            await asyncio.sleep(0.01)
        acked, received = _counts(own)
        assert acked > 5000 and received == 0
        assert _counts(progress._tcp_info(sock, size)) == (acked, received)
        assert progress.taken_in(transport) == acked
        assert progress.received(transport) == received
    finally:
        transport.close()
        server.close()
    await asyncio.sleep(0)
    assert progress.taken_in(transport) == 0  # closed: the fallback (nothing undelivered), no error
    assert progress._tcp_info(None, 136) == b""


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_tcp_info_read_as_the_transports_socket_answers(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    run(_compare())
