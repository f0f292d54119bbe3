"""A raw WebSocket client of ``/ws/echo``: the handshake done by hand, frames read one by one."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable

__all__ = [
    "close_frame_in", "ended_after_the_close", "next_frame", "raw_client", "raw_client_of", "read_slowly",
    "split_frames", "upgrade_blocking",
]  # fmt: skip


def _upgrade(port: int, *, deflate: bool) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    return (
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    ).encode()


async def raw_client(
    port: int, *, deflate: bool = True, sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client of ``/ws/echo``, handshake done (``deflate``: permessage-deflate offered and agreed;
    ``sock``: a socket already connected to ``port``, with options of the test's)."""
    if sock is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(_upgrade(port, deflate=deflate))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert (b"permessage-deflate" in head.lower()) == deflate
    return reader, writer


async def raw_client_of(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client of ``url`` (``ws://host:port/path``), handshake done, no extension offered."""
    host, rest = url.removeprefix("ws://").split("/", 1)
    reader, writer = await asyncio.open_connection(*host.split(":"))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def next_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next frame's opcode and payload, unmasked (masked or not)."""
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(await reader.readexactly(length)))


async def close_frame_in(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The first close frame in the stream (masked or not), skipping the frames before it."""
    while True:
        opcode, payload = await next_frame(reader)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0], payload[2:]


async def ended_after_the_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Once the close handshake is done, what a client does: read to the server's EOF (nothing else comes),
    then close its own end and wait for the FIN to be sent.

    A socket left open, or closed without waiting (``close()`` only schedules it), kept the gateway's
    lingering close waiting out its 2 s bound for the FIN: in ``settle()``, or in a server's blocking stop
    that keeps this loop from sending it."""
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()


def upgrade_blocking(sock: socket.socket, port: int, path: str) -> bytes:
    """Send an upgrade request for ``path`` on a connected blocking ``sock`` and read its 101; returns the
    bytes read past the response head (the first frames, if any)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return head.split(b"\r\n\r\n", 1)[1]


def split_frames(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete unmasked frames (a server's) at the start of ``buffer`` as ``(opcode, payload)``, and
    the bytes left after them."""
    frames = []
    while len(buffer) >= 2:
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            length, start = struct.unpack("!H", buffer[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack("!Q", buffer[2:10])[0], 10
        if len(buffer) < start + length:
            break
        frames.append((buffer[0] & 0x0F, buffer[start : start + length]))
        buffer = buffer[start + length :]
    return frames, buffer


def read_slowly(
    port: int, *, taken: int, rate: float, buffer_size: int = 8192, when_read: Callable[[], str | None] = lambda: None
) -> tuple[int, str | None]:
    """A client of ``/ws/echo`` with a small receive buffer (``buffer_size``, its kernel's share stays small)
    reading ``taken`` bytes at ``rate`` bytes a second, 2 KiB at a time, and answering pings as any client
    does; returns what it read and how the connection ended, if it did (``reset``, ``ended``, ``close N``;
    None: it read them all, or what ``when_read`` says then, asked while the socket is still open).
    Blocking: run it in a thread."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)  # before connect: the window it offers
        sock.connect(("127.0.0.1", port))
        buffer, got, started = upgrade_blocking(sock, port, "/ws/echo"), 0, time.monotonic()
        while got < taken:
            try:
                data = sock.recv(2048)
            except ConnectionResetError:
                return got, "reset"
            if not data:
                return got, "ended"
            got += len(data)
            buffer += data
            frames, buffer = split_frames(buffer)
            for opcode, payload in frames:
                if opcode == 0x8:
                    return got, f"close {struct.unpack('!H', payload[:2])[0]}"
                if opcode == 0x9:  # the pong, masked with a zero key
                    sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            # Load, not synchronisation: the pace of a slow reader.
            time.sleep(max(0.0, started + got / rate - time.monotonic()))
        return got, when_read()
