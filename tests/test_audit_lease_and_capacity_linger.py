"""Review of 2026-12-05: the relay's concurrency lease, and the capacity beside lingering descriptors.

The relay (``passthrough: false``) released a ``limit-concurrency`` lease when its run ended: after the
upstream's closing handshake and TCP close, which a client does not wait for. A client that completed
its closing handshake and connected again at once (before its FIN, or right after it) was refused 429
by its own lease for as long as the upstream took to close. Now the lease ends when the client's
connection is over (its disconnect read) and the upstream's close frame is sent: the upstream of a
closed connection is closing, bounded by ``close_timeout``, and never one not yet closing is left
beside the client's next connection.

The capacity (``max_connections``, or (soft open-file limit - 64) / 2) counted handshakes and open
connections, while up to one descriptor in 8 of the soft limit may be held by lingering connections
that no longer count: a gateway at capacity whose clients closed and reconnected at once used the
reserve up, and then failed to accept or to connect upstream. Now a lingering descriptor counts as
half a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from support.configs import api_entry, write_config
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.rawws import next_frame

# -- the relay's lease ------------------------------------------------------------------------------------

ONE_SLOT = {"limit-concurrency": {"key": "everyone", "max": 1, "lease_ttl": 120}}
CYCLES = 3  # connections one client opens and closes, one after another


class _HeldCloseUpstream:
    """A raw upstream that answers a close frame only once ``answer`` is set (its close is slow).

    ``not_closing`` counts its connections that have not been sent a close frame; ``seen`` records
    that count as each new connection arrives (the new one included)."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.not_closing = 0
        self.seen: list[int] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.not_closing += 1
        self.seen.append(self.not_closing)
        closing = False
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            while True:
                opcode, payload = await next_frame(reader)
                if opcode == 0x8:
                    self.not_closing -= 1
                    closing = True
                    await self.answer.wait()
                    writer.write(ws_frame(0x8, payload[:2], mask=False))
                    break
        if not closing:
            self.not_closing -= 1
        writer.close()


async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    return int(head.split(b" ", 2)[1])


async def _open(port: int, writers: list[asyncio.StreamWriter]) -> tuple[int, asyncio.StreamReader]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writers.append(writer)
    writer.write(handshake("/one"))
    return await _read_status(reader), reader


@pytest.mark.parametrize("fin", [False, True], ids=["before-its-fin", "right-after-its-fin"])
async def test_the_relay_gives_the_slot_back_when_the_client_closing_handshake_is_done(
    tmp_path: Path, fin: bool
) -> None:
    """``limit-concurrency`` max 1 on the relay, an upstream slow to answer the gateway's close: the
    client completes its closing handshake and connects again at once, CYCLES times; each reconnect is
    admitted, and when each new upstream connection arrives, every earlier one has its close frame."""
    upstream_handler = _HeldCloseUpstream()
    upstream = await asyncio.start_server(upstream_handler, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/"
    config = write_config(
        tmp_path,
        {"apis": [api_entry(url, name="one", path="/one", passthrough=False, close_timeout=30)],
         "policies": [ONE_SLOT]},
    )  # fmt: skip
    writers: list[asyncio.StreamWriter] = []
    statuses: list[int] = []
    try:
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=tmp_path / "gateway.log") as gateway:
            status, reader = await _open(gateway.port, writers)
            assert status == 101
            for _ in range(CYCLES):
                writers[-1].write(ws_frame(0x8, struct.pack("!H", 1000)))
                answer = await asyncio.wait_for(reader.readexactly(4), 15)
                assert answer[0] & 0x0F == 0x8, answer  # the closing handshake is complete
                if fin:
                    writers[-1].write_eof()
                status, reader = await _open(gateway.port, writers)
                statuses.append(status)
                if status != 101:
                    break
            upstream_handler.answer.set()
            for each in writers:  # gone before the shutdown, which would wait for their closing handshakes
                each.transport.abort()
    finally:
        upstream_handler.answer.set()
        for each in writers + upstream_handler.writers:
            each.transport.abort()
        upstream.close()
        await asyncio.sleep(0.1)  # the handlers see their aborts and end
    assert statuses == [101] * CYCLES, statuses
    # Never two upstream connections of this client not closing: the limit holds upstream too.
    assert upstream_handler.seen == [1] * (CYCLES + 1), upstream_handler.seen
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-4000:]


# -- the capacity beside lingering connections ------------------------------------------------------------

OPEN_FILES = 512  # capacity (512 - 64) / 2 = 224 connections; up to 512 / 8 = 64 descriptors may linger
CAPACITY = (OPEN_FILES - 64) // 2
ROOM = OPEN_FILES // 8


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _echo_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A raw upstream: answers the handshake, then a close frame with its own, and closes its end."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await accept_upstream(reader, writer)
        while True:
            b0, b1 = await reader.readexactly(2)
            length = b1 & 0x7F
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
            if b0 & 0x0F == 0x8:
                writer.write(ws_frame(0x8, payload[:2], mask=False))
                break
    writer.close()


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: str) -> None:
        self.reader, self.writer, self.status = reader, writer, status


async def _connect(port: int, held: list[Any]) -> _Client:
    """A handshake; its status ("101", "503"), or how it was dropped without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    held.append(writer)
    writer.write(handshake("/spliced"))
    try:
        status = str(await _read_status(reader))
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        status = f"dropped: {exc!r}"  # no answer
    return _Client(reader, writer, status)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="descriptors counted in /proc")
async def test_a_gateway_at_capacity_counts_its_lingering_descriptors(tmp_path: Path) -> None:
    """At capacity, clients close their connections (closing handshake done, no FIN: each lingers)
    and connect again at once: the gateway's descriptors stay within its capacity's (two a connection,
    a lingering one one), so the reserve is kept; every handshake is 101 or 503 ``over_capacity``."""
    upstream = await asyncio.start_server(_echo_upstream, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/"
    config = write_config(tmp_path, {"apis": [api_entry(url, name="spliced", path="/spliced")]})
    held: list[Any] = []
    statuses: list[str] = []
    try:
        async with GatewayProcess(
            [str(config)], cwd=tmp_path, workers=1, open_files=(OPEN_FILES, OPEN_FILES), log=tmp_path / "gateway.log"
        ) as gateway:
            assert gateway.process is not None
            pid = gateway.process.pid
            baseline = _descriptors(pid)
            open_clients = [await _connect(gateway.port, held) for _ in range(CAPACITY)]
            assert [c.status for c in open_clients] == ["101"] * CAPACITY
            peak = _descriptors(pid)
            for client in open_clients[: ROOM + 16]:
                client.writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
                answer = await asyncio.wait_for(client.reader.readexactly(4), 15)
                assert answer[0] & 0x0F == 0x8, answer  # its closing handshake is done; its end left open
                statuses.append((await _connect(gateway.port, held)).status)
                peak = max(peak, _descriptors(pid))
            # Two descriptors a connection at capacity, and a few for what is in flight meanwhile.
            assert peak - baseline <= 2 * CAPACITY + 4, (baseline, peak, OPEN_FILES, statuses)
            for writer in held:  # gone before the shutdown, which would wait for their closing handshakes
                writer.transport.abort()
    finally:
        for writer in held:
            writer.transport.abort()
        upstream.close()
        await asyncio.sleep(0.1)
    # Refused while closed connections linger (their descriptors counted), never dropped; and refused for
    # the capacity, not for an upstream connect that failed with EMFILE (503 gateway_overloaded).
    assert "503" in statuses and set(statuses) <= {"101", "503"}, statuses
    log = (tmp_path / "gateway.log").read_text()
    assert "(over_capacity)" in log and "(gateway_overloaded)" not in log, log[-4000:]
    assert "Traceback" not in log and "ERROR" not in log, log[-4000:]
