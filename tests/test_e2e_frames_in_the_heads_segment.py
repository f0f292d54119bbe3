"""A client's first frames in the same segment as its request head, under real ``asgi-ws-gateway run``.

The client leg starts websockets' frame parser at the first bytes of frames, not when the parsed request
is handed over (``server_protocol.FRAMES_LATER``). The relay (not spliced) reads its client through that
parser: frames that came with the head (held until the handshake is answered), a ping or a close frame
first, and an EOF before any frame must be read as ever. The splice and the frame relay read frames of
their own; they are pinned alike. (A review probe, 2026-12-07: the same answers before that change.)
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from support.configs import api_entry, write_config
from support.processes import GatewayProcess
from support.rawhttp import handshake, ws_frame
from support.rawws import next_frame
from support.upstream import UpstreamServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODES: dict[str, dict[str, Any]] = {
    "relay": {},
    "splice": {"passthrough": True},
    "frame relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 1 << 20}}]}},
}
CLOSE = struct.pack("!H", 4000) + b"bye"


def _slug(mode: str) -> str:
    return mode.replace(" ", "-")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("frames-in-the-heads-segment")
    with UpstreamServer() as upstream:
        apis = [api_entry(upstream.url("/echo"), name=_slug(mode), path=f"/{_slug(mode)}", **fields)
                for mode, fields in MODES.items()]  # fmt: skip
        config = write_config(directory, {"apis": apis})
        async with GatewayProcess([str(config)], cwd=directory, workers=1) as process:
            yield process


async def _connected(
    gateway: GatewayProcess, mode: str, first: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(handshake(f"/{_slug(mode)}") + first)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


@pytest.mark.parametrize("mode", MODES)
async def test_a_message_with_the_head_is_relayed(gateway: GatewayProcess, mode: str) -> None:
    """A text frame in the head's segment reaches the upstream: its echo comes back."""
    reader, writer = await _connected(gateway, mode, ws_frame(1, b"hello"))
    async with asyncio.timeout(10):
        assert await next_frame(reader) == (1, b"hello")
        writer.write(ws_frame(8, CLOSE))
        assert await next_frame(reader) == (8, CLOSE)
        assert await reader.read() == b""
    writer.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_ping_then_a_close_with_the_head_are_answered(gateway: GatewayProcess, mode: str) -> None:
    """A ping and a close frame in the head's segment: the pong, then the close mirrored back."""
    reader, writer = await _connected(gateway, mode, ws_frame(9, b"p") + ws_frame(8, CLOSE))
    async with asyncio.timeout(10):
        assert await next_frame(reader) == (10, b"p")
        assert await next_frame(reader) == (8, CLOSE)
        assert await reader.read() == b""
    writer.close()


@pytest.mark.parametrize("mode", MODES)
async def test_an_eof_before_any_frame_ends_the_connection(gateway: GatewayProcess, mode: str) -> None:
    """The client's FIN right after its request: the gateway ends the connection (no frame read)."""
    reader, writer = await _connected(gateway, mode, b"")
    writer.write_eof()
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()
