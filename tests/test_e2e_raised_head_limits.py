"""End to end: raised ``handshake_limits`` raise the heads the gateway sends an upstream and reads back.

Both were a fixed 64 KiB: under ``max_header_bytes: 131072`` a client with ~90 KB of cookies was admitted
and then refused 431 ("the upstream request head would take ..."), and an upstream's 101 setting ~95 KB
of cookies was a 502 counted against the backend. Real ``asgi-ws-gateway run``, a raw upstream, a raw
client; the relay (``passthrough: false``), the splice and the frame relay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.rawhttp import handshake, status_of

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SENT_COOKIES = b"".join(b"Cookie: k%02d=%s\r\n" % (i, b"c" * 7500) for i in range(12))  # ~90 KB
_SET_COOKIES = b"".join(b"Set-Cookie: s%02d=%s\r\n" % (i, b"v" * 7900) for i in range(12))  # ~95 KB
_MODES: dict[str, dict[str, Any]] = {
    "relay": {"passthrough": False},
    "splice": {"passthrough": True},
    "frame-relay": {"passthrough": True, "message_policies": {"inbound": [{"limit-message-size": {"max": 1024}}]}},
}


class _Upstream:
    """Answers every handshake with a valid 101 setting :data:`_SET_COOKIES`; keeps each request head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reader._limit = 1 << 20  # type: ignore[attr-defined]  # readuntil's bound: the head is ~95 KB
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        with contextlib.suppress(OSError):
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n" + _SET_COOKIES + b"\r\n")  # fmt: skip
            await writer.drain()
            await reader.read(1 << 16)  # the gateway's close frame (or its EOF): closed at once, not at its timeout
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[_Upstream]:
    upstream = _Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, limit=1 << 20)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


async def _answer_head(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    finally:
        writer.close()


@pytest.mark.parametrize("mode", list(_MODES))
async def test_raised_limits_carry_large_heads_both_ways(tmp_path: Path, upstream: _Upstream, mode: str) -> None:
    url = f"ws://127.0.0.1:{upstream.port}/echo"
    limits = {"max_header_bytes": 128 * 1024}
    config = write_config(tmp_path, build_config(url, api=_MODES[mode], handshake_limits=limits))
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1) as gateway:
        answer = await _answer_head(gateway.port, handshake("/ws/echo", _SENT_COOKIES))
    assert status_of(answer) == 101, answer[:300]
    assert answer.count(b"\r\nset-cookie: ") + answer.count(b"\r\nSet-Cookie: ") == 12
    (head,) = upstream.heads
    assert head.lower().count(b"\r\ncookie: ") >= 1 and head.count(b"c" * 7500) == 12  # every cookie went on


async def test_the_default_limits_still_stop_at_64_kib(tmp_path: Path, upstream: _Upstream) -> None:
    """Without raised limits the client's 90 KB is refused before any backend is contacted (431)."""
    url = f"ws://127.0.0.1:{upstream.port}/echo"
    config = write_config(tmp_path, build_config(url))
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1) as gateway:
        answer = await _answer_head(gateway.port, handshake("/ws/echo", _SENT_COOKIES))
    assert status_of(answer) == 431
    assert upstream.heads == []
