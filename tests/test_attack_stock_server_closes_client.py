"""A client's bad frame under plain ``uvicorn app:app``: uvicorn closes the client, the relay's next send to it.

uvicorn's stock ``websockets-sansio`` and ``wsproto`` close a client themselves for a protocol error or a
message over ``--ws-max-size`` and queue a ``websocket.disconnect``; a ``send`` before the relay reads that
disconnect raised ``RuntimeError`` ("Unexpected ASGI message 'websocket.send', after sending
'websocket.close'"), not the ``ClientDisconnected`` (an ``OSError``) of a client gone: the relay took it for
a bug, "relay pump failed" at ERROR with a traceback, both sides closed with 1011. Found by the differential
frame fuzz. Here the relay's send waits for a client that reads nothing (uvicorn's writes paused) while its
bad frame is read, then the client reads: the send goes on after the server's close. The legacy
``websockets`` raises ``ClientDisconnected`` there (run as well, it never failed): it closes only once the
relay read the disconnect, after which the relay sends nothing.

Each runs a real ``uvicorn app:app`` process and reads its whole log: no ERROR, no traceback, the
connection's access line, and the upstream told of the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from support.hostile import Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.log_configs import DEBUG_TO_STDERR
from support.processes import ServerProcess, ready_server
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import next_frame, raw_client_of

IMPLS = ["websockets-sansio", "wsproto", "websockets"]
CLOSES_AT_ONCE = {"websockets-sansio", "wsproto"}
"""The implementations that close the client at its bad frame and queue the disconnect then (the legacy one:
once the TCP connection is over, which a client that reads nothing holds)."""
WS_MAX_SIZE = 4096
STALLED_LOOKS = 6
"""Looks (50 ms apart) at an upstream whose writes the gateway takes none of before its send is taken to wait."""
BAD_FRAMES = {
    "reserved opcode": ws_frame(3, b""),
    "a message over --ws-max-size": ws_frame(2, b"x" * (WS_MAX_SIZE + 1)),
}
ENDING = {  # the code of uvicorn's disconnect (the access line's), and the one the upstream is told
    ("websockets-sansio", "reserved opcode"): (1002, 1002),
    ("websockets-sansio", "a message over --ws-max-size"): (1009, 1009),
    ("wsproto", "reserved opcode"): (1002, 1002),  # (a parse error: no close frame to the client, no RuntimeError)
    ("wsproto", "a message over --ws-max-size"): (1009, 1009),
    ("websockets", "reserved opcode"): (1006, 1001),  # (no close frame from the client: a client gone, 1001)
    ("websockets", "a message over --ws-max-size"): (1006, 1001),
}
APP = """
from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found

app = WebSocketGateway(not_found, config="gateway.yaml")
"""
LOG_CONFIG = {**DEBUG_TO_STDERR, "root": {"level": "INFO", "handlers": ["err"]}}
"""The gateway's lines at INFO (its access line), uvicorn's, to stderr."""


class FloodsUntilTold:
    """A raw upstream that sends 64 KiB binary messages until it reads a close frame, answers it and ends.

    :meth:`stalled` returns once the gateway takes in no more of them (its send to the client waits);
    ``told`` is set once a close frame came, its code in ``codes``."""

    def __init__(self) -> None:
        self.told = asyncio.Event()
        self.codes: list[int] = []
        self._written = 0
        self._writer: asyncio.StreamWriter | None = None

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        self._writer = writer
        feed = asyncio.create_task(self._feed(writer))
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (frame := await next_frame(reader))[0] != 0x8:
                pass
            self.codes.append(struct.unpack("!H", frame[1][:2])[0])
            self.told.set()
            feed.cancel()
            writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        writer.close()

    async def stalled(self) -> None:
        """Return once what the kernel took of its writes stayed the same over a few looks, more waiting."""
        taken, looks = -1, 0
        while looks < STALLED_LOOKS:
            await asyncio.sleep(0.05)
            writer = self._writer
            waiting = writer.transport.get_write_buffer_size() if writer is not None else 0
            looks = looks + 1 if waiting and self._written - waiting == taken else 0
            taken = self._written - waiting

    async def _feed(self, writer: asyncio.StreamWriter) -> None:
        message = ws_frame(0x2, b"u" * 65536, mask=False)
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(message)
                self._written += len(message)
                await writer.drain()


def _uvicorn(tmp: Path, impl: str, upstream_port: int, **api: object) -> ServerProcess:
    """``uvicorn app:app --ws impl`` serving the gateway, whose API ``/h`` reaches the upstream, ready."""
    (tmp / "app.py").write_text(APP)
    entry = {"name": "h", "path": "/h", "upstreams": [f"ws://127.0.0.1:{upstream_port}/"], **api}
    (tmp / "gateway.yaml").write_text(json.dumps({"apis": [entry]}))  # (JSON is YAML)
    (tmp / "log.json").write_text(json.dumps(LOG_CONFIG))
    return ready_server(lambda port: [
        "-m", "uvicorn", "app:app", "--port", str(port), "--ws", impl, "--ws-max-size", str(WS_MAX_SIZE),
        "--log-config", "log.json",
    ], cwd=tmp)  # fmt: skip


async def _read_to_the_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What a client does: read what the server sends to its close frame, answer it, read on to the EOF and
    close its end. A server that ends without a close frame ends it too."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        async with asyncio.timeout(30):
            while True:
                b0, b1 = await reader.readexactly(2)  # a server's frame: not masked
                length = b1 & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await reader.readexactly(8))
                payload = await reader.readexactly(length)
                if b0 & 0x0F == 0x8:
                    writer.write(ws_frame(0x8, payload[:2]))
                    break
            while await reader.read(1 << 20):
                pass
    writer.close()  # its end too (the legacy ``websockets`` waits 10 s for it)


def _socket(writer: asyncio.StreamWriter) -> asyncio.Transport:
    return cast(asyncio.Transport, writer.transport)  # (a socket's: it reads too)


def _loud(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line or "Traceback" in line]


@pytest.mark.parametrize("bad", list(BAD_FRAMES))
@pytest.mark.parametrize("impl", IMPLS)
async def test_a_send_after_uvicorn_closed_the_client_ends_as_the_clients_close(
    tmp_path: Path, hostile: Callable[[Handler], Awaitable[int]], impl: str, bad: str
) -> None:
    """The relay's send to the client waits; the client's bad frame makes uvicorn close it; the send goes on
    (RuntimeError): the connection ends as the client's close, its code upstream, nothing logged at ERROR."""
    upstream = FloodsUntilTold()
    port = await hostile(upstream)
    with _uvicorn(tmp_path, impl, port) as server:
        reader, writer = await raw_client_of(f"ws://127.0.0.1:{server.port}/h")
        try:
            _socket(writer).pause_reading()  # uvicorn's writes to it pause: the relay's send waits
            await asyncio.wait_for(upstream.stalled(), 30)
            writer.write(BAD_FRAMES[bad])
            if impl in CLOSES_AT_ONCE:  # closed, its disconnect read by the relay: the upstream told
                await asyncio.wait_for(upstream.told.wait(), 30)
            _socket(writer).resume_reading()  # the waiting send goes on, after uvicorn's close
            await _read_to_the_end(reader, writer)
            await asyncio.wait_for(upstream.told.wait(), 30)
        finally:
            writer.transport.abort()
        await asyncio.to_thread(server.wait_for_line, "asgi_ws_gateway.access INFO")
        server.stop()
        output = server.output()
    assert _loud(output) == []
    client_code, upstream_code = ENDING[impl, bad]
    assert upstream.codes == [upstream_code]
    assert f"closed by client with {client_code} " in output


@pytest.mark.parametrize("impl", IMPLS)
async def test_the_relays_close_after_uvicorn_closed_the_client_logs_no_error(
    tmp_path: Path, hostile: Callable[[Handler], Awaitable[int]], impl: str
) -> None:
    """The relay closes the client (a message policy's 1009) while its writes wait; the client's bad
    frame makes uvicorn close it first; the relay's close goes on (RuntimeError): it failed the client pump,
    "relay pump failed" at ERROR. Management's kick and the watchdog's closes send the same close. The legacy
    ``websockets``, bad frame or not: the close beside the pump's waiting send was a second drain, which it
    asserts against (AssertionError, the same ERROR): the close now goes behind the send."""
    upstream = FloodsUntilTold()
    port = await hostile(upstream)
    limit = {"inbound": [{"limit-message-size": {"max": 1000}}]}
    with _uvicorn(tmp_path, impl, port, message_policies=limit, close_timeout=10) as server:
        reader, writer = await raw_client_of(f"ws://127.0.0.1:{server.port}/h")
        try:
            _socket(writer).pause_reading()
            await asyncio.wait_for(upstream.stalled(), 30)
            writer.write(ws_frame(0x2, b"x" * 2000))  # over the policy's limit: the relay's close waits to be sent
            await asyncio.wait_for(_read_by(server.port, writer), 30)  # in uvicorn's queue: the relay has it
            writer.write(BAD_FRAMES["a message over --ws-max-size"])
            if impl in CLOSES_AT_ONCE:
                await asyncio.wait_for(_read_by(server.port, writer), 30)
            _socket(writer).resume_reading()
            await _read_to_the_end(reader, writer)
            await asyncio.wait_for(upstream.told.wait(), 30)
        finally:
            writer.transport.abort()
        await asyncio.to_thread(server.wait_for_line, "asgi_ws_gateway.access INFO")
        server.stop()
        output = server.output()
    assert _loud(output) == []
    assert upstream.codes == [1001]
    assert "closed by gateway with 1009 " in output


async def _read_by(server_port: int, writer: asyncio.StreamWriter) -> None:
    """Return once the server read all the client sent it (its socket's receive queue empty)."""
    client_port = writer.get_extra_info("sockname")[1]
    while True:
        if not _unread(server_port, client_port):
            return
        await asyncio.sleep(0.01)


def _unread(server_port: int, client_port: int) -> bool:
    """Whether the server's socket of this client holds bytes it has not read (``/proc/net/tcp``'s rx_queue)."""
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(local) and fields[2].endswith(remote):
            return not fields[4].endswith(":00000000")
    return True  # (not listed yet)
