"""Raw HTTP/1.1 over TCP, for the tests of what the server does with requests no client library sends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = [
    "EOF_TIMEOUT",
    "HUGE_HEADER",
    "MANY_HEADERS",
    "exchange",
    "handshake",
    "header_of",
    "header_values",
    "headered_upstream",
    "send",
    "status_of",
    "ws_frame",
]

EOF_TIMEOUT = 10.0
"""Generous: "promptly" means long before the client would give up on its own."""


def handshake(path: str = "/ws/echo", extra: bytes = b"", version: bytes | None = b"13") -> bytes:
    head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    head += b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    if version is not None:
        head += b"Sec-WebSocket-Version: " + version + b"\r\n"
    return head + extra + b"\r\n"


async def send(writer: asyncio.StreamWriter, data: bytes, *, dribble: float | None = None) -> None:
    """Write ``data`` at once, or a byte at a time ``dribble`` seconds apart; stop when the server closes."""
    chunks = [data[i : i + 1] for i in range(len(data))] if dribble is not None else [data]
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            if dribble is not None:
                await asyncio.sleep(dribble)
    except OSError:
        pass  # the server closed on us: what the slow-client tests expect


async def exchange(port: int, data: bytes, *, dribble: float | None = None) -> bytes:
    """Send ``data`` (at once, or dribbled as :func:`send` does) and return every byte the server sends up to EOF.

    A server that answers and closes while bytes are still coming makes the client's kernel see a
    reset: the answer read before it is kept (a ``StreamReader`` would drop its buffer and raise).

    Raises:
        TimeoutError: the server kept the connection open for ``EOF_TIMEOUT`` seconds.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    received = bytearray()

    async def feed() -> None:
        chunks = [data[i : i + 1] for i in range(len(data))] if dribble is not None else [data]
        with contextlib.suppress(OSError):  # the server closed on us: what the slow-client tests expect
            for chunk in chunks:
                await loop.sock_sendall(sock, chunk)
                if dribble is not None:
                    await asyncio.sleep(dribble)

    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        sender = asyncio.create_task(feed())
        try:
            async with asyncio.timeout(EOF_TIMEOUT):
                while chunk := await loop.sock_recv(sock, 65536):
                    received += chunk
        except ConnectionResetError:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    finally:
        sock.close()
    return bytes(received)


def flood_bound(read: int) -> int:
    """The most a client flooding a closing connection may get the kernel to take, when the gateway reads
    ``read`` bytes of it at most: those, what the gateway's receive buffer holds unread when it closes
    (Linux grows it up to ``tcp_rmem``'s maximum while the gateway reads fast: 32 MiB on this machine, where
    a 32 MiB bound failed once under load), and 4 MiB of room. The floods these bounds stop were gigabytes."""
    most_held = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    return read + most_held + (4 << 20)


def refused_then_flooding(port: int, request: bytes, *, up_to: int) -> tuple[bytes, int]:
    """Send ``request``, read the answer's head, then send zeros (up to ``up_to`` bytes) until the server ends
    the connection: the answer, and how many bytes of zeros the server took (blocking: run it in a thread)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    try:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received and (block := sock.recv(65536)):
            received += block
        zeros, sent = bytes(65536), 0
        try:
            while sent < up_to:
                sent += sock.send(zeros)
        except OSError:  # the server closed: EPIPE or a reset
            pass
        return received, sent
    finally:
        sock.close()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


async def upgrade_status(port: int, target: str) -> int:
    """The status of a raw upgrade request for ``target`` (sent as is, not re-encoded) to 127.0.0.1:``port``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake(target))
        return status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
    finally:
        # close() only schedules the FIN: a caller that blocks its loop next (a process's stop()) left the
        # gateway waiting for it (its close wait, a refusal's 2 s linger).
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def header_of(response: bytes, name: str) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def header_values(response: bytes, name: str) -> list[str]:
    """Every value of header ``name`` in ``response``'s head, in order (``Set-Cookie`` comes once a cookie)."""
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    pairs = (line.partition(":") for line in head.split("\r\n")[1:])
    return [value.strip() for key, _, value in pairs if key.strip().lower() == name.lower()]


MANY_HEADERS = b"".join(b"x-h%d: v\r\n" % i for i in range(1000))
HUGE_HEADER = b"x-big: " + b"a" * 100_000 + b"\r\n"


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """One frame as a client (masked) or an upstream (not) sends it."""
    length = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    b1 = 0x80 if mask else 0
    if length < 126:
        head = struct.pack("!BB", b0, b1 | length)
    elif length < 65536:
        head = struct.pack("!BBH", b0, b1 | 126, length)
    else:
        head = struct.pack("!BBQ", b0, b1 | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def accept_upstream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, extensions: bytes | None = None, then: bytes = b""
) -> None:
    """A raw upstream's side of the handshake: read the request, answer 101 with its right Accept
    (and ``Sec-WebSocket-Extensions: <extensions>`` when given), and ``then`` in the same write."""
    writer.write(_switching(await reader.readuntil(b"\r\n\r\n"), extensions) + then)


def accept_upstream_blocking(connection: socket.socket, *, then: bytes = b"") -> None:
    """:func:`accept_upstream` on a blocking socket (a raw upstream served from a thread)."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += connection.recv(4096)
    connection.sendall(_switching(head, None) + then)


def _switching(head: bytes, extensions: bytes | None) -> bytes:
    """The 101 answering the request ``head``: its right Accept, and ``extensions`` when given."""
    key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    answer = b"" if extensions is None else b"Sec-WebSocket-Extensions: " + extensions + b"\r\n"
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + answer + b"\r\n")  # fmt: skip


class _Written:
    """Collects what ``accept_upstream`` writes (a writer of which only ``write`` is called)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class HeaderedUpstream:
    """A raw upstream whose 101 (``accept_upstream``'s) carries the header ``lines`` too; a request for
    ``/refuse`` is answered 403 with them (and a 2-byte body). ``ended``: a connection ended (the gateway
    sent its close or went)."""

    def __init__(self, lines: bytes) -> None:
        self.lines = lines
        self.ended = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /refuse "):
                writer.write(b"HTTP/1.1 403 Forbidden\r\n" + self.lines + b"Content-Length: 2\r\n\r\nno")
            else:
                written = _Written()
                reader.feed_data(head)
                await accept_upstream(reader, written)  # type: ignore[arg-type]  # only write() is called
                writer.write(written.data.replace(b"\r\n\r\n", b"\r\n" + self.lines + b"\r\n", 1))
            await writer.drain()
            with contextlib.suppress(TimeoutError, ConnectionError):  # the relay's close frame, or the end
                await asyncio.wait_for(reader.read(1), 5)
        finally:
            writer.close()
            self.ended.set()


@contextlib.asynccontextmanager
async def headered_upstream(lines: bytes) -> AsyncIterator[tuple[HeaderedUpstream, int]]:
    """A :class:`HeaderedUpstream` answering with ``lines``, listening on 127.0.0.1 in the block; and its port."""
    side = HeaderedUpstream(lines)
    listener = await asyncio.start_server(side, "127.0.0.1", 0)
    async with listener:
        yield side, listener.sockets[0].getsockname()[1]


async def answer_head(port: int, path: str) -> bytes:
    """The head of the gateway's answer to a WebSocket handshake for ``path`` (then the connection is closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake(path))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return head
