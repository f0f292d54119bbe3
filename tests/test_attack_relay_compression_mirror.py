"""On the relay, the client leg is compressed only when the upstream leg is.

An attack pass (``asgi-ws-gateway run``, ``passthrough: false``) sent 20 messages of 1 MiB of zeros
as 20,820 bytes of permessage-deflate, and an upstream that had agreed to no compression read
20,969,520 bytes: the gateway inflated them and sent them on, ~1,007 times the attacker's bandwidth,
onto the backend. The gateway connects upstream before it answers the client, so under its own
protocol it now answers the client with permessage-deflate only when the upstream agreed to it:
each leg carries what the client sent, compressed the same way or not at all.
"""

from __future__ import annotations

import asyncio
import base64
import os
import zlib
from pathlib import Path
from typing import Literal

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.rawhttp import ws_frame
from support.rawws import close_frame_in

MESSAGES = 8
SIZE = 512 * 1024  # zeros: ~1,000:1 under deflate


class _CountingConnection(ServerConnection):
    """The upstream's connection, counting the bytes it reads off the wire."""

    wire_bytes = 0

    def data_received(self, data: bytes) -> None:
        _CountingConnection.wire_bytes += len(data)
        super().data_received(data)


async def _raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A client offering permessage-deflate: its reader, writer and the gateway's 101 head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer, head


@pytest.mark.parametrize("upstream_compression", [None, "deflate"])
async def test_the_relays_client_leg_is_compressed_only_when_its_upstream_leg_is(
    tmp_path: Path, upstream_compression: Literal["deflate"] | None
) -> None:
    """A client offering permessage-deflate gets it only from an upstream that agreed to it, and the upstream
    reads about what the client sent, never what its compressed messages inflate to."""
    _CountingConnection.wire_bytes = 0
    received: list[int] = []
    all_in = asyncio.Event()

    async def sink(connection: ServerConnection) -> None:
        async for message in connection:
            received.append(len(message))
            if len(received) == MESSAGES:
                all_in.set()

    async with serve(
        sink, "127.0.0.1", 0, compression=upstream_compression, max_size=None, create_connection=_CountingConnection
    ) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        config = write_config(tmp_path, build_config(f"ws://127.0.0.1:{port}/", api={"passthrough": False}))
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1) as gateway:
            reader, writer, head = await _raw_client(gateway.port)
            compressed = b"permessage-deflate" in head.lower()
            assert compressed == (upstream_compression is not None), head
            deflate = zlib.compressobj(wbits=-15)
            sent = 0
            for _ in range(MESSAGES):
                payload = bytes(SIZE)
                if compressed:
                    frame = ws_frame(0x2, (deflate.compress(payload) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=0x40)
                else:
                    frame = ws_frame(0x2, payload)
                writer.write(frame)
                sent += len(frame)
                await writer.drain()
            async with asyncio.timeout(30):
                await all_in.wait()
            writer.write(ws_frame(0x8, (1000).to_bytes(2, "big")))
            async with asyncio.timeout(10):
                assert (await close_frame_in(reader))[0] == 1000
            writer.close()
    assert received == [SIZE] * MESSAGES
    handshake = 4096  # the upstream request's head, at most, and the client's close
    assert _CountingConnection.wire_bytes <= 2 * sent + handshake, (
        f"the upstream read {_CountingConnection.wire_bytes:,} bytes for {sent:,} sent by the client"
    )


SIZES_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": str(len(message.get("bytes") or b""))})
"""


async def test_an_in_process_upstream_keeps_the_clients_compression(tmp_path: Path) -> None:
    """An in-process (``asgi:``) app negotiates nothing and takes messages inflated, in the gateway's own
    process (its limit, ``max_message_size``, holds): the client keeps the permessage-deflate it offered."""
    (tmp_path / "sizes.py").write_text(SIZES_APP)
    config = write_config(tmp_path, build_config("asgi:sizes:app"))
    async with (
        GatewayProcess([str(config)], cwd=tmp_path, workers=1) as gateway,
        connect(gateway.url("/ws/echo")) as client,
    ):
        assert client.response is not None
        assert "permessage-deflate" in (client.response.headers.get("Sec-WebSocket-Extensions") or "")
        await client.send(bytes(SIZE))
        assert await client.recv() == str(SIZE)
