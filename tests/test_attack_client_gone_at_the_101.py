"""A client that goes right after its 101 (or before it comes): its end is seen at once.

Suspected (2026-12-07): a FIN, a close frame or a reset that comes while the connection passes from
the handshake's protocol to the splice, the frame relay or the relay was lost, and only keepalive
(or a shutdown's close wait) noticed the client gone. Each API here pings every 60 s, longer than
the waits for the access line and the upstream's close, so only the EOF's own path can end a
connection in time. Not so: the case seen was its test's client, whose ``writer.close()`` only
schedules the socket's close, and whose blocking ``server.stop()`` right after kept the loop from
ever sending the FIN (``tests/support/rawhttp.py``'s ``upgrade_status`` now waits for it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from support.access import access_line
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.processes import ready_server
from support.rawhttp import handshake, ws_frame
from support.servers import UvicornServer
from support.upstream import UpstreamServer

CONNECTORS: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame-relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 4096}}]}},
    "relay": {"passthrough": False},
}
HTTP: dict[str, Any] = {"uvicorn": "auto", "gateway-httptools": GatewayHTTPProtocol, "gateway-h11": GatewayH11Protocol}
KEEPALIVE = {"ping_interval": 60, "ping_timeout": 60}
"""Longer than any wait here: keepalive must not be what ends a connection."""

AFTER_101 = {"fin": "by client with 1006", "close-frame": "by client with 1000", "rst": "by client with 1006"}
"""The ends that come once the 101 is read, and what the access line says of each."""
BEFORE_101 = ("pipelined-fin", "fin-while-upstream-answers")
"""The ends that come before the 101: a message and the FIN in the request's segment; the FIN while
the upstream holds its answer. The client may be served (a half-closed client still reads) or not."""
ENDS = (*AFTER_101, *BEFORE_101)


async def _go(port: int, path: str, end: str, upstream: UpstreamServer) -> bytes:
    """One connection to ``path`` that ends the way ``end`` names; what the client read of the answer."""
    shaken = len(upstream.handshakes)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(path) + (ws_frame(0x1, b"hi") if end == "pipelined-fin" else b""))
    if end in BEFORE_101:
        if end == "fin-while-upstream-answers":
            async with asyncio.timeout(10):
                while len(upstream.handshakes) == shaken:  # noqa: ASYNC110 - another thread's record
                    await asyncio.sleep(0.01)
        writer.write_eof()
        head = await asyncio.wait_for(reader.read(), 10)  # the 101 (or nothing) and the gateway's end
    else:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        if end == "close-frame":
            writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
        elif end == "rst":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    await writer.wait_closed()  # close() only schedules the socket's close
    return head


def _apis(upstream: UpstreamServer, connector: str, end: str) -> list[dict[str, Any]]:
    """The API ``end`` goes to: its upstream holds its 101 for a second while the client leaves."""
    target = upstream.url("/slow?delay=1" if end == "fin-while-upstream-answers" else "/echo")
    fields = {**CONNECTORS[connector], **KEEPALIVE}
    return [api_entry(target, name=f"{connector}-{end}", path=f"/{connector}/{end}", **fields)]


@pytest.mark.parametrize("http", sorted(HTTP))
@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("connector", sorted(CONNECTORS))
async def test_uvicorn_sees_a_client_gone_around_its_101(
    upstream_server: UpstreamServer, caplog: pytest.LogCaptureFixture, connector: str, end: str, http: str
) -> None:
    caplog.set_level(logging.INFO)
    closed = len(upstream_server.closes)
    gateway = ProbedGateway({"apis": _apis(upstream_server, connector, end)})
    with UvicornServer(gateway, ws=PASSTHROUGH, http=HTTP[http]) as server:
        head = await _go(server.port, f"/{connector}/{end}", end, upstream_server)
        line = await access_line(caplog)
        if head.startswith(b"HTTP/1.1 101"):
            assert f"101 {connector}-{end} closed {AFTER_101.get(end, 'by client with 1006')}" in line, line
            async with asyncio.timeout(10):
                await upstream_server.wait_for_closes_async(closed + 1)  # the upstream's leg ended too
        else:
            assert head == b"" and "abandoned (client went away)" in line, (head, line)
        await gateway.settle()


async def test_run_sees_each_client_gone_around_its_101(tmp_path: Path, upstream_server: UpstreamServer) -> None:
    """One ``run`` for every connector and end, each connection's access line waited for in turn, then
    SIGTERM: no connection is left for the shutdown to close."""
    apis = [api for connector in CONNECTORS for end in ENDS for api in _apis(upstream_server, connector, end)]
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": apis}))
    command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml"]
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        shaken, ended = len(upstream_server.handshakes), len(upstream_server.closes)
        for n, (connector, end) in enumerate(((c, e) for c in CONNECTORS for e in ENDS), 1):
            await _go(server.port, f"/{connector}/{end}", end, upstream_server)
            await asyncio.to_thread(server.wait_for_line, ' - "WebSocket /', times=n, timeout=10)  # its access line
            async with asyncio.timeout(10):  # and every upstream leg it opened ended
                opened = len(upstream_server.handshakes) - shaken
                await upstream_server.wait_for_closes_async(ended + opened)
        assert server.stop() == 0
        output = server.output()
    for connector in CONNECTORS:
        for end, closed in AFTER_101.items():
            assert f'"WebSocket /{connector}/{end}" 101 {connector}-{end} closed {closed}' in output, output
    assert "closed by gateway" not in output, output  # none was left for the shutdown to close
