"""Attack on the relay's close: an upstream that closes behind a backlog, to a client that reads nothing.

The relay's upstream connector queues a few messages; once the upstream's close frame is in (answered at
once), its pump may still be sending the client what came before it. Only the server's stall rule
(``ping_timeout``) bounded that send, and nothing did with the keepalive off: a client that read nothing
held the connection for as long as it lived (minutes here, then the test's end), the upstream's close
answered but never completed on the client's side. That delivery now waits as the close frame behind it
does (:mod:`asgi_ws_gateway.relay.close_wait`): on while the client takes some in within each
``close_timeout``, cut when it takes in nothing.

Real ``asgi-ws-gateway run`` (``passthrough: false``), a raw upstream that pushes 8 messages of 1 MiB (more
than the kernel's buffers hold on the way) and its close frame, and raw clients with a small receive buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
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
from support.unread import windowed_client

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts the gateway's open files in /proc"),
]

LARGE, COUNT = 1 << 20, 8
"""The upstream's messages: more than the kernel's buffers hold, and some still in its connector's queue
when its close frame is read."""
CLOSE_TIMEOUT = 1.0
WINDOW = 16 << 10
"""The clients' receive buffer (their TCP window)."""
READ, PAUSE = 16 << 10, 0.01
"""A slow client reads this much, then pauses this long (seconds): several ``close_timeout`` for the backlog."""
KEEPALIVES: dict[str, dict[str, Any]] = {
    "keepalive-off": {"ping_interval": None, "ping_timeout": None},
    "keepalive-on": {"ping_interval": 30, "ping_timeout": 60},  # its stall rule is not what ends a connection here
}


async def _push(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The upstream: its backlog and its close frame at once, then the gateway's answer awaited."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await accept_upstream(reader, writer)
        message = ws_frame(0x2, b"p" * LARGE, mask=False)
        for _ in range(COUNT):
            writer.write(message)
        writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        await close_frame_in(reader)
    writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    upstream = await asyncio.start_server(_push, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/"
    directory = tmp_path_factory.mktemp("relay-close-backlog")
    apis = [
        api_entry(url, name=name, path=f"/{name}", passthrough=False, close_timeout=CLOSE_TIMEOUT, **keepalive)
        for name, keepalive in KEEPALIVES.items()
    ]
    log = directory / "gateway.log"
    config = write_config(directory, {"apis": apis})
    try:
        async with GatewayProcess([str(config)], cwd=directory, workers=1, log=log, log_level="info") as process:
            yield process
    finally:
        upstream.close()
    output = log.read_text()
    assert "Traceback" not in output and "ERROR" not in output, output[-4000:]


def _read(port: int, path: str, *, wait: float) -> tuple[int, int | None, str]:
    """Open ``path``, read nothing for ``wait`` seconds, then read slowly to the end: the data frames read, the
    code of the close frame read (None: none, else answered), and how the reads ended."""
    sock = windowed_client(port, path, WINDOW)
    frames, code, buffer = 0, None, b""
    try:
        time.sleep(wait)  # Load, not synchronisation: a client that reads nothing meanwhile
        while block := sock.recv(READ):
            buffer += block
            found, buffer = split_frames(buffer)
            for opcode, payload in found:
                if opcode == 0x8 and code is None:
                    code = struct.unpack("!H", payload[:2])[0]
                    sock.sendall(ws_frame(0x8, payload[:2]))  # the answer
                frames += opcode == 0x2
            time.sleep(PAUSE)  # Load, not synchronisation: the pace of a slow reader
        return frames, code, "eof"
    except OSError as exc:
        return frames, code, type(exc).__name__
    finally:
        sock.close()


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _access_line(log: Path, path: str) -> str:
    for _ in range(150):  # the line comes when both sides are over (15 s at most)
        text = await asyncio.to_thread(log.read_text)
        lines = [line for line in text.splitlines() if f'"WebSocket {path}"' in line]
        if lines:
            return lines[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no access line for {path}")


@pytest.mark.parametrize("name", KEEPALIVES)
async def test_a_client_that_takes_in_nothing_of_the_backlog_before_the_upstreams_close_is_cut(
    gateway: GatewayProcess, name: str
) -> None:
    """The client reads nothing for 6 ``close_timeout``: it is cut (no close frame, part of the backlog), the
    upstream's close recorded, and its connection's files released. Before, with the keepalive off or its
    ``ping_timeout`` long, it was still held: it then read all 8 messages and the close frame."""
    assert gateway.process is not None and gateway.log is not None
    pid, log = gateway.process.pid, gateway.log
    before = _open_files(pid)
    frames, code, _ = await asyncio.to_thread(_read, gateway.port, f"/{name}", wait=6 * CLOSE_TIMEOUT)
    assert code is None and frames < COUNT, (frames, code)
    line = await _access_line(log, f"/{name}")
    assert " closed by upstream with 1000 " in line, line
    for _ in range(100):  # the sockets go once both sides are over (10 s at most)
        if _open_files(pid) <= before:
            break
        await asyncio.sleep(0.1)
    assert _open_files(pid) <= before


async def test_a_slow_client_gets_the_backlog_before_the_upstreams_close_and_its_close_frame(
    gateway: GatewayProcess,
) -> None:
    """With the keepalive off, a client that takes the backlog in slowly (several ``close_timeout``), sending
    nothing: every message, the close frame, then EOF."""
    assert await asyncio.to_thread(_read, gateway.port, "/keepalive-off", wait=0.5) == (COUNT, 1000, "eof")
