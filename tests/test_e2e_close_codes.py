"""End to end: a close frame with a code no peer may send (RFC 6455 §7.4) ends at the gateway.

A raw client sends one close frame through real uvicorn to a raw upstream that records the close
codes it is sent. Under every path (the splice, the frame relay, the relay behind the gateway's
protocol and behind wsproto) the client gets 1002 (uvicorn's wsproto implementation drops the TCP
connection instead, as it does in front of any application) and the upstream never sees the invalid
code: it gets the gateway's own 1002. A valid code (4001) goes through as it is. The metrics record only the
codes that were sent on the wire, 4001 as ``4xxx`` (Autobahn 7.9.x, 7.13.x).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.rawws import next_frame
from support.servers import UvicornFactory, WSImpl
from support.telemetry import close_counts

BOUND = 10.0
INVALID = [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535]
MODES: dict[str, tuple[WSImpl, dict[str, Any]]] = {
    "splice": (PASSTHROUGH, {"passthrough": True}),
    "frame relay": (PASSTHROUGH, {"message_policies": {"inbound": [{"limit-message-size": {"max": 1000}}]}}),
    "relay": (PASSTHROUGH, {"passthrough": False}),
    "relay wsproto": ("wsproto", {"passthrough": False}),
}


class RecordingUpstream:
    """A raw upstream: answers the handshake, echoes the first close frame it gets, records its code."""

    def __init__(self) -> None:
        self.codes: list[int | None] = []
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        try:
            while True:
                opcode, payload = await next_frame(reader)
                if opcode == 0x8:
                    self.codes.append(int.from_bytes(payload[:2], "big") if payload else None)
                    writer.write(ws_frame(0x8, payload[:2], mask=False))
                    await writer.drain()
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[RecordingUpstream, int]]:
    recording = RecordingUpstream()
    server = await asyncio.start_server(recording.serve, "127.0.0.1", 0)
    async with server:
        yield recording, server.sockets[0].getsockname()[1]


async def _close_with(port: int, payload: bytes) -> int | None:
    """Open a WebSocket on the gateway, send a close frame with ``payload``; the code of the close frame it answers."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        async with asyncio.timeout(BOUND):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, handshake())
            received = b""
            while b"\r\n\r\n" not in received:
                received += await loop.sock_recv(sock, 65536)
            head, _, received = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            await loop.sock_sendall(sock, ws_frame(0x8, payload))
            while len(received) < 4 or len(received) < 2 + (received[1] & 0x7F):
                if not (chunk := await loop.sock_recv(sock, 65536)):
                    return None  # closed without a close frame
                received += chunk
    finally:
        sock.close()
    assert received[0] == 0x88 and not received[1] & 0x80, received
    return int.from_bytes(received[2:4], "big")


@pytest.mark.parametrize("mode", list(MODES))
async def test_invalid_close_codes_get_1002_and_never_reach_the_upstream(
    uvicorn_server: UvicornFactory, upstream: tuple[RecordingUpstream, int], mode: str
) -> None:
    """Codes 0, 999, 1004-1006, 1015, 2999, 5000, 65535: the client gets 1002, the upstream 1002, never the code."""
    recording, port = upstream
    ws, fields = MODES[mode]
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    api = api_entry(f"ws://127.0.0.1:{port}/", ping_interval=None, close_timeout=2.0, **fields)
    gateway = ProbedGateway({"apis": [api]}, meter_provider=provider)
    server = uvicorn_server(gateway, ws=ws)
    try:
        for code in INVALID:
            answer = await _close_with(server.port, code.to_bytes(2, "big"))
            assert answer == 1002 or (answer is None and ws == "wsproto"), code  # uvicorn's wsproto drops it
        assert await _close_with(server.port, (4001).to_bytes(2, "big") + b"bye") == 4001
        await gateway.settle()
        assert recording.codes == [1002] * len(INVALID) + [4001]
        closes = close_counts(reader)  # the relay counts the client's protocol error as its close
        assert {code for _side, code in closes} == {1002, "4xxx"}
        assert sum(closes.values()) == len(INVALID) + 1
    finally:
        provider.shutdown()
