"""Attack: a flood of connections that never send a request head, until the process's descriptors run out.

Each such connection holds a descriptor until the head deadline (10 s). Before: enough of them used
up the open-file limit, and then the server (uvloop, under ``run``) accepted every new connection only
to close it at once: WebSocket clients and health checks were turned away, and nothing was logged.
Now a connection that lands near the limit closes the connections that have waited longest for a
head. Real ``asgi-ws-gateway run`` under a small open-file limit, a real upstream, real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.server.head_deadline import HEAD_WAITERS, SHED_MARGIN
from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import create_app
from asgi_ws_gateway.telemetry import names as n
from support.clients import connect
from support.configs import build_config, write_config
from support.otlp import OtlpReceiver
from support.processes import GatewayProcess
from support.rawhttp import handshake
from support.servers import UvicornServer
from support.telemetry import export_to
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")

LIMIT = 128
FLOOD = 3 * LIMIT  # three times what the process could hold


@asynccontextmanager
async def _gateway(tmp_path: Path, upstream: UpstreamServer) -> AsyncIterator[GatewayProcess]:
    config = write_config(tmp_path, build_config(upstream))
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, open_files=(LIMIT, LIMIT),
                              log=tmp_path / "gateway.log", log_level="info") as gateway:  # fmt: skip
        yield gateway


@contextmanager
def _idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` that send nothing (the kernel completes them; the server accepts them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (what it sent before, unread, is read past)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False  # still open
    except ConnectionResetError:
        pass
    return True


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return int(response.status)


async def _echoes(ws: Any, text: str) -> None:
    await ws.send(text)
    assert await ws.recv() == text


async def test_a_flood_of_idle_connections_sheds_them_not_clients_health_checks_or_open_connections(
    tmp_path: Path, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    otlp = OtlpReceiver()
    with otlp:
        export_to(monkeypatch, otlp, "grpc")  # metrics leave when the process stops
        shed = await _flood(tmp_path, upstream)
        (point,) = otlp.latest(n.CONNECTIONS_SHED.name).values()
    assert point.value == shed
    log = (tmp_path / "gateway.log").read_text()
    assert f"open-file limit nearly reached (descriptor {LIMIT - SHED_MARGIN} of {LIMIT})" in log
    assert "Traceback" not in log


async def _flood(tmp_path: Path, upstream: UpstreamServer) -> int:
    """Floods a gateway with idle connections, checks it serves what it should; the connections it closed."""
    async with _gateway(tmp_path, upstream) as gateway, AsyncExitStack() as stack:
        url = gateway.url("/ws/echo")
        held = [await stack.enter_async_context(await connect(url)) for _ in range(8)]
        # A kept-alive HTTP connection, idle after its first response: waiting for a head too.
        kept_alive = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        stack.callback(kept_alive.close)
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert kept_alive.recv(4096).startswith(b"HTTP/1.1 200")
        with _idle_sockets(gateway.port, FLOOD) as idle:
            await asyncio.sleep(0.5)  # the server accepts them all
            async with asyncio.timeout(10), await connect(url) as ws:
                await _echoes(ws, "a client gets in")
            assert await asyncio.to_thread(_healthz, gateway.port) == 200
            for i, open_ws in enumerate(held):
                await _echoes(open_ws, f"still here {i}")
            closed = [_closed_by_server(sock) for sock in idle]
            assert _closed_by_server(kept_alive)  # the longest waiting: shed first
            assert not all(closed[-SHED_MARGIN:])  # the newest are still open: only what made room was shed
            assert sum(closed) >= FLOOD - LIMIT  # the process never held more than it could
            return sum(closed) + 1  # and the kept-alive one


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
async def test_connections_leave_the_waiting_list_however_they_end(upstream: UpstreamServer, http: Any) -> None:
    """Served, upgraded, refused as too large, closed while idle or mid-head: none stays listed."""
    app = create_app({"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}]})  # type: ignore[arg-type]
    ws_protocol: Any = GatewayWebSocketProtocol
    with UvicornServer(app, ws=ws_protocol, http=http) as server:

        def listed() -> int:
            ports = (waiting.transport.get_extra_info("sockname")[1] for waiting in HEAD_WAITERS.waiting)
            return sum(1 for port in ports if port == server.port)

        async def opened() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection("127.0.0.1", server.port)

        idle, partial, served, upgraded, too_large = [await opened() for _ in range(5)]
        partial[1].write(b"GET /healthz HTTP/1.1\r\n")
        served[1].write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await served[0].readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        upgraded[1].write(handshake())
        assert (await upgraded[0].readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        too_large[1].write(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        refusal = await too_large[0].readuntil(b"\r\n\r\n")  # h11 may refuse first, on its own 16 KiB limit
        assert refusal.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400"))
        await asyncio.sleep(0.1)
        assert listed() == 3  # idle, partial and the kept-alive served one wait for a head
        for _, writer in (idle, partial, served, upgraded, too_large):
            writer.close()
        async with asyncio.timeout(5):
            while listed():  # noqa: ASYNC110 - the server's state, not an event of ours
                await asyncio.sleep(0.02)
