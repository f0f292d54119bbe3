"""A refused client that closes at once: the refusal's lingering close sees its end and lets it go.

Seen (2026-12-07): a 400 from websockets' header parsing (a relayed API) logged "lingering close: the
peer still sent after 2 s" though its client had closed at once, and each stop waited 2 s for it.
The linger had nothing to see: the test's ``writer.close()`` only schedules the socket's close, and
its blocking ``server.stop()`` right after kept the loop from sending the FIN. Here each refusal path
that lingers (the WebSocket protocol's, the HTTP parser's, the upstream's refusal relayed), under
``run``, with the client's FIN after the response, its FIN with the request, or a reset: a linger
that missed the end would hold the shutdown and log its 2 s bound.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest
import yaml

from support.configs import api_entry
from support.processes import ready_server
from support.rawhttp import HUGE_HEADER, handshake, status_of
from support.upstream import UpstreamServer

BAD_EXTENSIONS = b"Sec-WebSocket-Extensions: a\x85\r\n"
"""A header value websockets cannot parse: its ``InvalidHeaderFormat``, a 400."""

REFUSALS: dict[str, tuple[bytes, int]] = {
    "relayed-bad-header": (handshake("/relayed", BAD_EXTENSIONS), 400),
    "spliced-bad-header": (handshake("/spliced", BAD_EXTENSIONS), 400),
    "no-api": (handshake("/nowhere"), 404),
    "upstream-refused": (handshake("/refused"), 403),
    "bad-head": (b"GET /relayed HTTP/1.1\r\nHost: gw\r\nno colon here\r\n\r\n", 400),
    "huge-header": (handshake("/relayed", HUGE_HEADER), 431),
    "long-target": (handshake("/relayed?q=" + "a" * 100_000), 414),
}
ENDS = ("fin", "fin-with-request", "rst")
LINGERED_OUT = "lingering close: the peer"
"""The start of the linger's lines at its bounds (2 s, 1 MiB) and its abort: none is due here."""


async def _refused(port: int, request: bytes, end: str) -> int | None:
    """The status of ``request`` (``None``: none came, the client left first), the client gone as ``end`` says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    if end == "fin-with-request":
        writer.write_eof()
        response = await asyncio.wait_for(reader.read(), 10)
    else:
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if end == "rst":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    await writer.wait_closed()  # close() only schedules the socket's close
    return status_of(response) if response else None


@pytest.mark.parametrize("end", ENDS)
async def test_a_refused_client_that_left_is_not_lingered_on(
    tmp_path: Path, upstream_server: UpstreamServer, end: str
) -> None:
    apis = [
        api_entry(upstream_server, name="relayed", path="/relayed", passthrough=False),
        api_entry(upstream_server, name="spliced", path="/spliced"),
        api_entry(upstream_server.url("/reject/403"), name="refused", path="/refused"),
    ]
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": apis}))
    command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug"]
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        statuses = {name: await _refused(server.port, request, end) for name, (request, _) in REFUSALS.items()}
        assert server.stop() == 0
        output = server.output()
    for name, (_, status) in REFUSALS.items():
        assert statuses[name] in ((status, None) if end == "fin-with-request" else (status,)), (name, statuses)
    assert LINGERED_OUT not in output, output


@pytest.mark.parametrize("sends", [False, True])
async def test_the_lingers_bound_says_whether_the_peer_sent_or_only_kept_its_end_open(
    tmp_path: Path, sends: bool
) -> None:
    """Its one line said "the peer still sent" of a client that sent nothing and only kept its end open."""
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({"apis": [api_entry()]}))
    command = ["-m", "asgi_ws_gateway", "run", "gateway.yaml", "--log-level", "debug"]
    with ready_server(lambda port: [*command, "--port", str(port)], cwd=tmp_path) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(handshake("/nowhere"))
        assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)) == 404
        if sends:
            writer.write(b"more")
        await asyncio.to_thread(server.wait_for_line, "lingering close: the peer", timeout=10)
        writer.close()
        await writer.wait_closed()
        assert server.stop() == 0
        output = server.output()
    assert ("the peer still sent after 2 s" in output) is sends, output
    assert ("the peer sent nothing, nor its FIN, in 2 s" in output) is not sends, output
