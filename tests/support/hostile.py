"""Raw upstreams that answer as a test scripts them, and a gateway in front of one, per connector."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import next_frame
from support.servers import UvicornFactory

__all__ = [
    "CONNECTORS",
    "Handler",
    "StreamsPastTheClose",
    "gateway_before",
    "hostile_upstream",
    "sends_then_answers_close",
    "sends_then_answers_its_close",
]

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


def sends_then_answers_its_close(burst: bytes, closes: list[bytes]) -> Handler:
    """A 101 and ``burst`` in one write; then what the gateway sends is read up to its close frame (the
    close's payload kept in ``closes``), answered at once with 1000, and the connection ends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=burst)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (frame := await next_frame(reader))[0] != 0x8:
                pass
            closes.append(frame[1])
            writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
            await writer.drain()
        writer.close()

    return handle


class StreamsPastTheClose:
    """A raw upstream that sends text messages every ~2 ms for good and never answers a close frame.

    ``closes`` holds the codes of the close frames it read, ``after`` the number of the first message it sent
    once it had read one (``closed`` is set then), ``ended`` is set when the gateway dropped it. A subclass
    chooses each message's payload (``message``; by default its number and 1,000 bytes)."""

    def __init__(self) -> None:
        self.sent = 0
        self.after: int | None = None
        self.closes: list[bytes] = []
        self.closed = asyncio.Event()
        self.ended = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    def message(self) -> bytes:
        return b"%d " % self.sent + b"u" * 1000

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            feed = asyncio.create_task(self._feed(writer))
            try:
                while True:
                    opcode, payload = await next_frame(reader)
                    if opcode == 0x8:
                        self.closes.append(payload[:2])
                        if self.after is None:
                            self.after = self.sent + 1
                            self.closed.set()
            finally:
                feed.cancel()
        self.ended.set()
        writer.transport.abort()

    def abort_all(self) -> None:
        for writer in self.writers:
            writer.transport.abort()

    async def _feed(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                self.sent += 1
                writer.write(ws_frame(0x1, self.message(), mask=False))
                await writer.drain()
                await asyncio.sleep(0.002)  # Load, not synchronisation: a steady stream
