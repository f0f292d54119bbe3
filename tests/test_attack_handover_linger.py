"""Attack: the hand-overs of a spliced connection against its lingering close and its backpressure.

Two protocol swaps follow the HTTP protocol's: the client's transport goes from the WebSocket protocol to
the splice's client side (``server/passthrough_handover.py``), the upstream's from the handshake's reader
to the splice's upstream side (``Splice._start``). A lingering close makes its ``_Linger`` the transport's
protocol; a swap after it would undo its 1 MiB bound (as the HTTP protocol's did, fixed in ``server/http.py``).
Neither can: the WebSocket protocol refuses to hand over a transport that is closing, and the upstream's
transport is closed only by a handshake that never hands it over (``RawUpstream.close``). Pinned end to end
here with real ``asgi-ws-gateway run``, raw clients and raw upstreams: a client that sends its close frame
(or a bad frame) with its request, an upstream that closes (or breaks the framing) right behind its 101, a
refusal (403, 502, 504) while the client's early frames are held, each followed by a client flooding the
gateway: it reads the linger's bound, not more, and no descriptor is left behind.

What the upstream sent behind its 101 (the leftover) is replayed by ``Splice._start``, which then resumed
the upstream's reading: when those bytes filled the client's buffer (a client reading slowly, a small
window), the pause that backpressure had just asked for was undone, and the upstream was read without bound
while the client read nothing (the transport asks its protocol to pause once). Reading resumes before the
bytes now, as the client's early data is replayed: what they pause stays paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from asgi_ws_gateway.passthrough.lingering_close import LINGER_BYTES, lingering
from asgi_ws_gateway.passthrough.raw_upstream import RawUpstream, _HandshakeReader
from asgi_ws_gateway.passthrough.read_out import REFUSED_BYTES
from asgi_ws_gateway.passthrough.splice import Splice
from support.configs import api_entry, write_config
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, flood_bound, handshake, ws_frame

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="Linux's TCP behaviour is what is measured"),
]

BOUND = flood_bound(REFUSED_BYTES + LINGER_BYTES)
"""What a closed client may get the kernel to take: a closed side's read-out (16 MiB), the linger's 1 MiB, the
gateway's receive buffer, and room."""
CLOSE = ws_frame(0x8, struct.pack("!H", 1000))
BAD = ws_frame(0x3, b"x")  # a reserved opcode: a framing error
SMALL = ws_frame(0x2, b"s" * 1020, mask=False)
BIG = ws_frame(0x2, b"b" * 120_000, mask=False)
TIMEOUTS = {"connect_timeout": 1.0, "close_timeout": 1.0}
"""The 504 and the read-out of a refused side sooner than by default."""
MODES: dict[str, dict[str, Any]] = {
    "splice": {"passthrough": True},
    "frame relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 1 << 20}}]}},
}


# -- raw upstreams --------------------------------------------------------------------------------------


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What it does is named by the request's path: ``slow-`` first waits half a second (the client's early
    frames are held meanwhile); then ``echo`` answers a close frame, ``close`` closes right behind its 101,
    ``garbage`` sends a bad frame right behind it, ``refuse`` answers 403, ``bad101`` a 101 without a valid
    accept (502), ``never`` nothing (504)."""
    head = await reader.readuntil(b"\r\n\r\n")
    kind = head.split(b" ", 2)[1].decode().strip("/")
    if kind.startswith("slow-"):
        await asyncio.sleep(0.5)
        kind = kind[5:]

    async def answered(then: bytes = b"") -> None:
        request = asyncio.StreamReader()
        request.feed_data(head)  # (read already)
        await accept_upstream(request, writer, then=then)
        await writer.drain()

    with contextlib.suppress(ConnectionError):
        if kind == "refuse":
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
        elif kind == "bad101":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: x\r\n\r\n")  # fmt: skip
            await reader.read()
        elif kind == "never":
            await reader.read()
        elif kind == "close":
            await answered(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        else:
            await answered(ws_frame(0x3, b"zz", mask=False) if kind == "garbage" else b"")
            seen = b""
            while block := await reader.read(65536):
                seen = (seen + block)[-65536:]
                if seen[0] & 0x0F == 0x8:  # the gateway's close frame (or the client's): answered
                    writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
                    while await reader.read(65536):
                        pass
                    break
    writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    server = await asyncio.start_server(_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kinds = ["echo", "slow-echo", "close", "slow-close", "slow-garbage", "garbage", "slow-refuse", "bad101", "never"]
    apis = [
        api_entry(f"ws://127.0.0.1:{port}/{kind}", name=f"{slug}-{kind}", path=f"/{slug}/{kind}", **fields, **TIMEOUTS)
        for slug, fields in ((mode.replace(" ", "-"), fields) for mode, fields in MODES.items())
        for kind in kinds
    ]
    directory = tmp_path_factory.mktemp("handover-linger")
    config = write_config(directory, {"apis": apis})
    log = directory / "gateway.log"
    try:
        async with GatewayProcess([str(config)], cwd=directory, workers=1, log=log, log_level="info") as process:
            yield process
        output = log.read_text()
        assert "Traceback" not in output and "ERROR" not in output, output[-4000:]
    finally:
        server.close()


# -- raw clients -----------------------------------------------------------------------------------------


def _flooding(port: int, first: bytes, *, answer: bool = False) -> tuple[bytes, int]:
    """Send ``first`` (the request, and what the client sends right behind it); with ``answer``, read the
    101 and the close frame that follows and answer it. Then zeros until the gateway ends the connection:
    what the client read, and how many bytes of zeros the gateway took."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    received = b""
    try:
        sock.sendall(first)
        if answer:
            while b"\x88" not in received.partition(b"\r\n\r\n")[2] and (block := sock.recv(65536)):
                received += block
            sock.sendall(CLOSE)
        zeros, sent = bytes(65536), 0
        with contextlib.suppress(OSError):  # the gateway closed: EPIPE or a reset
            while sent < 16 * BOUND:
                sent += sock.send(zeros)
        return received, sent
    finally:
        sock.close()


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _settled(pid: int, baseline: int) -> int:
    """The gateway's descriptors once its connections are over (the lingers' 2 s at most), over ``baseline``."""
    deadline = time.monotonic() + 10
    while _descriptors(pid) > baseline and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
        await asyncio.sleep(0.1)
    return _descriptors(pid) - baseline


CASES: dict[str, tuple[str, Callable[[str], bytes], bool]] = {
    "a close frame with the request": ("echo", lambda path: handshake(path) + CLOSE, False),
    "a close frame with the request, the upstream slow": ("slow-echo", lambda path: handshake(path) + CLOSE, False),
    "the upstream's close behind its 101, answered": ("close", handshake, True),
    "the upstream's close behind its 101, the client's close with the request": (
        "slow-close", lambda path: handshake(path) + CLOSE, False,
    ),
    "a bad frame behind the upstream's 101, answered": ("garbage", handshake, True),
    "a bad frame behind the upstream's slow 101, the client's close with the request": (
        "slow-garbage", lambda path: handshake(path) + CLOSE, False,
    ),
    "403 while the client's frames are held": ("slow-refuse", lambda path: handshake(path) + BAD, False),
    "502 while the client's frames are held": ("bad101", lambda path: handshake(path) + BAD, False),
    "504 while the client's frames are held": ("never", lambda path: handshake(path) + BAD, False),
}  # fmt: skip
"""How the connection ends during or right after a hand-over: the upstream's path, what the client sends
first, and whether it reads and answers a close frame before it floods."""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
async def test_a_client_flooding_after_a_close_around_the_hand_over_is_read_to_the_lingers_bound(
    gateway: GatewayProcess, mode: str, case: str
) -> None:
    """The client's connection lingers after the hand-over (or the refusal): its flood is read to the
    linger's bound, not for the linger's 2 s, and both connections' descriptors are closed."""
    assert gateway.process is not None
    pid = gateway.process.pid
    baseline = _descriptors(pid)
    kind, first, answer = CASES[case]
    path = f"/{mode.replace(' ', '-')}/{kind}"
    _, sent = await asyncio.to_thread(_flooding, gateway.port, first(path), answer=answer)
    assert sent < BOUND, f"the gateway read {sent:,} bytes after the close"
    assert await _settled(pid, baseline) <= 0


# -- the upstream's leftover against the client's backpressure --------------------------------------------


FLOODS: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}


async def _flooding_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 101 and a 120 KB message in one write, then 16 KiB of small messages every 5 ms for as long as it is
    read (reads the splice scans at once: frames over 32 KiB in one read are scanned over turns, the side not
    read meanwhile, which hid the defect)."""
    task = asyncio.current_task()
    assert task is not None
    FLOODS[writer] = task
    await accept_upstream(reader, writer, then=BIG)
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(SMALL * 16)
            await writer.drain()
            await asyncio.sleep(0.005)


async def _raw_upstream(port: int) -> RawUpstream:
    """The upstream's connection as ``open_raw`` hands it to the splice: its answer's head read, what came
    behind it left over, reading paused, closed by lingering."""
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(lambda: _HandshakeReader(loop=loop), "127.0.0.1", port)
    transport.write(handshake("/"))
    await reader.head
    rest = bytes(reader.buffer).partition(b"\r\n\r\n")[2]
    transport.pause_reading()
    return RawUpstream(lingering(transport), None, None, [], rest, reader, loop=loop)


async def _client_leg() -> tuple[asyncio.Transport, socket.socket]:
    """A client's connection that reads nothing, a small window: the gateway's transport and the client's socket."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Accepted, "127.0.0.1", 0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await loop.sock_connect(client, server.sockets[0].getsockname())
    transport = await accepted
    server.close()
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport.set_write_buffer_limits(high=16384)
    return transport, client


async def test_the_upstreams_bytes_behind_its_101_filling_the_clients_buffer_leave_the_upstream_unread() -> None:
    """The leftover the splice replays fills the client's buffer: the upstream is not read until the client
    takes some in (it was, and its flood queued to the client without bound)."""
    server = await asyncio.start_server(_flooding_upstream, "127.0.0.1", 0)
    raw = await _raw_upstream(server.sockets[0].getsockname()[1])
    transport, client = await _client_leg()
    splice = Splice(raw, max_message_size=1 << 20, close_timeout=1.0)
    try:
        leftover = len(raw.leftover)
        assert leftover > 32 * 1024  # (more than the client's window, kernel buffer and high-water mark take)
        # The hand-over, as the server's passthrough accept does it.
        transport.set_protocol(splice.client)
        splice.client.connection_made(lingering(transport))
        splice.accept_message()["on_started"]()
        assert splice.client.write_paused
        assert not raw.transport.is_reading()
        await asyncio.sleep(0.5)
        assert not raw.transport.is_reading()
        assert transport.get_write_buffer_size() <= leftover  # nothing more was read from the upstream
    finally:
        splice.abort()
        client.close()
        server.close()
        for writer in FLOODS:
            writer.transport.abort()  # its drain() ends with a ConnectionResetError
        if FLOODS:
            await asyncio.wait(FLOODS.values(), timeout=5)
