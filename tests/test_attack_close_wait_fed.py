"""Attack on the close wait's progress rule: a closing handshake fed without end.

The splice's close wait goes on past ``close_timeout`` while a side takes in some of what is on its way
to it (a slow reader's backlog, ``tests/test_attack_close_wait_slow_reader.py``). A backlog that is
still being fed never ends: an upstream that never answers the client's close frame but streams on to a
client that reads on held the connection (both descriptors, the client's concurrency lease) for as long
as the two liked, ``max_lifetime`` or not (its close is a no-op once a close began); a client reading one
small chunk per ``close_timeout`` as well. The wait is now bounded in bytes taken in since the close
began (:data:`~asgi_ws_gateway.passthrough.splice.CLOSE_WAIT_BYTES`) and in looks
(:data:`~asgi_ws_gateway.passthrough.splice.CLOSE_WAIT_LOOKS` times ``close_timeout``).

Real ``asgi-ws-gateway run`` on the splice and the frame relay, raw upstreams and raw clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from asgi_ws_gateway.relay.close_wait import CLOSE_WAIT_BYTES, CLOSE_WAIT_LOOKS
from support.configs import api_entry, write_config
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, flood_bound, ws_frame
from support.together import AtOnce
from support.unread import windowed_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLOSE_TIMEOUT = 0.25
CHUNK = 64 << 10
PACE = 0.005
"""A steady client reads (or sends) ``CHUNK`` bytes, then pauses this long (seconds): ~13 MB/s at most,
a few MB per ``close_timeout``, past ``CLOSE_WAIT_BYTES`` well within ``CLOSE_WAIT_LOOKS`` of them."""
FAR = 2 * flood_bound(CLOSE_WAIT_BYTES + (1 << 20))
"""What a steady client that is never cut off reads (sends) before the test gives up on it: past the byte
bound (and a message), what one ``close_timeout`` passes at its pace, and what the kernel's buffers hold."""
TRICKLE = WINDOW = 16 << 10
"""A trickling client's receive buffer (its TCP window), and what it reads of it twice per ``close_timeout``
(a read in each of the close wait's looks, whatever their phase): enough to open its window each time (a
few KiB of a larger buffer, or one read per ``close_timeout``, took in nothing in some look: dropped)."""
TRICKLES = 5 * CLOSE_WAIT_LOOKS
"""The reads after which a trickling client whose upstream is still connected is held past the bound
(``CLOSE_WAIT_LOOKS`` looks are twice as many reads: room for looks late under load)."""
PATHS: dict[str, dict[str, Any]] = {
    "splice": {"passthrough": True},
    "frame relay": {"passthrough": True, "message_policies": {"outbound": [{"limit-message-size": {"max": 1 << 20}}]}},
}
COMMON = {"close_timeout": CLOSE_TIMEOUT, "ping_interval": 60, "ping_timeout": 60, "max_lifetime": 2.0}


class Upstreams:
    """``stream`` (a server per path, its connections' ends in ``self.gone`` under the path): after its 101,
    streams messages for good and never answers a close frame (reads and drops what comes); ``sink``: sends
    its close frame after its 101, then reads all that comes (never answers), counting the bytes in
    ``self.sunk``."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.servers: dict[str, asyncio.Server] = {}
        self.sunk: list[int] = []
        self.gone: dict[str, list[threading.Event]] = {name: [] for name in PATHS}
        """One per ``stream`` connection of each path (a server each), in the order they came: set when it ends."""

    async def start(self) -> None:
        for name in PATHS:
            serve = functools.partial(self.stream, name)
            self.servers[f"stream {name}"] = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.servers["sink"] = await asyncio.start_server(self.sink, "127.0.0.1", 0)

    def url(self, mode: str, name: str) -> str:
        """The ``mode`` upstream of the path ``name``."""
        server = self.servers[f"stream {name}" if mode == "stream" else mode]
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    async def stream(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        gone = threading.Event()
        self.gone[name].append(gone)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            drop = asyncio.create_task(_drop(reader))
            message = ws_frame(0x2, b"u" * CHUNK, mask=False)
            try:
                while not drop.done():
                    writer.write(message)
                    await writer.drain()
            finally:
                drop.cancel()
        gone.set()
        writer.transport.abort()

    async def sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        total = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
            while block := await reader.read(CHUNK):
                total += len(block)
        self.sunk.append(total)
        writer.transport.abort()

    async def stop(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(AttributeError):
                writer.transport.abort()
        for server in self.servers.values():
            server.close()
            await server.wait_closed()


async def _drop(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(CHUNK):
            pass


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstreams() -> AsyncIterator[Upstreams]:
    servers = Upstreams()
    await servers.start()
    try:
        yield servers
    finally:
        await servers.stop()


def _slug(name: str) -> str:
    return name.replace(" ", "-")


@pytest.fixture(scope="module")
def at_once() -> AtOnce:
    """The paths' cases of a test, on their own connections and upstreams, run together (:mod:`support.together`)."""
    return AtOnce()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> AsyncIterator[int]:
    directory = tmp_path_factory.mktemp("close-wait-fed")
    log = directory / "gateway.log"
    apis = [
        api_entry(
            upstreams.url(mode, name), name=f"{_slug(name)}-{mode}", path=f"/{_slug(name)}/{mode}", **fields, **COMMON
        )
        for name, fields in PATHS.items()
        for mode in ("stream", "sink")
    ]
    config = write_config(directory, {"apis": apis})
    async with GatewayProcess([str(config)], cwd=directory, workers=1, log=log, log_level="info") as process:
        yield process.port
    output = log.read_text()
    assert "Traceback" not in output and "ERROR" not in output, output[-4000:]


def _close_then_read(port: int, path: str, up_to: int) -> int:
    """Open ``path``, send a close frame, then read on at a steady pace (``PACE``), to the end or ``up_to``
    bytes: the bytes read after the close."""
    sock = windowed_client(port, path)
    total = 0
    try:
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        while total < up_to and (block := sock.recv(CHUNK)):
            total += len(block)
            time.sleep(PACE)  # Load, not synchronisation: a steady reader's pace
    except OSError:
        pass
    finally:
        sock.close()
    return total


def _close_then_trickle(port: int, path: str, gone: list[threading.Event]) -> int:
    """Open ``path``, send a close frame, then read ``TRICKLE`` bytes twice per ``close_timeout`` until the
    gateway dropped the upstream's connection (its event, the newest of ``gone`` once the 101 came: what
    the client's kernel still holds is read after the gateway's reset too), the client's connection ends,
    or ``TRICKLES`` reads: the reads."""
    sock = windowed_client(port, path, WINDOW)
    upstream_gone = gone[-1]  # (the upstream accepted before its 101)
    reads = 0
    try:
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        while reads < TRICKLES and not upstream_gone.is_set() and sock.recv(TRICKLE):
            reads += 1
            time.sleep(CLOSE_TIMEOUT / 2)  # Load, not synchronisation: the trickle's pace, a read in each look
    except OSError:
        pass
    finally:
        sock.close()
    return reads


@pytest.mark.parametrize("name", PATHS)
async def test_an_upstream_streaming_on_past_the_clients_close_is_cut_off(
    gateway: int, at_once: AtOnce, name: str
) -> None:
    """The client closes and reads on steadily; the upstream never answers and streams on: the
    close wait ends within ``CLOSE_WAIT_BYTES`` taken in (and what the buffers hold), not fed for good."""
    total = await at_once.result(
        "streaming",
        name,
        lambda each: asyncio.to_thread(_close_then_read, gateway, f"/{_slug(each)}/stream", FAR),
        PATHS,
    )
    assert total < FAR, f"{total} bytes read after the close"


@pytest.mark.parametrize("name", PATHS)
async def test_a_client_trickling_past_its_close_is_cut_off(
    gateway: int, upstreams: Upstreams, at_once: AtOnce, name: str
) -> None:
    """The client closes and reads 16 KiB twice per ``close_timeout``; the upstream streams on: the close wait
    ends within ``CLOSE_WAIT_LOOKS`` looks, not one per read for good."""

    def trickle(each: str) -> int:
        return _close_then_trickle(gateway, f"/{_slug(each)}/stream", upstreams.gone[each])

    reads = await at_once.result("trickling", name, lambda each: asyncio.to_thread(trickle, each), PATHS)
    assert reads < TRICKLES


def _send_on(port: int, path: str, up_to: int) -> int:
    """Open ``path`` (its upstream closes at once) and send messages steadily without answering, to ``up_to``
    bytes or the end: the bytes sent."""
    sock = windowed_client(port, path)
    sent = 0
    message = ws_frame(0x2, b"c" * CHUNK)
    try:
        while sent < up_to:
            sock.sendall(message)
            sent += len(message)
            time.sleep(PACE)  # Load, not synchronisation: a steady sender's pace
    except OSError:
        pass
    finally:
        sock.close()
    return sent


@pytest.mark.parametrize("name", PATHS)
async def test_a_client_sending_on_past_the_upstreams_close_is_cut_off(
    gateway: int, upstreams: Upstreams, name: str
) -> None:
    """The upstream closes and reads all that comes without answering; the client sends on steadily, never
    answering: the close wait ends within ``CLOSE_WAIT_BYTES`` (and what the buffers hold)."""
    sent = await asyncio.to_thread(_send_on, gateway, f"/{_slug(name)}/sink", FAR)
    for _ in range(100):  # the upstream's reads end with its connection (10 s at most)
        if upstreams.sunk:
            break
        await asyncio.sleep(0.1)
    assert sent < FAR, f"{sent} bytes sent, the upstream read {upstreams.sunk[-1]}"
