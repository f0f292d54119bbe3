"""Audit through a real ``asgi-ws-gateway run --management``: ``POST /connections/{id}/messages`` to a
spliced connection whose upstream is part way through a fragmented message.

The splice writes the gateway's message between messages only (it cannot land inside the upstream's),
so the send is refused with 409; the answer said the connection "is closing", which it was not, and
an operator took it for gone. Once the upstream's message ends, the same send is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2

from support.configs import write_config
from support.hostile import Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.management import TOKEN
from support.processes import standalone
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, next_frame

UPGRADE = (
    b"GET /s HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_a_send_while_the_upstream_is_mid_message_is_refused_as_such_and_goes_once_it_ends(
    tmp_path: Path, hostile: Callable[[Handler], Awaitable[int]]
) -> None:
    message_ends = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=ws_frame(2, b"x" * 100, mask=False, fin=False))
        await message_ends.wait()
        writer.write(ws_frame(0, b"y" * 10, mask=False))
        await writer.drain()
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await close_frame_in(reader)  # the gateway's, once its client left: answered, as a server does
            writer.write(ws_frame(0x8, b"\x03\xe8", mask=False))
        writer.close()

    port = await hostile(handle)
    config = write_config(
        tmp_path, {"apis": [{"name": "s", "path": "/s", "upstreams": [f"ws://127.0.0.1:{port}/"], "close_timeout": 1}]}
    )
    async with standalone(config) as gateway:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(base_url=gateway.url + "/", headers=headers, trust_env=False, timeout=10) as api:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(UPGRADE)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            try:
                assert await asyncio.wait_for(next_frame(reader), 5) == (2, b"x" * 100)  # the first fragment
                (connection,) = (await api.get("connections")).json()["connections"]
                refused = await api.post(f"connections/{connection['id']}/messages", json={"text": "hello"})
                assert refused.status_code == 409
                assert "part way through a message" in refused.json()["detail"]
                message_ends.set()
                assert await asyncio.wait_for(next_frame(reader), 5) == (0, b"y" * 10)  # the message's end
                sent = await api.post(f"connections/{connection['id']}/messages", json={"text": "hello"})
                assert sent.status_code == 200
                assert await asyncio.wait_for(next_frame(reader), 5) == (1, b"hello")
            finally:
                writer.close()
                await writer.wait_closed()
