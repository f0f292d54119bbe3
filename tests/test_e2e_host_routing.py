"""End to end: the gateway's policies, the upstream and its framework read one host from one ``Host``.

Real uvicorn runs the gateway; behind it an in-process (``asgi:``) Starlette app routes ``admin.example.com``
to an admin handler with its ``Host`` route (case-insensitive, port ignored), or a real network upstream
records each handshake. Before: a ``choose`` gating ``admin.example.com`` on ``{request.host}`` was passed
by with ``ADMIN.example.com`` or ``admin.example.com:443``, and the client reached the admin handler
without the key (``{request.hostname}`` did not exist); ``Host: evil.test,gw.test`` was a 101 and the
upstream got it in ``X-Forwarded-Host``, two hosts to frameworks that read one element of a list.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Host, Router, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.configs import build_config
from support.gateway import PASSTHROUGH
from support.servers import UvicornFactory, WSImpl
from support.upstream import UpstreamServer

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def _status(port: int, path: str, host: str, extra: str = "") -> int:
    """The status of an upgrade request for ``path`` with ``Host: host`` exactly as written."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode("latin-1")
        )
        await writer.drain()
        async with asyncio.timeout(10):
            return int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
    finally:
        writer.close()


class _Sites:
    """A Starlette app with an admin virtual host and a public one; records which handler ran, with the Host."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []
        admin = Router([WebSocketRoute("/ws/chat", self._handler("admin"))])
        self.app = Starlette(
            routes=[Host("admin.example.com", app=admin), WebSocketRoute("/ws/chat", self._handler("public"))]
        )

    def _handler(self, site: str) -> Any:
        async def handle(websocket: WebSocket) -> None:
            self.hits.append((site, websocket.headers["host"]))
            await websocket.accept()
            await websocket.close()

        return handle


def _gate(ref: str) -> dict[str, Any]:
    """A ``choose`` asking the admin site's clients for a key, by ``ref``."""
    key = {"check-header": {"header": "x-admin-key", "values": ["s3cret"], "failed_status": 401}}
    return {"choose": {"when": [{"if": {"ref": ref, "equals": "admin.example.com"}, "policies": [key]}]}}


@pytest.fixture
def sites() -> _Sites:
    return _Sites()


def _serve(uvicorn_server: UvicornFactory, sites: _Sites, ws_impl: WSImpl) -> int:
    api = {
        "name": "chat",
        "path": "/ws/chat",
        "upstreams": [{"app": sites.app}],
        "policies": [_gate("request.hostname")],
    }
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=ws_impl)
    return int(server.url().rsplit(":", 1)[1].split("/", 1)[0])


@pytest.mark.parametrize(
    "host", ["admin.example.com", "ADMIN.example.com", "admin.example.com:443", "Admin.Example.Com:8080",
             "admin.example.com.", "ADMIN.EXAMPLE.COM.:80"],
)  # fmt: skip
async def test_every_spelling_of_the_admin_host_is_gated_by_request_hostname(
    uvicorn_server: UvicornFactory, sites: _Sites, ws_impl: WSImpl, host: str
) -> None:
    """No key: 401, and the app's admin handler never runs, whatever the case, port or trailing dot."""
    port = _serve(uvicorn_server, sites, ws_impl)
    assert await _status(port, "/ws/chat", host) == 401
    assert sites.hits == []


async def test_the_admin_host_with_its_key_reaches_the_admin_handler_with_the_host_as_sent(
    uvicorn_server: UvicornFactory, sites: _Sites, ws_impl: WSImpl
) -> None:
    """The in-process app routes by the client's Host, as sent: the host the policies' hostname names."""
    port = _serve(uvicorn_server, sites, ws_impl)
    assert await _status(port, "/ws/chat", "ADMIN.example.com:443", "X-Admin-Key: s3cret\r\n") == 101
    assert await _status(port, "/ws/chat", "public.example.com") == 101
    assert sites.hits == [("admin", "ADMIN.example.com:443"), ("public", "public.example.com")]


BAD_HOSTS = ["evil.test,gw.test", "gw.test;for=1.2.3.4", "gw%2etest", "gw.test:99999", ":", "gw.test:",
             "[fe80::1%eth0]:80", "0x7f.0.0.1"]  # fmt: skip


def _network_config(upstream: UpstreamServer, **api: Any) -> dict[str, Any]:
    return build_config(upstream.url("/headers/lobby"), name="chat", path="/ws/chat", api=api)


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_a_host_no_client_sends_is_a_400_and_never_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl, host: str
) -> None:
    server = uvicorn_server(WebSocketGateway(not_found, config=_network_config(upstream)), ws=ws_impl)
    port = int(server.url().rsplit(":", 1)[1].split("/", 1)[0])
    assert await _status(port, "/ws/chat", host) == 400
    assert await _status(port, "/ws/chat", "gw.test:8080") == 101
    assert [h.header("x-forwarded-host") for h in upstream.handshakes] == ["gw.test:8080"]


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_the_splice_refuses_the_same_hosts(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, host: str
) -> None:
    config = _network_config(upstream, passthrough=True)
    server = uvicorn_server(WebSocketGateway(not_found, config=config), ws=PASSTHROUGH)
    port = int(server.url().rsplit(":", 1)[1].split("/", 1)[0])
    assert await _status(port, "/ws/chat", host) == 400
    assert upstream.handshakes == []
