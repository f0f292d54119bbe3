"""Audit through a real ``asgi-ws-gateway run``: the message limits of docs/security.md's table at their
edges, on each connector (the splice, the frame relay, the relay under the gateway's protocol), from a
raw client, with a healthy connection beside each attack that must get every numbered message back in
order, and the server process holding no more descriptors afterwards than before.

Variants the other tests do not take: the ``FRAGMENT_FLOOR`` limit reached exactly (15 one-byte
fragments and a 64-byte last one) and passed by one byte, a close frame whose 123-byte reason comes a
byte per read, and one of 124 bytes split across two reads (a control frame too long: 1002).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from support.clients import connect
from support.configs import write_config
from support.processes import ServerProcess, ready_server
from support.rawhttp import ws_frame
from support.rawws import close_frame_in, next_frame
from support.relays import module_upstream  # noqa: F401 - the fixture upstream_server
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/<pid>/fd")

LIMIT = 1024
CONNECTORS: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 65536}}]}},
    "relay": {"passthrough": False},
}


@pytest.fixture(scope="module")
def gateway(upstream_server: UpstreamServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``asgi-ws-gateway run`` with one API per connector, ``/splice``, ``/frame-relay``, ``/relay``."""
    echo = upstream_server.url("/echo")
    apis = [
        {"name": name.replace(" ", "-"), "path": "/" + name.replace(" ", "-"), "upstreams": [echo],
         "max_message_size": LIMIT, "close_timeout": 2, **settings}
        for name, settings in CONNECTORS.items()
    ]  # fmt: skip
    path = write_config(tmp_path_factory.mktemp("run"), {"apis": apis})
    with ready_server(
        lambda port: ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port), "--workers", "1"]
    ) as server:
        yield server


def _fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


async def _open(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


@asynccontextmanager
async def _beside(server: ServerProcess, path: str) -> AsyncIterator[None]:
    """A healthy connection numbering its messages while the block runs; every one comes back, in order;
    then the server holds no more descriptors than before."""
    before = _fds(server)
    stop = asyncio.Event()

    async def numbered() -> int:
        async with await connect(f"ws://127.0.0.1:{server.port}{path}") as ws:
            sent = 0
            while not stop.is_set() or sent < 10:
                await ws.send(f"seq {sent}")
                assert await ws.recv() == f"seq {sent}"
                sent += 1
            return sent

    healthy = asyncio.create_task(numbered())
    try:
        yield
    finally:
        stop.set()
        assert await asyncio.wait_for(healthy, 10) >= 10
    async with asyncio.timeout(5):
        while _fds(server) > before:  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_tiny_fragments_exactly_at_the_floor_limit_pass_one_byte_more_is_1009(
    gateway: ServerProcess, upstream_server: UpstreamServer, connector: str
) -> None:
    path = "/" + connector.replace(" ", "-")
    async with _beside(gateway, path):
        reader, writer = await _open(gateway.port, path)
        tiny = b"".join(ws_frame(2 if i == 0 else 0, b"c", fin=False) for i in range(15))
        writer.write(tiny + ws_frame(0, b"c" * 64))  # 15 x 64 + 64 = the limit
        assert await asyncio.wait_for(next_frame(reader), 5) == (2, b"c" * 79)
        writer.write(tiny + ws_frame(0, b"c", fin=False) + ws_frame(0, b"c"))  # 16 x 64 + 1
        code, _ = await asyncio.wait_for(close_frame_in(reader), 5)
        assert code == 1009
        writer.close()
        await writer.wait_closed()
    assert (1001, "client message too big") in upstream_server.closes


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_close_reason_of_123_bytes_a_byte_per_read_goes_through(
    gateway: ServerProcess, upstream_server: UpstreamServer, connector: str
) -> None:
    path = "/" + connector.replace(" ", "-")
    reason = "r" * 122 + connector[0]
    async with _beside(gateway, path):
        reader, writer = await _open(gateway.port, path)
        frame = ws_frame(8, struct.pack("!H", 4000) + reason.encode())
        for i in range(len(frame)):
            writer.write(frame[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.001)  # (load, not synchronisation: one read each)
        assert await asyncio.wait_for(close_frame_in(reader), 5) == (4000, reason.encode())
        writer.close()
        await writer.wait_closed()
    async with asyncio.timeout(5):
        while (4000, reason) not in upstream_server.closes:  # noqa: ASYNC110 - another thread's state
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_close_reason_of_124_bytes_split_across_reads_is_1002(
    gateway: ServerProcess, upstream_server: UpstreamServer, connector: str
) -> None:
    path = "/" + connector.replace(" ", "-")
    async with _beside(gateway, path):
        reader, writer = await _open(gateway.port, path)
        frame = ws_frame(8, struct.pack("!H", 4000) + b"r" * 124)
        writer.write(frame[:3])
        await writer.drain()
        await asyncio.sleep(0.05)  # (load, not synchronisation: two reads)
        writer.write(frame[3:])
        assert await asyncio.wait_for(close_frame_in(reader), 5) == (1002, b"control frame too long")
        writer.close()
        await writer.wait_closed()
    async with asyncio.timeout(5):
        while (1002, "control frame too long") not in upstream_server.closes:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
