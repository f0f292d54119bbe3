"""Attack: TLS connections closed with their close_notify left unanswered, many at once, under
``asgi-ws-gateway run --ssl-certfile ...``.

A plain connection's close lingers (a FIN, then 2 s for the peer's), at most one descriptor in 8 of the
open-file limit at once, past that a plain close; and a lingering descriptor counts against the capacity
(half a connection). A TLS transport cannot half-close: it sends close_notify and waits for the peer's,
2 s once all it was sent is taken in (``passthrough.lingering_close._watch_tls_close``), and held its
descriptor that long uncounted, however many closed at once. Clients answered and closed
(``Connection: close``) that kept their end open, 360 a second from 4 threads, kept a worker under a 256
open-file limit at 228 descriptors, and 119 of 162 health checks failed meanwhile (plain text: 17
descriptors, none failed); a request at a time, 96 held 96 descriptors. Now a closing TLS connection
waiting for its peer's answer is a lingering one: counted, as many as there is room for, and past the room
aborted once its peer took in all it was sent. After: 65 descriptors at most, every health check served.
Real ``run`` processes and a real uvicorn server, a real certificate, blocking TLS sockets (a client that
reads only the answer leaves the close_notify behind it unread, so never answers it).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.passthrough.lingering_close import LINGER_SHARE, lingering_count
from asgi_ws_gateway.server import GatewayHTTPProtocol
from support import tls as test_tls
from support.processes import ServerProcess, ready_server
from support.servers import UvicornServer
from support.tls import healthz, make_ca

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux (TCP_INFO, /proc)")

OPEN_FILES = 256
ROOM = OPEN_FILES // LINGER_SHARE  # 32 closing connections may wait for their peer at once
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"


@contextmanager
def _tls_run(tmp_path: Path, ca: test_tls.TestCA) -> Iterator[ServerProcess]:
    """``run --ssl-certfile ... --ssl-keyfile ...`` under an open-file limit of :data:`OPEN_FILES`."""
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/"]}]}))
    tls = ["--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(ca.key_file)]
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({OPEN_FILES}, {OPEN_FILES}))\n"

    def command(port: int) -> list[str]:
        argv = ["asgi-ws-gateway", "run", str(config), "--port", str(port), *tls]
        script = f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module('asgi_ws_gateway', run_name='__main__')"
        return ["-c", limit + script]

    with ready_server(command, cwd=tmp_path) as server:
        yield server
        server.stop()


def _answered(port: int, context: ssl.SSLContext, held: list[socket.socket]) -> bytes:
    """``GET /healthz`` with ``Connection: close`` over TLS; the answer read, the close_notify behind it not,
    the connection kept open (in ``held``)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.append(raw)
    client = context.wrap_socket(raw, server_hostname="127.0.0.1")
    held.append(client)
    client.sendall(REQUEST)
    answer = b""
    while not answer.endswith(b"ok\n") and b"200" not in answer[:12]:
        answer += client.recv(4096)
    return answer


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_tls_closes_left_unanswered_hold_no_more_descriptors_than_the_lingering_room(tmp_path: Path) -> None:
    """Three times the room's worth of clients answered and closed, each keeping its end open: the
    gateway's descriptors stay near the room's (a close past it lets go once its answer is taken in), and
    a health check is served after them."""
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    held: list[socket.socket] = []
    try:
        with _tls_run(tmp_path, ca) as server:
            baseline = peak = _descriptors(server.process.pid)
            for _ in range(3 * ROOM):
                assert _answered(server.port, context, held).startswith(b"HTTP/1.1 200")
                peak = max(peak, _descriptors(server.process.pid))
            assert healthz(server.port, context).startswith(b"HTTP/1.1 200")
            output = server.output()
    finally:
        for sock in held:
            sock.close()
    # The room's, and the closes past it whose answer is not yet taken in (each a look, 8 ms: 5 or so at a
    # request every 1.7 ms); before, every one of them (96).
    assert peak - baseline <= 2 * ROOM, (baseline, peak)
    assert "Traceback" not in output


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"ok\n"})


async def test_a_tls_close_waiting_for_its_peer_counts_as_a_lingering_connection(tmp_path: Path) -> None:
    """A TLS connection closed after its answer is counted as lingering (the capacity counts it) while its
    close_notify waits unanswered, and no longer once its peer has gone."""
    ca = make_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    before = lingering_count()
    held: list[socket.socket] = []
    with UvicornServer(_ok, http=GatewayHTTPProtocol,
                       ssl_certfile=str(ca.cert_file), ssl_keyfile=str(ca.key_file)) as server:  # fmt: skip
        await asyncio.to_thread(_answered, server.port, context, held)
        for _ in range(100):  # the server's close, on its thread (a bound on the wait, not timed)
            if lingering_count() > before:
                break
            await asyncio.sleep(0.01)
        counted = lingering_count() - before
        for sock in held:
            sock.close()
        for _ in range(200):  # the peer gone: seen at the next look
            if lingering_count() == before:
                break
            await asyncio.sleep(0.01)
        left = lingering_count() - before
    assert (counted, left) == (1, 0)
