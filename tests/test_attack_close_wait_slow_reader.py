"""Attack on the close wait (``close_timeout``): a slow reader with a large backlog once a close begins.

The splice's ``close_timeout`` was counted from the close frame's passing: a client still reading a
large backlog slowly (healthy: what its TCP acknowledges keeps growing) was aborted ``close_timeout``
after the close began, whatever its progress, the rest of its backlog and the close frame lost. The
progress rule of the lingering close and the stall probe (:mod:`asgi_ws_gateway.progress`) now holds
for the close wait too: a side that takes in some of what waits for it within each ``close_timeout``
is waited for; one that takes in nothing is still aborted at ``close_timeout``.

Real ``asgi-ws-gateway run`` on each path (the splice, the frame relay, the relay), a raw upstream that
pushes a backlog larger than the kernel's buffers, and a raw client with a small receive buffer that
reads slowly (or not at all).

A slow reader's time is its pace, not CPU: the paths' cases of one test read at once, on their own
connections (:class:`~support.together.AtOnce`), each still asserting what its own path did.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, split_frames
from support.together import AtOnce
from support.unread import windowed_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

FRAME = 65536
PUSHED = 8 << 20
"""What the upstream sends the client at once: more than the kernel's buffers hold on the way."""
FRAMES = PUSHED // FRAME
LARGE = 1 << 20
"""The size of the ``large`` upstream's messages: the ones its connector still holds when it reads the
upstream's close (the relay's ``websockets`` client queues 4 messages), MBs for the client to take in."""
CLOSE_TIMEOUT = 1.0
READ, PAUSE = 16 << 10, 0.01
"""The slow client reads this much, then pauses this long (seconds): ~1.6 MB/s at most, several
``close_timeout`` for the backlog, some of it taken in within each."""
SLOWER = 2 * PAUSE
"""A slower client's pause (~0.8 MB/s at most): the 1 MiB message before the close frame waits longer than
``close_timeout`` for room in the kernel's buffer (its writes resume once a third of it is free)."""
WINDOW = 16 << 10
"""The slow reader's receive buffer (its TCP window)."""
READING = ("slow", "patient")
"""The upstreams that read slowly."""
KEEPALIVE = {"ping_interval": 60, "ping_timeout": 60}  # the stall rule is not what ends a connection here
COMMON = {"close_timeout": CLOSE_TIMEOUT, **KEEPALIVE}
PATHS: dict[str, dict[str, Any]] = {
    "splice": {"passthrough": True, **COMMON},
    "frame relay": {
        "passthrough": True,
        "message_policies": {"outbound": [{"limit-message-size": {"max": PUSHED}}]},
        **COMMON,
    },
    "relay": {"passthrough": False, **COMMON},
}


class Upstreams:
    """Raw upstreams, one server each: ``first`` pushes ``PUSHED`` bytes of messages right after its 101
    and then its close frame, ``large`` the same in messages of ``LARGE`` bytes; ``answer`` pushes the
    same as ``first`` and answers the client's close frame; ``slow`` (a small receive buffer) sends its
    close frame soon after its 101 and reads what the client still sends slowly, to the client's answer;
    ``patient`` reads so and answers the client's close. The reading ones are one server per path, what
    each read (its data frames, their bytes, the close frame's code) in ``self.read`` under its path."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.servers: dict[tuple[str, str], asyncio.Server] = {}
        self.read: dict[tuple[str, str], tuple[int, int, int | None]] = {}

    async def start(self) -> None:
        for mode in ("first", "large", "answer"):
            serve = functools.partial(self.push, mode)
            self.servers[mode, ""] = await asyncio.start_server(serve, "127.0.0.1", 0)
        for mode in READING:
            for name in PATHS:
                listening = socket.socket()
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, WINDOW)  # its connections' window
                listening.bind(("127.0.0.1", 0))
                serve = functools.partial(self.read_slowly, mode, name)
                self.servers[mode, name] = await asyncio.start_server(serve, sock=listening)

    def url(self, mode: str, name: str) -> str:
        """The server of ``mode`` for the path ``name`` (the pushing ones serve every path)."""
        server = self.servers[mode, name if mode in READING else ""]
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    async def read_by(self, mode: str, name: str) -> tuple[int, int, int | None]:
        """What the ``mode`` upstream of ``name`` read, once its reads ended (10 s at most: they end with
        the close frame or the connection)."""
        for _ in range(100):
            if (mode, name) in self.read:
                break
            await asyncio.sleep(0.1)
        return self.read.pop((mode, name))

    async def push(self, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            size = LARGE if mode == "large" else FRAME
            message = ws_frame(0x2, b"p" * size, mask=False)
            for _ in range(PUSHED // size):
                writer.write(message)
            if mode in ("first", "large"):
                writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
                await close_frame_in(reader)
            else:
                code, _ = await close_frame_in(reader)
                writer.write(ws_frame(0x8, struct.pack("!H", code), mask=False))
            await writer.drain()
        writer.close()

    async def read_slowly(
        self, mode: str, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.writers.append(writer)
        frames = data = 0
        code: int | None = None
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer)
            await asyncio.sleep(0.5)  # Load, not synchronisation: the client's backlog fills the buffers
            if mode == "slow":
                writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
            buffer = b""
            while code is None and (block := await reader.read(READ)):
                buffer += block
                found, buffer = _masked_frames(buffer)
                for opcode, payload in found:
                    if opcode == 0x8:
                        code = struct.unpack("!H", payload[:2])[0]
                    elif opcode == 0x2:
                        frames, data = frames + 1, data + len(payload)
                await asyncio.sleep(PAUSE)  # Load, not synchronisation: the pace of a slow reader
            if mode == "patient" and code is not None:
                writer.write(ws_frame(0x8, struct.pack("!H", code), mask=False))  # the answer
                await writer.drain()
        self.read[mode, name] = (frames, data, code)
        writer.close()

    async def stop(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(AttributeError):  # (Python 3.11: an abort after the close completed)
                writer.transport.abort()
        for server in self.servers.values():
            server.close()
            await server.wait_closed()


def _masked_frames(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete masked frames (a client's) at the start of ``buffer``, their payloads unmasked only
    for close frames (the others' are kept as they came: only their size counts); the bytes left."""
    frames = []
    while len(buffer) >= 6:
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            length, start = struct.unpack("!H", buffer[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack("!Q", buffer[2:10])[0], 10
        if len(buffer) < start + 4 + length:
            break
        key, payload = buffer[start : start + 4], buffer[start + 4 : start + 4 + length]
        if buffer[0] & 0x0F == 0x8:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append((buffer[0] & 0x0F, payload))
        buffer = buffer[start + 4 + length :]
    return frames, buffer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstreams() -> AsyncIterator[Upstreams]:
    servers = Upstreams()
    await servers.start()
    try:
        yield servers
    finally:
        await servers.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> AsyncIterator[int]:
    directory = tmp_path_factory.mktemp("close-wait")
    log = directory / "gateway.log"
    apis = [
        api_entry(upstreams.url(mode, name), name=f"{_slug(name)}-{mode}", path=f"/{_slug(name)}/{mode}", **fields)
        for name, fields in PATHS.items()
        for mode in ("first", "large", "answer", "slow", "patient")
    ]
    apis += [  # the gateway closes (1001) a second in, the backlog still on its way
        api_entry(
            upstreams.url("answer", name),
            name=f"{_slug(name)}-lifetime",
            path=f"/{_slug(name)}/lifetime",
            max_lifetime=1.0,
            **fields,
        )
        for name, fields in PATHS.items()
    ]
    config = write_config(directory, {"apis": apis})
    async with GatewayProcess([str(config)], cwd=directory, workers=1, log=log, log_level="info") as process:
        yield process.port
    output = log.read_text()
    assert "Traceback" not in output and "ERROR" not in output, output[-4000:]


def _slug(name: str) -> str:
    return name.replace(" ", "-")


@pytest.fixture(scope="module")
def at_once() -> AtOnce:
    return AtOnce()


def _read(
    port: int, path: str, *, closes: bool, wait: float = 0.0, sends: bool = True, pause: float = PAUSE
) -> tuple[int, int, int | None, str]:
    """Open ``path``; if ``closes``, send a close frame once the backlog is queued; wait ``wait`` seconds
    reading nothing; then read slowly to the end (``READ`` bytes, then ``pause`` seconds; the upstream's
    close frame answered; unless ``sends`` is False, a message sent after each read until a close frame is
    read). The data frames and their bytes read, the code of the close frame read (None: none), and how
    the reads ended."""
    sock = windowed_client(port, path, WINDOW)
    frames = data = 0
    code: int | None = None
    buffer = b""
    try:
        time.sleep(0.5)  # the backlog: the kernel's buffers fill
        if closes:
            sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        time.sleep(wait)  # Load, not synchronisation: a client that reads nothing meanwhile
        while block := sock.recv(READ):
            buffer += block
            found, buffer = split_frames(buffer)
            for opcode, payload in found:
                if opcode == 0x8 and code is None:
                    code = struct.unpack("!H", payload[:2])[0]
                    if not closes:
                        sock.sendall(ws_frame(0x8, payload[:2]))  # the answer
                elif opcode == 0x2:
                    frames, data = frames + 1, data + len(payload)
            if code is None and not closes and sends:
                sock.sendall(ws_frame(0x2, b"still here"))  # a client sends as it reads (dropped once closing)
            time.sleep(pause)  # Load, not synchronisation: the pace of a slow reader
        return frames, data, code, "eof"
    except OSError as exc:
        return frames, data, code, type(exc).__name__
    finally:
        sock.close()


@pytest.mark.parametrize("name", ["splice", "frame relay"])
async def test_a_slow_reader_closing_gets_its_whole_backlog_and_the_close_frame(
    gateway: int, at_once: AtOnce, name: str
) -> None:
    """A client closes with a backlog that takes several ``close_timeout`` to read: every message, the
    upstream's answer, then EOF. It was aborted ``close_timeout`` after its close: the rest and the answer
    lost. The frame relay dropped what it read of the upstream after the client's close on a direction with
    message policies (58 of 128 here), where it forwarded it on one without. (The relay drops it: its server
    answers the client's close at once, and nothing more can go to the client.)"""
    frames, data, code, end = await at_once.result(
        "closing",
        name,
        lambda each: asyncio.to_thread(_read, gateway, f"/{_slug(each)}/answer", closes=True),
        ["splice", "frame relay"],
    )
    assert (frames, data, code, end) == (FRAMES, PUSHED, 1000, "eof")


@pytest.mark.parametrize("name", PATHS)
async def test_a_slow_reader_sending_as_it_reads_gets_the_upstreams_close_frame_and_eof(
    gateway: int, at_once: AtOnce, name: str
) -> None:
    """The upstream closes behind a backlog the client, sending as it reads, takes several ``close_timeout``
    to read: every message, the close frame, then EOF. The splice and the frame relay aborted it
    ``close_timeout`` after the close frame passed: the client's next bytes met a closed socket, and the
    kernel's reset dropped the rest. The relay cut it ``close_timeout`` after a send of the client's found
    the upstream closed (1011 after 119 of 128 messages, once in a clean CI): the next test's case, which
    64 KiB messages meet only when the ~9 its connector still held at the upstream's close wait longer than
    ``close_timeout`` for room in the kernel's buffer (a slowed reader)."""
    frames, data, code, end = await at_once.result(
        "sending", name, lambda each: asyncio.to_thread(_read, gateway, f"/{_slug(each)}/first", closes=False), PATHS
    )
    assert (frames, data, code, end) == (FRAMES, PUSHED, 1000, "eof")


@pytest.mark.parametrize("name", PATHS)
async def test_a_slow_reader_sending_as_it_reads_gets_the_upstreams_last_large_messages_and_close_frame(
    gateway: int, at_once: AtOnce, name: str
) -> None:
    """The upstream closes behind messages of 1 MiB the client, sending as it reads, takes several
    ``close_timeout`` to read: every message, the close frame, then EOF. On the relay, the client's message
    sent once the upstream's close was in found the upstream closed while 4 MiB still waited in its
    connector: the relay took that for the client's close and cut the delivery ``close_timeout`` later:
    5 of 8 messages, then 1011 ``gateway error`` or no close frame at all (every run)."""
    frames, data, code, end = await at_once.result(
        "large", name, lambda each: asyncio.to_thread(_read, gateway, f"/{_slug(each)}/large", closes=False), PATHS
    )
    assert (frames, data, code, end) == (PUSHED // LARGE, PUSHED, 1000, "eof")


@pytest.mark.parametrize("name", PATHS)
async def test_a_slower_reader_gets_the_upstreams_close_frame_behind_its_backlog(
    gateway: int, at_once: AtOnce, name: str
) -> None:
    """The upstream closes behind messages of 1 MiB a client reading more slowly (sending nothing) takes
    several ``close_timeout`` to read: the close frame comes after the last of them. The relay gave up
    sending it when the writes to the client stayed paused for ``close_timeout``, the client still reading:
    every message, then EOF with no close frame (every run)."""
    frames, data, code, end = await at_once.result(
        "slower",
        name,
        lambda each: asyncio.to_thread(
            _read, gateway, f"/{_slug(each)}/large", closes=False, sends=False, pause=SLOWER
        ),
        PATHS,
    )
    assert (frames, data, code, end) == (PUSHED // LARGE, PUSHED, 1000, "eof")


@pytest.mark.parametrize("name", PATHS)
async def test_a_slow_reader_sending_as_it_reads_gets_the_gateways_close_frame_and_eof(
    gateway: int, at_once: AtOnce, name: str
) -> None:
    """The gateway closes (``max_lifetime``) while what it forwarded before takes the client, sending as it
    reads, several ``close_timeout`` to read: the close frame, then EOF (what the upstream sends after the
    gateway's close is not forwarded)."""
    frames, _, code, end = await at_once.result(
        "lifetime",
        name,
        lambda each: asyncio.to_thread(_read, gateway, f"/{_slug(each)}/lifetime", closes=False),
        PATHS,
    )
    assert (code, end) == (1001, "eof"), f"{frames} messages read"


@pytest.mark.parametrize("name", PATHS)
async def test_a_client_that_reads_nothing_after_its_close_is_still_aborted(
    gateway: int, at_once: AtOnce, name: str
) -> None:
    """A client that closes with its backlog queued and then reads nothing for several ``close_timeout``
    takes in nothing: it is dropped (a reset), not waited for; what it reads afterwards is no backlog."""
    frames, _, code, end = await at_once.result(
        "nothing",
        name,
        lambda each: asyncio.to_thread(_read, gateway, f"/{_slug(each)}/answer", closes=True, wait=6 * CLOSE_TIMEOUT),
        PATHS,
    )
    assert code is None and frames < FRAMES, (frames, code, end)


def _send_then_answer(port: int, path: str) -> str:
    """Open ``path``, send ``PUSHED`` bytes of messages (the upstream's close frame arrives meanwhile), then
    answer the close frame and read to the end; how the connection ended."""
    sock = windowed_client(port, path, WINDOW)
    try:
        message = ws_frame(0x2, b"c" * FRAME)
        for _ in range(FRAMES):
            sock.sendall(message)
        buffer = b""
        while block := sock.recv(READ):
            buffer += block
            found, buffer = split_frames(buffer)
            if any(opcode == 0x8 for opcode, _ in found):
                sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        return "eof"
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


@pytest.mark.parametrize("name", ["splice", "frame relay"])
async def test_a_slow_upstream_gets_the_clients_backlog_and_its_answer(
    gateway: int, upstreams: Upstreams, at_once: AtOnce, name: str
) -> None:
    """The upstream closes while the client's messages queued to it take several ``close_timeout`` to read:
    it reads every one, then the client's answer; it was aborted ``close_timeout`` after its close frame
    passed, the rest and the answer lost. (The relay drops what the client sends after the upstream's
    close frame, by design.)"""
    end = await at_once.result(
        "slow upstream",
        name,
        lambda each: asyncio.to_thread(_send_then_answer, gateway, f"/{_slug(each)}/slow"),
        ["splice", "frame relay"],
    )
    assert (await upstreams.read_by("slow", name), end) == ((FRAMES, PUSHED, 1000), "eof")


def _send_and_close(port: int, path: str) -> tuple[int | None, str]:
    """Open ``path``, send ``PUSHED`` bytes of messages and a close frame, and read to the end: the code of
    the close frame read (None: none), and how the connection ended."""
    sock = windowed_client(port, path, WINDOW)
    code: int | None = None
    try:
        message = ws_frame(0x2, b"c" * FRAME)
        for _ in range(FRAMES):
            sock.sendall(message)
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        buffer = b""
        while block := sock.recv(READ):
            buffer += block
            found, buffer = split_frames(buffer)
            code = next((struct.unpack("!H", payload[:2])[0] for opcode, payload in found if opcode == 0x8), code)
        return code, "eof"
    except OSError as exc:
        return code, type(exc).__name__
    finally:
        sock.close()


@pytest.mark.parametrize("name", PATHS)
async def test_a_slow_upstream_gets_the_clients_backlog_and_its_close_frame(
    gateway: int, upstreams: Upstreams, at_once: AtOnce, name: str
) -> None:
    """The client closes behind messages that take the upstream several ``close_timeout`` to read: it reads
    every one and the client's close frame, and its answer reaches the client."""
    code, end = await at_once.result(
        "patient upstream",
        name,
        lambda each: asyncio.to_thread(_send_and_close, gateway, f"/{_slug(each)}/patient"),
        PATHS,
    )
    assert (await upstreams.read_by("patient", name), code, end) == ((FRAMES, PUSHED, 1000), 1000, "eof")


def _read_until_told(port: int, path: str, read: threading.Event) -> tuple[int, int | None, str]:
    """As :func:`_read` for a client that closes, setting ``read`` once it read a MiB: the data frames read,
    the code of the close frame read (None: none), and how the reads ended."""
    sock = windowed_client(port, path, WINDOW)
    frames, got, code, buffer = 0, 0, None, b""
    try:
        time.sleep(0.5)  # the backlog: the kernel's buffers fill
        sock.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        while block := sock.recv(READ):
            got += len(block)
            if got > 1 << 20:
                read.set()
            buffer += block
            found, buffer = split_frames(buffer)
            frames += sum(opcode == 0x2 for opcode, _ in found)
            code = next((struct.unpack("!H", payload[:2])[0] for opcode, payload in found if opcode == 0x8), code)
            time.sleep(PAUSE)  # Load, not synchronisation: the pace of a slow reader
        return frames, code, "eof"
    except OSError as exc:
        return frames, code, type(exc).__name__
    finally:
        read.set()
        sock.close()


async def test_the_shutdown_still_bounds_a_slow_readers_close_wait(tmp_path: Path, upstreams: Upstreams) -> None:
    """SIGTERM while a spliced client reads its backlog slowly after its close: the close wait is
    ``close_timeout`` from the shutdown, progress or not, so the process ends in its bound (exit 0) and the
    client's backlog is cut short."""
    log = tmp_path / "gateway.log"
    api = api_entry(upstreams.url("answer", "splice"), name="splice", path="/splice", **PATHS["splice"])
    config = write_config(tmp_path, {"apis": [api], "drain_grace_period": 0})
    read = threading.Event()
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log, log_level="info") as process:
        reader = asyncio.create_task(asyncio.to_thread(_read_until_told, process.port, "/splice", read))
        await asyncio.to_thread(read.wait, 15)
        code = await asyncio.to_thread(process.stop)  # SIGTERM (a SIGKILL 15 s later: -9)
    frames, _, _ = await reader
    assert code == 0
    assert frames < FRAMES  # cut at the shutdown's bound, not read to its end
