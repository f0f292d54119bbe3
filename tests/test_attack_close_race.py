"""Attack: a client's protocol error while the upstream is talking must not make the gateway log ERROR.

The gateway's WebSocket protocol closes the connection itself when a client breaks the protocol
(1002, 1007). If the relay then sends the upstream's next message, or its close, uvicorn raised a
RuntimeError, logged as "relay pump failed" with a traceback: any client could flood the log by
sending bad frames to a busy API. Real uvicorn, the gateway's protocol, a flooding upstream and an
in-process one that closes at once (both race the client's fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import not_found
from support.servers import UvicornServer
from support.upstream import UpstreamServer

GATEWAY_WS: Any = GatewayWebSocketProtocol
HEAD = (
    "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def closes_at_once(scope: Any, receive: Any, send: Any) -> None:
    """An in-process upstream that accepts, says one thing and closes: its close races the client's fault."""
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "hello"})
    await send({"type": "websocket.close", "code": 1000})


@pytest.fixture
def server(upstream: UpstreamServer, caplog: pytest.LogCaptureFixture) -> Iterator[UvicornServer]:
    caplog.set_level(logging.INFO)
    flood = upstream.url("/flood/512")
    config: dict[str, Any] = {
        "apis": [
            # The gateway's protocol checks the client's frames only when it relays.
            {"name": "flood", "path": "/flood", "upstreams": [flood], "compression": None, "passthrough": False},
            # Spliced, the frame scanner stops framing faults (UTF-8 is left to the upstream's endpoint).
            {"name": "spliced", "path": "/spliced", "upstreams": [flood], "compression": None},
            {"name": "brief", "path": "/brief", "upstreams": [{"app": closes_at_once}]},
        ]
    }
    with UvicornServer(WebSocketGateway(not_found, config=config), ws=GATEWAY_WS, log_level="info") as srv:
        yield srv


def frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    return bytes([0x80 | opcode, (0x80 if masked else 0) | len(payload)]) + (b"\0\0\0\0" if masked else b"") + payload


FAULTS = {
    "invalid-utf8": (frame(1, b"\xff\xfe"), 1007),
    "unmasked": (frame(1, b"hi", masked=False), 1002),
    "reserved-opcode": (frame(3, b"x"), 1002),
    "close-1005": (frame(8, struct.pack("!H", 1005)), 1002),
}


async def _fault(port: int, path: str, data: bytes) -> int:
    """Open ``path``, send ``data`` once the upstream talks, and return the close code the client gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(HEAD.format(path=path).encode())
        async with asyncio.timeout(10):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            writer.write(data)
            while True:  # skip the upstream's messages up to the close frame
                first, second = await reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", await reader.readexactly(8))[0]
                payload = await reader.readexactly(length)
                if first & 0x0F == 8:
                    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


_CASES = [(path, fault) for path in ("/flood", "/brief", "/spliced") for fault in FAULTS]
_CASES.remove(("/spliced", "invalid-utf8"))  # the flooding upstream never reads it: no 1007 from anyone


@pytest.mark.parametrize(("path", "fault"), _CASES, ids=[f"{fault}-{path}" for path, fault in _CASES])
async def test_a_protocol_error_racing_the_upstream_logs_no_error(
    server: UvicornServer, caplog: pytest.LogCaptureFixture, path: str, fault: str
) -> None:
    """Ten bad clients in a row: each gets its close code, and no record is ERROR or carries a traceback."""
    data, code = FAULTS[fault]
    for _ in range(10):
        assert await _fault(server.port, path, data) in (code, 1000)  # /brief may close first, cleanly
    for _ in range(200):  # the relay finishes after the client has its close: wait for its tasks
        if not server.server.server_state.tasks:
            break
        await asyncio.sleep(0.01)
    loud = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == []
