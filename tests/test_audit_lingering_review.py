"""Review of the lingering close (``passthrough/lingering_close.py``): what a lingering connection holds.

A connection the gateway closes lingers up to 2 s (``LINGER_SECONDS``) while its peer keeps its end
open, and holds its descriptor all that time, though the connection is closed to everything else (its
lease released, its concurrency slot of the gateway's given back). A client that opens connections
that are refused (or closed) at once and never sends its FIN held one descriptor each per 2 s: 300 such
connections, one at a time (a concurrency lease of one allows that), held ~300 descriptors of the
gateway's at once where none were held before the lingering close, enough to fill a 512 open-file
limit. Now at most one descriptor in ``LINGER_SHARE`` (8) of the open-file limit lingers; past that a
close is the plain close it was before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from asgi_ws_gateway.passthrough import lingering_close
from asgi_ws_gateway.passthrough.lingering_close import lingering
from support.configs import api_entry, write_config
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.rawws import next_frame

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="descriptors counted in /proc")

OPEN_FILES = 512  # the gateway's (and the unit test's) soft open-file limit: room for 64 lingering
ROOM = OPEN_FILES // 8
FLOOD = 300  # connections refused at once whose client keeps its end open, one after another


@contextlib.contextmanager
def _soft_open_files(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class _Closed(asyncio.Protocol):
    """A server connection whose transport lingers when closed; ``lost`` counts the ends."""

    lost: ClassVar[int] = 0
    transports: ClassVar[list[asyncio.Transport]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Closed.transports.append(lingering(transport))  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        _Closed.lost += 1


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds (10 s at most: a generous bound, not a measure)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 10 s")


async def test_lingering_connections_are_bounded_by_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROOM + 16 connections closed while their peers keep their ends open (and the linger made long:
    only the room can end one): 16 close at once, ROOM linger; once the peers close, all end."""
    monkeypatch.setattr(lingering_close, "LINGER_SECONDS", 600.0)
    _Closed.lost, _Closed.transports = 0, []
    count = ROOM + 16
    with _soft_open_files(OPEN_FILES):
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Closed, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        peers = []
        try:
            for _ in range(count):
                peer = socket.socket()
                peer.setblocking(False)
                await loop.sock_connect(peer, ("127.0.0.1", port))
                peers.append(peer)
            await _until(lambda: len(_Closed.transports) == count)
            for transport in _Closed.transports:
                transport.close()
            await _until(lambda: _Closed.lost >= count - ROOM)
            await asyncio.sleep(0.2)  # none of the lingering ones ends meanwhile
            assert _Closed.lost == count - ROOM
        finally:
            for peer in peers:
                peer.close()  # the FIN: every linger ends
            await _until(lambda: _Closed.lost == count)
            server.close()
            await server.wait_closed()
        # The room is given back as the lingers end: a close lingers again.
        _Closed.lost, _Closed.transports = 0, []
        server = await loop.create_server(_Closed, "127.0.0.1", 0)
        peer = socket.create_connection(("127.0.0.1", server.sockets[0].getsockname()[1]))
        try:
            await _until(lambda: len(_Closed.transports) == 1)
            _Closed.transports[0].close()
            await asyncio.sleep(0.2)
            assert _Closed.lost == 0
        finally:
            peer.close()
            await _until(lambda: _Closed.lost == 1)
            server.close()
            await server.wait_closed()


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _refused_and_held(port: int) -> socket.socket:
    """A handshake refused (403) at once; its client keeps its end open, no FIN, reading no more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake("/refused"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    assert head.startswith(b"HTTP/1.1 403"), head
    sock: socket.socket = writer.get_extra_info("socket").dup()  # held past the stream's own end
    writer.transport.abort()  # (the dup keeps the connection open)
    return sock


async def test_a_flood_of_refused_connections_held_open_does_not_fill_the_descriptor_table(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        {
            "apis": [
                api_entry(
                    name="refused",
                    path="/refused",
                    policies=[{"check-header": {"header": "X-Absent", "failed_status": 403}}],
                )
            ]
        },
    )
    held: list[socket.socket] = []
    async with GatewayProcess(
        [str(config)], cwd=tmp_path, workers=1, open_files=(OPEN_FILES, OPEN_FILES), log=tmp_path / "gateway.log"
    ) as gateway:
        assert gateway.process is not None
        pid = gateway.process.pid
        try:
            held.append(await _refused_and_held(gateway.port))  # everything a connection sets up, set up
            baseline, peak = _descriptors(pid), 0
            for _ in range(FLOOD):
                held.append(await _refused_and_held(gateway.port))
                peak = max(peak, _descriptors(pid))
            # The room, and a few for what a worker opens meanwhile (one connection in flight at a time).
            assert peak - baseline <= ROOM + 8, (baseline, peak)
            held.append(await _refused_and_held(gateway.port))  # still served
        finally:
            for sock in held:
                sock.close()
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-4000:]


# -- a closed connection's lease --------------------------------------------------------------------------

ONE_SLOT = {"limit-concurrency": {"key": "everyone", "max": 1, "lease_ttl": 120}}
LEASE_MODES: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame-relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 4096}}]}},
    "relay": {"passthrough": False},  # (released late there with or without lingering, until c4c48d8)
}


_UPSTREAM_WRITERS: list[asyncio.StreamWriter] = []  # aborted at each test's end (a handler may still wait)


async def _close_answering_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A raw upstream: answers the handshake, then a close frame with its own, and closes its end."""
    _UPSTREAM_WRITERS.append(writer)
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await accept_upstream(reader, writer)
        while True:
            opcode, payload = await next_frame(reader)
            if opcode == 0x8:
                writer.write(ws_frame(0x8, payload[:2], mask=False))
                break
    writer.close()


async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("mode", list(LEASE_MODES))
async def test_a_closed_connection_gives_its_concurrency_slot_back_before_its_client_closes_tcp(
    tmp_path: Path, mode: str
) -> None:
    """``limit-concurrency`` max 1: a client's closing handshake completes (the gateway's close frame
    read); before its client closes its end of TCP (the gateway's FIN has yet to reach it, or it is slow
    to answer it), the same client connects again: its slot is free. The lingering close held the
    connection, and the lease with it, until the client's FIN or 2 s: the reconnect was refused."""
    upstream = await asyncio.start_server(_close_answering_upstream, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/"
    config = write_config(tmp_path, {"apis": [api_entry(url, name="one", path="/one", **LEASE_MODES[mode])],
                                     "policies": [ONE_SLOT]})  # fmt: skip
    writers: list[asyncio.StreamWriter] = []
    try:
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=tmp_path / "gateway.log") as gateway:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writers.append(writer)
            writer.write(handshake("/one"))
            assert await _read_status(reader) == 101
            writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
            answer = await asyncio.wait_for(reader.readexactly(4), 15)
            assert answer[0] & 0x0F == 0x8, answer  # the closing handshake is complete
            assert await asyncio.wait_for(reader.read(), 15) == b""  # the gateway's FIN; the client's end left open
            again, again_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writers.append(again_writer)
            again_writer.write(handshake("/one"))
            assert await _read_status(again) == 101
            for each in writers:  # gone before the shutdown, which would wait for their closing handshakes
                each.transport.abort()
    finally:
        for each in writers + _UPSTREAM_WRITERS:
            each.transport.abort()
        _UPSTREAM_WRITERS.clear()
        upstream.close()
        await asyncio.sleep(0.1)  # the handlers see their aborts and end
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-4000:]
