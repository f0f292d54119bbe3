"""Raw upstreams that answer as a test scripts them, and a gateway in front of one, per connector."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import accept_upstream, ws_frame
from support.servers import UvicornFactory

__all__ = ["CONNECTORS", "Handler", "gateway_before", "hostile_upstream", "sends_then_answers_close"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CONNECTORS: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame relay": {"message_policies": {"outbound": [{"limit-message-size": {"max": 65536}}]}},
    "relay": {"passthrough": False},
}
"""The API settings that put each of the gateway's connectors in front of an upstream."""


@pytest.fixture(name="hostile")
async def hostile_upstream() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Start a raw upstream running a handler for each connection; returns its port."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def gateway_before(port: int, connector: str, uvicorn_server: UvicornFactory, **api: Any) -> tuple[ProbedGateway, str]:
    """A gateway under the gateway's protocol whose API ``/h`` reaches ``port`` through ``connector``."""
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", **CONNECTORS[connector], **api)
    gateway = ProbedGateway({"apis": [entry]})
    return gateway, uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")


def sends_then_answers_close(message: bytes, got: list[bytes]) -> Handler:
    """A 101 and ``message`` in one write; then the gateway's close frame (its first byte and unmasked
    payload kept in ``got``) is answered with a close, and the connection ends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=message)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readexactly(2)
            body = await reader.readexactly(4 + (head[1] & 0x7F))  # masked, under 126 bytes
            got.append(head[:1] + bytes(b ^ body[i % 4] for i, b in enumerate(body[4:])))
            writer.write(ws_frame(8, b"\x03\xe8", mask=False))
            await writer.drain()
        writer.close()

    return handle
