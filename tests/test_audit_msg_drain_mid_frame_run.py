"""Audit through a real ``asgi-ws-gateway run --management``: ``DELETE /apis/{name}?drain=true`` while a
spliced client is in the middle of a frame.

The client gets the drain's close frame at once; the upstream gets its own once the client's frame
ends. Before, the upstream's close frame waited for a frame header that never came (the rest of the
frame was the last bytes of its read): the upstream was aborted at ``close_timeout`` without a close
frame (1006). The server process holds no more descriptors after the connection than before it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from pathlib import Path

import pytest

from support.configs import api_entry, write_config
from support.processes import standalone
from support.rawhttp import ws_frame
from support.rawws import close_frame_in
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts /proc/<pid>/fd")

CLOSE_TIMEOUT = 30.0  # far past the test's bounds: a close frame that waits for it never comes in time


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_drain_while_the_client_is_mid_frame_closes_the_upstream_once_the_frame_ends(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    config = write_config(tmp_path, {"apis": [api_entry(upstream, close_timeout=CLOSE_TIMEOUT)]})
    async with standalone(config) as gateway:
        pid = gateway.process.pid
        before = _fds(pid)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        try:
            frame = ws_frame(2, b"y" * 900)
            writer.write(frame[:300])
            await writer.drain()
            async with asyncio.timeout(5):
                while not (await gateway.client.list_connections()):  # noqa: ASYNC110 - another process's state
                    await asyncio.sleep(0.02)
            draining = asyncio.create_task(gateway.client.delete_api("echo", drain=True))
            assert await asyncio.wait_for(close_frame_in(reader), 5) == (1001, b"API configuration changed")
            writer.write(frame[300:])  # the rest of the frame, one write
            await writer.drain()
            async with asyncio.timeout(5):  # not CLOSE_TIMEOUT
                assert await upstream.wait_for_closes_async(1) == [(1001, "API configuration changed")]
            writer.write(ws_frame(8, struct.pack("!H", 1001)))  # the client answers
            await writer.drain()
            await asyncio.wait_for(draining, 10)
        finally:
            writer.close()
            await writer.wait_closed()
        async with asyncio.timeout(5):
            while _fds(pid) > before:  # noqa: ASYNC110 - another process's state
                await asyncio.sleep(0.02)
