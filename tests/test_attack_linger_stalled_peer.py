"""Attack on the lingering close (``passthrough/lingering_close.py``): a peer that reads slowly or not at all.

The linger's bound (2 s, ``LINGER_SECONDS``) started at the gateway's close and then only closed the
transport; the transport's ``close()`` first writes what is still queued to the peer. So:

* a relay client (``passthrough: false``) that reads nothing and sends its close frame while bytes wait
  for it held its gateway socket, the kernel's send buffer (MBs) and the transport's for as long as it
  kept its end open: the bound, ``close_timeout`` and (below the high-water mark, or with a long or
  null ``ping_timeout``) the stall rule never ended it (45 s and counting, measured);
* a client reading a backlog slowly and still sending was no longer read 2 s after the close, and the
  socket's close once the transport's write was done reset it: the rest of the backlog in the kernel's
  send buffer and the close frame were lost (ECONNRESET).

* closes past the room of the lingering ones (many at once) are plain closes: the same hold, for ever.

Now the bound waits for what is on its way to the peer as long as the peer takes some in within each
2 s (read on meanwhile), and aborts one that takes in nothing while the transport still holds bytes; a
plain close past the room is watched the same way; and the shutdown bounds a linger still delivering.

Real ``asgi-ws-gateway run``, a raw pushing upstream, raw clients; the gateway's sockets read in /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from support.configs import api_entry, write_config
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.rawws import close_frame_in, split_frames

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="the gateway's sockets are read in /proc"),
]

PUSHED = 8 << 20  # what the upstream sends the client at once: more than the kernel's buffers hold
KEEPALIVE = {"ping_interval": 60, "ping_timeout": 60}  # the stall rule is not what ends a connection here


class PushingUpstream:
    """A raw upstream: sends ``PUSHED`` bytes of messages right after its 101, answers a close frame."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            message = ws_frame(0x2, b"p" * 65536, mask=False)
            for _ in range(PUSHED // 65536):
                writer.write(message)
            code, _ = await close_frame_in(reader)
            writer.write(ws_frame(0x8, struct.pack("!H", code), mask=False))
        writer.close()


Gateway = tuple[GatewayProcess, Path]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[PushingUpstream]:
    pushing = PushingUpstream()
    pushing.server = await asyncio.start_server(pushing.serve, "127.0.0.1", 0)
    try:
        yield pushing
    finally:
        for writer in pushing.writers:
            with contextlib.suppress(AttributeError):  # (Python 3.11: an abort after the close completed)
                writer.transport.abort()
        pushing.server.close()
        await pushing.server.wait_closed()


def _config(directory: Path, upstream: PushingUpstream, **fields: Any) -> Path:
    api = api_entry(upstream.url, name="relay", path="/relay", passthrough=False, **KEEPALIVE, **fields)
    return write_config(directory, {"apis": [api]})


def _clean(log: Path) -> None:
    output = log.read_text()
    assert "Traceback" not in output and "ERROR" not in output, output[-4000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: PushingUpstream) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("linger-stalled")
    log = directory / "gateway.log"
    config = _config(directory, upstream)
    async with GatewayProcess([str(config)], cwd=directory, workers=1, log=log, log_level="info") as process:
        yield process, log
    _clean(log)


def _holds(pid: int, port: int, client_port: int) -> bool:
    """Whether process ``pid`` holds the socket of its listening ``port``'s connection from ``client_port``
    (an orphan the kernel still sends from is no longer the process's)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local, remote) == (port, client_port) and fields[9] in inodes:
            return True
    return False


def _open(port: int, *, receive_buffer: int) -> socket.socket:
    """A client of ``/relay`` with a small receive buffer (its window), its 101 read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(15)
    sock.connect(("127.0.0.1", port))
    sock.sendall(handshake("/relay"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # the head only: what follows is read (or not) by the test
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_relay_client_that_reads_nothing_and_closes_is_not_held(gateway: Gateway) -> None:
    """Its close frame answered into a full buffer it never reads, its end kept open: the gateway's
    socket goes (it took in nothing for 2 s). It stayed until the client went (60 s here: the stall rule)."""
    process, _ = gateway
    assert process.process is not None
    pid = process.process.pid
    sock = await asyncio.to_thread(_open, process.port, receive_buffer=4096)
    try:
        await asyncio.sleep(1.0)  # the upstream's push fills the kernel's buffers and the transport's
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        client_port = sock.getsockname()[1]
        for _ in range(150):  # 15 s at most: a generous bound, not a measure
            if not _holds(pid, process.port, client_port):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the gateway still holds the socket of a client that reads nothing")
    finally:
        sock.close()


def _read_slowly_while_sending(port: int) -> tuple[list[tuple[int, bytes]], str]:
    """Close with a backlog queued, then read it at ~640 KB/s, sending a small frame every 50 ms, until
    the gateway's close frame is read; then half-close and read to the end. The frames read, and how the
    reads ended: "eof", or the error (ConnectionResetError: the gateway's RST)."""
    sock = _open(port, receive_buffer=65536)
    try:
        time.sleep(1.0)  # the backlog: the kernel's send buffer full (MBs)
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        data, frames = b"", list[tuple[int, bytes]]()
        try:
            while not frames or frames[-1][0] != 0x8:
                time.sleep(0.05)
                block = sock.recv(32768)
                if not block:
                    return frames, "eof before the close frame"
                data += block
                found, data = split_frames(data)
                frames += found
                sock.sendall(ws_frame(0x2, b"still here"))  # (dropped by the gateway: after its close frame)
            sock.shutdown(socket.SHUT_WR)
            while block := sock.recv(65536):
                data += block
        except OSError as exc:
            return frames, type(exc).__name__
        return frames, "eof"
    finally:
        sock.close()


async def test_a_client_reading_its_backlog_slowly_while_sending_gets_the_close_frame_and_eof(
    gateway: Gateway,
) -> None:
    """Several seconds of backlog read after its close frame, the client still sending: it reads the
    close answer, then EOF. It was reset once its backlog's last write left the transport after the 2 s."""
    frames, end = await asyncio.to_thread(_read_slowly_while_sending, gateway[0].port)
    last = frames[-1] if frames else (None, b"")
    assert last[0] == 0x8, (f"{len(frames)} frames read, no close frame last", end)
    assert struct.unpack("!H", last[1][:2])[0] == 1000
    assert end == "eof"


def _read_slowly_while_sending_more(port: int) -> tuple[list[tuple[int, bytes]], str, int]:
    """As :func:`_read_slowly_while_sending`, but 32 KiB frames from a thread of their own (a client that
    reads and sends at once, ~640 KB/s each way), past the linger's MiB long before the backlog is read.
    The frames read, how the reads ended, and the bytes sent after the close frame."""
    sock = _open(port, receive_buffer=65536)
    reading = threading.Event()
    sent = 0

    def send() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):  # the gateway no longer reads, or closed: expected
            while reading.is_set():
                sock.sendall(ws_frame(0x2, b"s" * 32768))
                sent += 32768
                time.sleep(0.05)

    sender = threading.Thread(target=send, daemon=True)
    try:
        time.sleep(1.0)  # the backlog: the kernel's send buffer full (MBs)
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        reading.set()
        sender.start()
        data, frames = b"", list[tuple[int, bytes]]()
        try:
            while block := sock.recv(32768):
                data += block
                found, data = split_frames(data)
                frames += found
                time.sleep(0.05)
        except OSError as exc:
            return frames, type(exc).__name__, sent
        return frames, "eof", sent
    finally:
        reading.clear()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # (unblocks the sender)
        sender.join(20)
        sock.close()


async def test_a_slow_reader_sending_past_the_lingers_mib_still_gets_its_backlog_and_eof(gateway: Gateway) -> None:
    """The linger's byte bound closed the socket with the client's bytes unread: the kernel reset it and
    dropped the backlog it still held for it (19 of 63 frames read, no close frame). Now it reads no more
    and closes once the backlog is delivered: the close frame, then EOF."""
    frames, end, sent = await asyncio.to_thread(_read_slowly_while_sending_more, gateway[0].port)
    assert sent > 1 << 20  # past LINGER_BYTES while it still read its backlog
    last = frames[-1] if frames else (None, b"")
    assert last[0] == 0x8, (f"{len(frames)} frames read, no close frame last", end)
    assert end == "eof"


def _read_fast_then_slowly(port: int, done: list[str], hurry: threading.Event) -> None:
    """Close with a backlog queued, read 2 MB of it at once (what the transport held goes to the kernel),
    then 80 KB/s until ``hurry`` is set, then the rest; ``done`` gets how the reads ended."""
    sock = _open(port, receive_buffer=65536)
    try:
        time.sleep(1.0)
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        read = 0
        while block := sock.recv(4096):
            read += len(block)
            if read > 2 << 20 and not hurry.is_set():
                time.sleep(0.05)
        done.append("eof")
    except OSError as exc:
        done.append(type(exc).__name__)
    finally:
        sock.close()


async def test_a_shutdown_while_a_slow_readers_linger_still_delivers_ends(
    tmp_path: Path, upstream: PushingUpstream
) -> None:
    """A linger that waits for the kernel's send buffer to drain to a client reading slowly is bounded at
    the shutdown as an open connection is (``close_timeout``): the server's shutdown waited for it."""
    log = tmp_path / "gateway.log"
    done: list[str] = []
    hurry = threading.Event()
    # close_timeout: the shutdown's bound on the linger (the default, 5 s, only longer to wait out).
    config = _config(tmp_path, upstream, close_timeout=1.0)
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log) as process:
        reader = asyncio.create_task(asyncio.to_thread(_read_fast_then_slowly, process.port, done, hurry))
        await asyncio.sleep(4.0)  # closed 3 s ago: the linger waits for the kernel's bytes, read slowly
        assert not done
        try:
            code = await asyncio.to_thread(process.stop)  # SIGTERM (a SIGKILL 15 s later: -9)
        finally:
            hurry.set()
    await asyncio.wait_for(reader, 60)
    assert code == 0
    _clean(log)


ROOM_FILES = 128  # the gateway's open-file limit: 16 connections may linger (LINGER_FLOOR)
PAST_THE_ROOM = 24  # clients closing at once: 8 closes past the room are plain closes


async def test_closes_past_the_linger_room_are_not_held_by_clients_that_read_nothing(
    tmp_path: Path, upstream: PushingUpstream
) -> None:
    """Many clients that read nothing close at once: the closes past the room of the lingering ones are
    plain closes, whose write a peer reading nothing never let end either. Every socket goes."""
    log = tmp_path / "gateway.log"
    config = _config(tmp_path, upstream)
    async with GatewayProcess(
        [str(config)], cwd=tmp_path, workers=1, log=log, open_files=(ROOM_FILES, ROOM_FILES)
    ) as process:
        assert process.process is not None
        pid = process.process.pid
        socks = await asyncio.gather(
            *(asyncio.to_thread(_open, process.port, receive_buffer=4096) for _ in range(PAST_THE_ROOM))
        )
        try:
            await asyncio.sleep(2.0)  # every upstream's push fills its client's buffers
            for sock in socks:
                sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
            ports = {sock.getsockname()[1] for sock in socks}
            for _ in range(150):  # 15 s at most: a generous bound, not a measure
                ports = {port for port in ports if _holds(pid, process.port, port)}
                if not ports:
                    break
                await asyncio.sleep(0.1)
            assert not ports, f"{len(ports)} sockets of clients that read nothing still held"
        finally:
            for sock in socks:
                sock.close()
    _clean(log)
