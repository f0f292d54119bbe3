"""Attack: a client refused over TLS (``asgi-ws-gateway run --ssl-certfile ...``) that floods on is reset
after a bounded read, as in plain text.

A refused client gets its answer and the connection's close (a 400 for a bad request head, a 403, a 404, a
close frame for a bad frame). In plain text the close lingers (2 s, 1 MiB: a FIN, then what still comes is
read and dropped); a TLS transport cannot half-close, and its close() read and decrypted what the client
still sent, unseen by the gateway, until the server's look at closing TLS connections let go of it: before,
8.8-11.7 GB over loopback in 20 s (twice ``header_timeout``), a core busy per refused client, where plain
text reads 1 MiB. A client answered and closed as it asked (``Connection: close``, HTTP/1.0) the same,
12.7-13.1 GB, where plain text resets it at once. Real ``run`` processes, a real certificate, a real
upstream, raw TLS sockets.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import tls as test_tls
from support.configs import api_entry, build_config, write_config
from support.processes import ServerProcess, ready_server
from support.tls import make_ca
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux (TCP_INFO)")

CHUNK = bytes(65536)
CAP = 256 * 1024 * 1024
"""Bytes the flooder sends at most: before, the gateway read all of it in under a second, and on."""
BOUND = 64 * 1024 * 1024
"""What a refused client may get in before its reset: the byte bounds (1 MiB, 16 MiB spliced), the kernel's
buffers, what the TLS layer reads between two looks."""
API = {"close_timeout": 30}  # longer than any test: only a byte bound ends the flood
BAD_FRAME = b"\x83\x80\x00\x00\x00\x00"  # reserved opcode 3 (masked, empty)


def _upgrade(path: str, *headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = "".join(f"{header}\r\n" for header in headers)
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{lines}\r\n").encode()  # fmt: skip


def _upgraded_then_bad_frame(path: str) -> Callable[[ssl.SSLSocket], None]:
    def start(client: ssl.SSLSocket) -> None:
        client.sendall(_upgrade(path))
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        client.sendall(BAD_FRAME)

    return start


CLOSE_1002 = b"\x88\x03\xea"
"""A close frame with 1002 (its length byte, with the reason's, left out)."""

# What the client sends before its flood, and the start of the answer it gets first.
REFUSALS: dict[str, tuple[Callable[[ssl.SSLSocket], None], bytes]] = {
    "bad request head": (lambda client: client.sendall(b"GET \x00 HTTP/9\r\n\r\n"), b"HTTP/1.1 400"),
    "no such path": (lambda client: client.sendall(_upgrade("/nowhere")), b"HTTP/1.1 404"),
    "handshake refused": (
        lambda client: client.sendall(_upgrade("/ws/guarded", "Origin: https://evil.example")),
        b"HTTP/1.1 403",
    ),
    "bad frame, spliced": (_upgraded_then_bad_frame("/ws/echo"), CLOSE_1002),
    "bad frame, relayed": (_upgraded_then_bad_frame("/ws/relayed"), CLOSE_1002),
    # Not refused: answered, and closed as the request asked (uvicorn's own close, not a refusal's).
    "asked to close": (
        lambda client: client.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"),
        b"HTTP/1.1 200",
    ),
    "HTTP/1.0": (lambda client: client.sendall(b"GET /healthz HTTP/1.0\r\n\r\n"), b"HTTP/1.1 200"),
}


@contextmanager
def _tls_gateway(tmp_path: Path, ca: test_tls.TestCA) -> Iterator[ServerProcess]:
    with UpstreamServer() as upstream:
        config = build_config(upstream, api=API, more_apis=[
            api_entry(upstream, name="relayed", path="/ws/relayed", passthrough=False, **API),
            api_entry(upstream, name="guarded", path="/ws/guarded",
                      policies=[{"check-origin": {"allowed": ["https://app.example"]}}], **API),
        ])  # fmt: skip
        path = write_config(tmp_path, config)
        tls = ["--ssl-certfile", str(ca.cert_file), "--ssl-keyfile", str(ca.key_file)]

        def command(port: int) -> list[str]:
            return ["-m", "asgi_ws_gateway", "run", str(path), "--port", str(port), *tls]

        with ready_server(command) as server:
            yield server
            assert server.stop() == 0
            output = server.output()
    assert "Traceback" not in output
    assert "ERROR" not in output


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, test_tls.TestCA]]:
    """One TLS gateway and its CA for the module: each case is a connection of its own, refused and flooded
    until reset (a process and a CA per case were a third of the file's time)."""
    directory = tmp_path_factory.mktemp("tls-refusal-flood")
    ca = make_ca(directory)
    with _tls_gateway(directory, ca) as server:
        yield server, ca


def _flood(client: ssl.SSLSocket) -> int:
    """Send zeros (TLS records) until the connection is reset or :data:`CAP`; the bytes sent."""
    sent = 0
    with contextlib.suppress(OSError):  # SSLEOFError, EPIPE, ECONNRESET: the gateway let go of it
        while sent < CAP:
            sent += client.send(CHUNK)
    return sent


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_tls_client_flooding_after_its_refusal_is_reset_after_a_bounded_read(
    gateway: tuple[ServerProcess, test_tls.TestCA], refusal: str
) -> None:
    """Its answer first, then a reset after a few MiB: TLS's close read on unseen (GBs), plain text 1 MiB."""
    server, ca = gateway
    start, answer = REFUSALS[refusal]
    with socket.socket() as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        raw.settimeout(20)  # a gateway reading nothing fails the test instead of hanging it
        raw.connect(("127.0.0.1", server.port))
        with ssl.create_default_context(cafile=str(ca.ca_file)).wrap_socket(raw, server_hostname="127.0.0.1") as client:
            start(client)
            sent = _flood(client)
            try:
                first = client.recv(12)
            except OSError:
                first = b""
    assert sent < BOUND, f"{sent >> 20} MiB were read from a TLS client after its answer ({refusal})"
    if answer == CLOSE_1002:
        first = first[:1] + first[2:4]
    assert first[: len(answer)] == answer  # its answer was out before the reset


SILENCE = 1.5
"""Seconds the client keeps silent after its answer: the looks at its connection are 0.125 s apart by then."""
SILENT_BOUND = 8 * 1024 * 1024
"""What a client silent that long, then flooding, may get in: before, 59-93 MiB over loopback between two looks."""


@pytest.mark.parametrize("refusal", ["bad request head", "asked to close"])
def test_a_tls_client_silent_after_its_answer_then_flooding_is_reset_after_a_bounded_read(
    gateway: tuple[ServerProcess, test_tls.TestCA], refusal: str
) -> None:
    """Silent past the looks' first, close ones, then a flood: reset after a bounded read all the same."""
    server, ca = gateway
    start, answer = REFUSALS[refusal]
    with socket.socket() as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        raw.settimeout(20)
        raw.connect(("127.0.0.1", server.port))
        with ssl.create_default_context(cafile=str(ca.ca_file)).wrap_socket(raw, server_hostname="127.0.0.1") as client:
            start(client)
            first = client.recv(12)
            time.sleep(SILENCE)
            sent = _flood(client)
    assert first[: len(answer)] == answer
    assert sent < SILENT_BOUND, f"{sent >> 20} MiB were read from a TLS client silent {SILENCE} s after its answer"
