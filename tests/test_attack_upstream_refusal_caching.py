"""An upstream's refusal, relayed on the gateway's origin, is never stored by a cache nor a page of that origin.

Every connector relayed a refusal's caching headers as the upstream wrote them: a 404 with ``Cache-Control:
public, max-age=31536000`` (``Surrogate-Control``, ``CDN-Cache-Control``, ``Expires``) and a ``text/html``
body let a cache in front, keyed by the URL and not by ``Upgrade``, serve that body to a browser navigating
to the URL, as a page of the origin every API and the management console share. Now a relayed refusal
carries ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy:
sandbox`` instead of the upstream's caching headers, its body unchanged. Raw upstreams answer for the
splice, the frame relay and the relay; an in-process app through its refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from asgi_ws_gateway._types import Receive, Scope, Send
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import handshake, status_of
from support.servers import UvicornServer

BODY = b"<script>alert(document.domain)</script>"
CACHING = {
    "Cache-Control": "public, max-age=31536000",
    "Surrogate-Control": "max-age=31536000",
    "CDN-Cache-Control": "max-age=31536000",
    "Cloudflare-CDN-Cache-Control": "max-age=31536000",
    "Expires": "Thu, 01 Dec 2094 16:00:00 GMT",
    "Pragma": "cache",
    "Age": "0",
    "ETag": '"x"',
    "Last-Modified": "Thu, 01 Dec 2016 16:00:00 GMT",
    "X-Content-Type-Options": "none",
}
KEPT = {"Content-Type": "text/html", "X-App": "chat"}


def _lines() -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in {**CACHING, **KEPT}.items())


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 404 Not Found\r\n" + _lines() + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
    await writer.drain()
    writer.close()


async def _answer(port: int) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake("/ws/api"))
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def _headers(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]


def _assert_never_cached(head: bytes, body: bytes) -> None:
    assert status_of(head) == 404
    headers = _headers(head)
    assert ("cache-control", "no-store") in headers
    assert ("x-content-type-options", "nosniff") in headers
    assert ("content-security-policy", "sandbox") in headers
    for name, value in CACHING.items():
        assert (name.lower(), value) not in headers, name
    for name, value in KEPT.items():
        assert (name.lower(), value) in headers, name
    assert body == BODY


@pytest.mark.parametrize("mode", ["splice", "frame-relay", "relay"])
async def test_a_network_upstreams_refusal_is_never_cached(mode: str) -> None:
    listener = await asyncio.start_server(_refuse, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    modes: dict[str, dict[str, Any]] = {
        "splice": {},
        "frame-relay": {"message_policies": {"outbound": [{"limit-message-size": {"max": 1 << 20}}]}},
        "relay": {"passthrough": False},
    }
    api = {"name": "api", "path": "/ws/api", "upstreams": [f"ws://127.0.0.1:{port}/"], **modes[mode]}
    async with listener:
        with UvicornServer(ProbedGateway({"apis": [api]}), ws=PASSTHROUGH) as server:
            head, body = await _answer(server.port)
    _assert_never_cached(head, body)


async def test_an_in_process_apps_refusal_is_never_cached() -> None:
    raw = [(name.lower().encode(), value.encode()) for name, value in {**CACHING, **KEPT}.items()]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.http.response.start", "status": 404, "headers": raw})
        await send({"type": "websocket.http.response.body", "body": BODY})

    api = {"name": "api", "path": "/ws/api", "upstreams": [{"url": "asgi:", "app": app}]}
    with UvicornServer(ProbedGateway({"apis": [api]}), ws=PASSTHROUGH) as server:
        head, body = await _answer(server.port)
    _assert_never_cached(head, body)
