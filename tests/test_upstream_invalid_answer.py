"""An upstream whose 101 breaks the protocol is the upstream's fault on the relay as on the splice:
the client gets a 502, the backend counts as failing, and the upstream's text in a log line or a
detail is cut and escaped. A real uvicorn runs the gateway in front of a raw hostile upstream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator

import pytest

from asgi_ws_gateway.errors import HandshakeDenied, UpstreamUnreachable
from asgi_ws_gateway.policies.build import load_config
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.websockets_client import WebSocketsConnector
from support.configs import build_config
from support.gateway import ProbedGateway
from support.servers import UvicornFactory

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
# What each case adds to an otherwise valid 101 (None: a wrong Sec-WebSocket-Accept instead).
_ANSWERS: dict[str, bytes | None] = {
    "badaccept": None,
    "badproto": b"Sec-WebSocket-Protocol: \xff\xfe evil,,;\r\n",
    "badext": b"Sec-WebSocket-Extensions: x\xff\xfe=;;\r\n",
    "longhdr": b"Sec-WebSocket-Extensions: " + b"A" * 7000 + b"\r\n",
}


@pytest.fixture
async def hostile() -> AsyncIterator[int]:
    """The port of an upstream that answers ``/<case>`` with the 101 of ``_ANSWERS[case]``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        case = head.split(b" ")[1].rsplit(b"/", 1)[-1].decode()
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        extra = _ANSWERS[case]
        if extra is None:
            accept, extra = b"A" * 27 + b"=", b""
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n")  # fmt: skip
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("case", list(_ANSWERS))
async def test_an_invalid_101_is_the_upstreams_fault(hostile: int, case: str) -> None:
    """A 502 naming the upstream, never a 400; the quoted header at most 80 characters, ASCII only."""
    url = f"ws://127.0.0.1:{hostile}/{case}"
    api = load_config(build_config(url, name="h", path="/h", api={"passthrough": False})).apis[0]
    with pytest.raises(HandshakeDenied) as caught:
        await WebSocketsConnector(api, api.upstreams[0]).connect(
            UpstreamRequest(url=url, headers=[], subprotocols=["chat"], scope={})
        )
    assert isinstance(caught.value, UpstreamUnreachable) and caught.value.status == 502
    detail = caught.value.detail
    assert "answered the handshake with an invalid 101" in detail
    assert detail.isascii() and detail.isprintable() and len(detail) < len(url) + 140


async def test_the_client_gets_a_502_and_the_backend_counts_as_failing(
    hostile: int, uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the gateway's relay: 502 upstream_unreachable, the backend's failure recorded, and the
    log lines quote at most 80 characters of the upstream's 7 KB header."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    config = build_config(f"ws://127.0.0.1:{hostile}/{{case}}", name="h", path="/h/{case}", api={"passthrough": False})
    gateway = ProbedGateway(config)
    port = int(uvicorn_server(gateway).url().rsplit(":", 1)[1].split("/", 1)[0])
    for case in ("badaccept", "longhdr"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /h/{case} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert head.split(b" ", 2)[1] == b"502", head
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 2
    lines = [r.getMessage() for r in caplog.records]
    assert any("invalid 101" in line for line in lines)
    assert all("A" * 100 not in line and line.isascii() for line in lines)
