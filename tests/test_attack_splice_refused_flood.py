"""A side refused for a bad frame that keeps sending is closed after a bounded read, not read for close_timeout.

On the splice and the frame relay a refused side gets its close frame and a FIN, and what it still sends
is read and dropped until it closes (its answer is not read: it broke the framing). Nothing bounded the
bytes: a raw client that sent a bad frame and then flooded zeros had 4-5 GB read from it in 1 s over
loopback with ``close_timeout: 1``, a core busy for the whole close_timeout per connection (an upstream
the same). Past :data:`~asgi_ws_gateway.passthrough.read_out.REFUSED_BYTES` (16 MiB) after its refusal the
side is closed now (a lingering close): a flooder reads a reset (EPIPE) after a few more MiB (the
linger's own MiB, the kernel's buffers), the gateway's close frame still first in what it can read.

The relay's client leg (``passthrough: false``) the same: its protocol wrote the close frame and a FIN and
read on until the client's close or close_timeout, 6.2 GB in the 5 s of the default; now past REFUSED_BYTES
it is closed as the splice closes a refused side.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support import tls
from support.configs import api_entry, write_config
from support.hostile import CONNECTORS
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream_blocking
from support.rawws import upgrade_blocking
from support.tls import make_ca

CHUNK = bytes(65536)
CAP = 256 * 1024 * 1024
"""Bytes the flooder sends at most: the gateway read that in well under close_timeout before the bound."""
BOUND = 64 * 1024 * 1024
"""What a refused side may get in before its reset: REFUSED_BYTES, the linger's MiB, the kernel's buffers."""
API = {"close_timeout": 30}  # longer than any test: only the byte bound ends the flood
BAD_FROM_CLIENT = b"\x83\x80\x00\x00\x00\x00"  # reserved opcode 3 (masked, empty)
BAD_FROM_UPSTREAM = b"\x83\x00"  # the same, unmasked
CLOSE_FROM_UPSTREAM = b"\x88\x02\x03\xe8"  # a close frame, 1000 (unmasked)


def _flood(sock: socket.socket) -> int:
    """Send zeros on ``sock`` until the connection is reset or :data:`CAP`; the bytes the kernel took."""
    sent = 0
    with contextlib.suppress(OSError):  # EPIPE, ECONNRESET: the gateway closed it
        while sent < CAP:
            sent += sock.send(CHUNK)
    return sent


def _small_send_buffer(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.settimeout(20)  # a gateway reading nothing fails the test instead of hanging it


def _client_floods(port: int, path: str) -> tuple[int, bytes]:
    """A client that sends a bad frame, then zeros: what it sent, and the first bytes it could read."""
    with socket.socket() as sock:
        _small_send_buffer(sock)
        sock.connect(("127.0.0.1", port))
        upgrade_blocking(sock, port, path)
        sock.sendall(BAD_FROM_CLIENT)
        sent = _flood(sock)
        try:
            first = sock.recv(4)
        except OSError:
            first = b""
        return sent, first


def _client_answers_the_close_with_a_bad_frame_and_floods(port: int, path: str) -> tuple[int, bytes]:
    """A client that reads the gateway's close frame, answers it with a bad frame, then sends zeros: what it
    sent, and the close frame it read first."""
    with socket.socket() as sock:
        _small_send_buffer(sock)
        sock.connect(("127.0.0.1", port))
        got = upgrade_blocking(sock, port, path)
        while len(got) < len(CLOSE_FROM_UPSTREAM):
            got += sock.recv(len(CLOSE_FROM_UPSTREAM) - len(got))
        sock.sendall(BAD_FROM_CLIENT)
        return _flood(sock), got


class _RawUpstream:
    """A raw upstream served from a thread on ``listener`` (the module gateway's API for the case names its
    port): one connection, handled by :meth:`_serve`."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.sent: int | None = None
        self.connection: socket.socket | None = None  # the one accepted, for :meth:`hang_up`
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        raise NotImplementedError

    def hang_up(self) -> None:
        """End the connection from this side: the gateway, which waits ``close_timeout`` for an answer to its
        close frame that a raw upstream never sends, then stops at once (15 s of shutdown bound a test)."""
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(30)


class _FloodingUpstream(_RawUpstream):
    """Answers 101 with a bad frame, then floods zeros; ``sent`` once it is done."""

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            _small_send_buffer(connection)
            accept_upstream_blocking(connection, then=BAD_FROM_UPSTREAM)
            self.sent = _flood(connection)


class _TLSFloodingUpstream(_RawUpstream):
    """A wss:// upstream: answers 101 with a bad frame over TLS, then floods zeros; ``sent`` once it is done."""

    def __init__(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(listener)

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        _small_send_buffer(connection)
        with self.context.wrap_socket(connection, server_side=True) as tls:
            accept_upstream_blocking(tls, then=BAD_FROM_UPSTREAM)
            self.sent = _flood(tls)


class _ClosingUpstream(_RawUpstream):
    """Answers 101 with its close frame, then reads everything it gets until the gateway closes it."""

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            connection, _ = self.listener.accept()
            self.connection = connection
            with connection:
                accept_upstream_blocking(connection, then=CLOSE_FROM_UPSTREAM)
                connection.settimeout(40)
                while connection.recv(65536):
                    pass


class _SinkUpstream(_RawUpstream):
    """Answers 101 and reads everything it gets until the gateway closes it."""

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            connection, _ = self.listener.accept()
            self.connection = connection
            with connection:
                accept_upstream_blocking(connection)
                connection.settimeout(40)
                while connection.recv(65536):
                    pass


CASES = [
    *(("client", connector) for connector in ("splice", "frame relay", "relay")),
    *(("close", connector) for connector in ("splice", "frame relay", "relay")),
    *((f"upstream {scheme}", connector) for connector in ("splice", "frame relay") for scheme in ("ws", "wss")),
]
"""(what the case's upstream does, its connector): each case an API of the module gateway's own."""


@dataclass
class Gateway:
    """One ``run`` for the module: an API per case at ``/ws/<n>``, its upstream's port listening (each test
    serves its own listener); the CA of the wss:// upstreams; the gateway's log."""

    process: GatewayProcess
    listeners: dict[tuple[str, str], socket.socket]
    ca: tls.TestCA
    log: Path

    def path(self, case: tuple[str, str]) -> str:
        return f"/ws/{CASES.index(case)}"

    def log_since(self, offset: int) -> str:
        return self.log.read_bytes()[offset:].decode(errors="replace")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The cases' gateway: one process (a start was most of a case's CPU), each case's API and upstream its own,
    so no case reads what another sends; close_timeout 30 s everywhere (only the byte bound ends a flood)."""
    directory = tmp_path_factory.mktemp("flood")
    ca = make_ca(directory)
    listeners = {case: socket.create_server(("127.0.0.1", 0)) for case in CASES}
    apis = []
    for index, (upstream, connector) in enumerate(CASES):
        port = listeners[upstream, connector].getsockname()[1]
        tls = upstream == "upstream wss"
        url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/"
        entry = {"url": url, "verify_tls": False} if tls else url  # (a certificate of the test's own CA)
        fields: dict[str, Any] = {**API, **CONNECTORS[connector], "upstreams": [entry]}
        apis.append(api_entry(name=f"case{index}", path=f"/ws/{index}", **fields))
    log = directory / "gateway.log"
    process = GatewayProcess([str(write_config(directory, {"apis": apis}))], cwd=directory, workers=1, log=log)
    try:
        asyncio.run(process.__aenter__())  # no loop runs yet: a module fixture's start, once
        yield Gateway(process, listeners, ca, log)
    finally:
        process.stop()
        for listener in listeners.values():
            listener.close()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("connector", ["splice", "frame relay", "relay"])
async def test_a_client_flooding_after_its_bad_frame_is_reset_after_a_bounded_read(
    gateway: Gateway, connector: str
) -> None:
    """A client that sends a bad frame, then floods, is reset after a few MiB, its 1002 first."""
    case = ("client", connector)
    upstream, offset = _SinkUpstream(gateway.listeners[case]), gateway.log.stat().st_size
    try:
        sent, first = await asyncio.to_thread(_client_floods, gateway.process.port, gateway.path(case))
        upstream.hang_up()
    finally:
        upstream.close()
    assert sent < BOUND, f"{sent >> 20} MiB were read from a client refused for a bad frame"
    assert first[:1] == b"\x88" and first[2:4] == b"\x03\xea"  # its close frame, 1002, was out before the reset
    assert "Traceback" not in gateway.log_since(offset)


@pytest.mark.parametrize("connector", ["splice", "frame relay", "relay"])
async def test_a_client_answering_the_close_with_a_bad_frame_then_flooding_is_reset_after_a_bounded_read(
    gateway: Gateway, connector: str
) -> None:
    """The gateway's close sent first (its upstream closed), then the client's bad frame and flood: reset
    after a few MiB too. The relay's client leg bounded a bad frame only when it came before any close: one
    answering the close read on until close_timeout (256 MiB of 256 in well under 1 s)."""
    case = ("close", connector)
    upstream, offset = _ClosingUpstream(gateway.listeners[case]), gateway.log.stat().st_size
    try:
        sent, first = await asyncio.to_thread(
            _client_answers_the_close_with_a_bad_frame_and_floods, gateway.process.port, gateway.path(case)
        )
        upstream.hang_up()
    finally:
        upstream.close()
    assert first == CLOSE_FROM_UPSTREAM
    assert sent < BOUND, f"{sent >> 20} MiB were read from a client refused for a bad frame after the close"
    assert "Traceback" not in gateway.log_since(offset)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("connector", ["splice", "frame relay"])
async def test_an_upstream_flooding_after_its_bad_frame_is_reset_after_a_bounded_read(
    gateway: Gateway, connector: str, tls: bool
) -> None:
    """An upstream that sends a bad frame, then floods, is reset after a few MiB; the client gets 1011.

    Over TLS too (a wss:// upstream): its transport cannot linger, and its close() was TLS's shutdown, which
    read and dropped what the upstream still sent until close_timeout (5.2 GB in 10 s over loopback)."""
    case = (f"upstream {'wss' if tls else 'ws'}", connector)
    listener, offset = gateway.listeners[case], gateway.log.stat().st_size
    upstream = _TLSFloodingUpstream(listener, gateway.ca.server_context()) if tls else _FloodingUpstream(listener)
    try:
        async with connect(gateway.process.url(gateway.path(case)), compression=None) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
        await asyncio.to_thread(upstream.thread.join, 25)
    finally:
        upstream.close()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert upstream.sent is not None, "the upstream was still flooding"
    assert upstream.sent < BOUND, f"{upstream.sent >> 20} MiB were read from an upstream refused for a bad frame"
    assert "Traceback" not in gateway.log_since(offset)
