"""The server's look at closing TLS connections (``server.tls_close``) lets go of a connection once it is
lost, not at its next look (``header_timeout`` apart): it held each closed TLS connection's transport, TLS
protocol, SSL object and buffers until then, 500 TLS requests answered and closed 7,540 objects (~27 MB
of a ``run`` worker) 2.5 s after the last. A real uvicorn server with the gateway's protocols over TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from asgi_ws_gateway.server import GatewayHTTPProtocol, GatewayWebSocketProtocol
from asgi_ws_gateway.server.head_deadline import HeadDeadline
from asgi_ws_gateway.server.tls_close import TLS_CLOSES
from support.servers import UvicornServer
from support.tls import make_ca

REQUESTS = 20
SESSIONS = 5


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})


def _request(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as client,
    ):
        client.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
        return answer


async def test_a_lost_tls_connection_is_let_go_of_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP requests and WebSocket sessions over TLS, each closed: none is held by the look after its end."""
    monkeypatch.setattr(HeadDeadline, "header_timeout", 60.0)  # the next look: well after the test
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    held_before = len(TLS_CLOSES)
    with UvicornServer(_app, ws=GatewayWebSocketProtocol, http=GatewayHTTPProtocol,  # type: ignore[arg-type]
                       ssl_certfile=str(ca.cert_file), ssl_keyfile=str(ca.key_file)) as server:  # fmt: skip
        for _ in range(REQUESTS):
            assert (await asyncio.to_thread(_request, server.port, context)).startswith(b"HTTP/1.1 200")
        for _ in range(SESSIONS):
            async with connect(server.url("/ws", "wss"), ssl=context) as ws:
                await ws.wait_closed()
        for _ in range(100):  # each connection_lost, on the server's thread (a bound on the wait, not timed)
            if len(TLS_CLOSES) <= held_before:
                break
            await asyncio.sleep(0.05)
        held = len(TLS_CLOSES) - held_before
    assert held == 0, f"{held} of {REQUESTS + SESSIONS} lost TLS connections still held"
