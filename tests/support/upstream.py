"""A scripted ``websockets`` upstream whose behaviour is chosen by the request path.

| path | behaviour |
|---|---|
| ``/echo`` (and any unknown path) | echo every message unchanged (text stays text, bytes stay bytes) |
| ``/close/{code}`` | on the first message, close with ``code``; reason = the text received, else ``"bye"`` |
| ``/headers`` | send one text message, JSON ``{"path": path+query, "headers": {name: [values]}}``; echo |
| ``/subprotocol`` | pick the first of ``SUBPROTOCOLS`` the client offers, send it (or ``""``) as text; echo |
| ``/reject/{status}`` | refuse with that (standard) status, JSON body, ``WWW-Authenticate: Bearer`` on 401 |
| ``/slow?delay=S`` | hold the handshake response for S seconds (default 5), then echo |
| ``/redirect`` | answer ``302`` with ``Location: /echo`` |
| ``/push/{n}`` | on the first message, send ``push 0`` .. ``push n-1`` at once; echo what follows |
| ``/stall[/BYTES]`` | read nothing (TCP pushes back; BYTES: that small a receive buffer); ``kill_connections()`` RSTs |
| ``/flood/{size}`` | send ``size`` random bytes as binary messages until the connection closes, reading as usual |
| ``/zeros/{size}`` | on the first message, send ``size`` zero bytes as one binary message (~size/1000 deflated); echo |
| ``/cookie`` (and ``/cookie/...``) | accept with ``Set-Cookie: wide=1; Path=/`` (a cookie for the whole origin); echo |
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ssl import SSLContext
from types import TracebackType
from typing import Literal, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

__all__ = ["SUBPROTOCOLS", "HandshakeRecord", "SilentUpstream", "UpstreamServer"]

SUBPROTOCOLS: tuple[Subprotocol, ...] = (Subprotocol("chat.v2"), Subprotocol("chat.v1"))
"""What ``/subprotocol`` supports, in order of preference."""

T = TypeVar("T")
Behaviour = Callable[[ServerConnection, list[str]], Awaitable[None]]


@dataclass(frozen=True)
class HandshakeRecord:
    """One opening handshake as the upstream saw and answered it."""

    path: str
    """Request target: path and query string."""
    headers: dict[str, list[str]]
    """Request headers, lower-cased names to values in arrival order."""
    status: int
    """Status the upstream answered (101 when accepted)."""
    subprotocol: str | None
    """Selected subprotocol, if any."""
    extensions: str | None
    """``Sec-WebSocket-Extensions`` response header, e.g. ``"permessage-deflate"`` when negotiated."""
    client_certificate: str | None = None
    """Over TLS: the common name of the certificate the client presented (None: none)."""

    def header(self, name: str) -> str | None:
        """First value of request header ``name`` (case-insensitive), or ``None``."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class _Records:
    cond: threading.Condition = field(default_factory=threading.Condition)
    handshakes: list[HandshakeRecord] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)


class UpstreamServer:
    """A real ``websockets`` server on 127.0.0.1 in its own thread; see the module docstring for paths.

    Usage::

        with UpstreamServer() as upstream:
            url = upstream.url("/close/4001")

    Args:
        compression: ``"deflate"`` to negotiate permessage-deflate when offered, ``None`` to refuse it.
        max_size: Largest incoming message in bytes, ``None`` for no limit. Default 16 MiB.
        ssl: serve ``wss://`` with this server context (``url(..., scheme="wss")``).
        close_timeout: Seconds to wait for the peer's close frame (after the upstream closes, and for
            each live connection on ``stop()``) before dropping TCP. Default 2.
    """

    def __init__(
        self,
        *,
        compression: Literal["deflate"] | None = "deflate",
        max_size: int | None = 2**24,
        close_timeout: float = 2.0,
        ssl: SSLContext | None = None,
    ) -> None:
        self.compression = compression
        self.ssl = ssl
        self.max_size = max_size
        self.close_timeout = close_timeout
        self._records = _Records()
        self._live: set[ServerConnection] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._port = 0
        self._error: BaseException | None = None

    # -- observations -------------------------------------------------------------------------------

    @property
    def handshakes(self) -> list[HandshakeRecord]:
        """Every handshake so far, accepted or not (a copy). Recorded before the response is sent."""
        with self._records.cond:
            return list(self._records.handshakes)

    @property
    def closes(self) -> list[tuple[int, str]]:
        """``(code, reason)`` received from each finished connection; ``(1006, "")`` if none came."""
        with self._records.cond:
            return list(self._records.closes)

    def writes_blocked(self) -> bool:
        """True when a live connection waits for its peer to read (its write buffer is full)."""
        return self._call(lambda: any(connection.paused for connection in self._live))

    def wait_for_closes(self, n: int, timeout: float = 5.0) -> list[tuple[int, str]]:
        """Block until at least ``n`` closes are recorded and return them.

        Blocks the calling thread: from async code prefer ``await wait_for_closes_async(...)``.

        Raises:
            TimeoutError: If fewer than ``n`` were recorded within ``timeout`` seconds.
        """
        with self._records.cond:
            if not self._records.cond.wait_for(lambda: len(self._records.closes) >= n, timeout):
                raise TimeoutError(f"expected {n} closes, got {self._records.closes!r}")
            return list(self._records.closes)

    async def wait_for_closes_async(self, n: int) -> list[tuple[int, str]]:
        """Like ``wait_for_closes`` with its default 5 s bound, without blocking the event loop.

        Wrap the call in ``asyncio.timeout`` for a shorter bound.
        """
        deadline = time.monotonic() + 5.0
        while len(closes := self.closes) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} closes, got {closes!r}")
            await asyncio.sleep(0.01)
        return closes

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (after ``start()``)."""
        return self._port

    def url(self, path: str = "/echo", scheme: str = "ws") -> str:
        """Return ``scheme://127.0.0.1:port`` + ``path``."""
        return f"{scheme}://127.0.0.1:{self._port}{path}"

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; return once the socket listens."""
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError("upstream server did not start") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        """Close the server (live connections get 1001) and join its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout + self.close_timeout)
        if thread.is_alive():
            raise RuntimeError("upstream server did not stop")

    def kill_connections(self) -> int:
        """Abort every live TCP connection without a close frame, as if the upstream died.

        Includes connections still in their handshake (``/slow``). Returns how many were aborted.
        """
        return self._call(self._abort_all)

    def __enter__(self) -> UpstreamServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn`` on the server's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("upstream server is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def _abort_all(self) -> int:
        live = list(self._live)
        for connection in live:
            connection.transport.abort()
        return len(live)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with serve(
            self._handle,
            "127.0.0.1",
            0,
            compression=self.compression,
            max_size=self.max_size,
            close_timeout=self.close_timeout,
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            process_response=self._process_response,
            ssl=self.ssl,
        ) as server:
            self._port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopping.wait()

    # -- websockets hooks (on the server's loop) -----------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self._live.add(connection)
        parts = _route(request.path)
        if parts[0] == "reject" and len(parts) == 2:
            response = connection.respond(int(parts[1]), '{"error":"rejected"}')
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            if response.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if parts == ["redirect"]:
            response = connection.respond(302, "")
            response.headers["Location"] = "/echo"
            return response
        if parts == ["slow"]:
            query = parse_qs(urlsplit(request.path).query)
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):  # stop() cuts the delay short
                await asyncio.wait_for(self._stopping.wait(), float(query.get("delay", ["5"])[0]))
        return None

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.raw_items():
            headers.setdefault(name.lower(), []).append(value)
        record = HandshakeRecord(
            path=request.path,
            headers=headers,
            status=response.status_code,
            subprotocol=response.headers.get("Sec-WebSocket-Protocol"),
            extensions=response.headers.get("Sec-WebSocket-Extensions"),
            client_certificate=_client_common_name(connection),
        )
        with self._records.cond:
            self._records.handshakes.append(record)
        if response.status_code != 101:
            self._live.discard(connection)
        elif _route(request.path)[0] == "cookie":
            response.headers["Set-Cookie"] = "wide=1; Path=/"

    async def _handle(self, connection: ServerConnection) -> None:
        parts = _route(connection.request.path if connection.request else "/")
        behaviour = _BEHAVIOURS.get(parts[0], _echo)
        try:
            await behaviour(connection, parts[1:])
        except ConnectionClosed:
            pass
        finally:
            await connection.close()  # no-op when already closed; else waits for the closing handshake
            self._live.discard(connection)
            rcvd = connection.protocol.close_rcvd
            with self._records.cond:
                self._records.closes.append((rcvd.code, rcvd.reason) if rcvd else (1006, ""))
                self._records.cond.notify_all()


def _client_common_name(connection: ServerConnection) -> str | None:
    tls = connection.transport.get_extra_info("ssl_object")
    certificate = tls.getpeercert() if tls is not None else None
    names = [value for rdn in (certificate or {}).get("subject", ()) for key, value in rdn if key == "commonName"]
    return names[0] if names else None


def _route(target: str) -> list[str]:
    """``"/close/4001?x=1"`` -> ``["close", "4001"]``."""
    return [part for part in urlsplit(target).path.split("/") if part] or [""]


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    if connection.request is None or _route(connection.request.path) != ["subprotocol"]:
        return None
    return next((sub for sub in SUBPROTOCOLS if sub in offered), None)


async def _echo(ws: ServerConnection, args: list[str]) -> None:
    async for message in ws:
        await ws.send(message)


async def _close(ws: ServerConnection, args: list[str]) -> None:
    message = await ws.recv()
    reason = message if isinstance(message, str) and message else "bye"
    await ws.close(int(args[0]) if args else 1000, reason)


async def _headers(ws: ServerConnection, args: list[str]) -> None:
    assert ws.request is not None
    headers: dict[str, list[str]] = {}
    for name, value in ws.request.headers.raw_items():
        headers.setdefault(name.lower(), []).append(value)
    await ws.send(json.dumps({"path": ws.request.path, "headers": headers}))
    await _echo(ws, args)


async def _subprotocol(ws: ServerConnection, args: list[str]) -> None:
    await ws.send(ws.subprotocol or "")
    await _echo(ws, args)


async def _push(ws: ServerConnection, args: list[str]) -> None:
    await ws.recv()
    for i in range(int(args[0]) if args else 1):
        await ws.send(f"push {i}")
    await _echo(ws, args)


async def _stall(ws: ServerConnection, args: list[str]) -> None:
    if args:  # /stall/BYTES: a small receive buffer, so the sender is pushed back within a few of its writes
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(args[0]))
    ws.transport.pause_reading()
    await ws.wait_closed()


async def _flood(ws: ServerConnection, args: list[str]) -> None:
    chunk = os.urandom(int(args[0]))  # incompressible: permessage-deflate does not shrink it
    while True:
        await ws.send(chunk)
        await asyncio.sleep(0)  # send() returns without yielding while the buffer has room


async def _zeros(ws: ServerConnection, args: list[str]) -> None:
    await ws.recv()
    await ws.send(bytes(int(args[0])))
    await _echo(ws, args)


async def _vanish(ws: ServerConnection, args: list[str]) -> None:
    """Drops its TCP connection, no close frame, at the first message (a crashed upstream)."""
    await ws.recv()
    ws.transport.abort()


_BEHAVIOURS: dict[str, Behaviour] = {
    "echo": _echo,
    "close": _close,
    "headers": _headers,
    "subprotocol": _subprotocol,
    "push": _push,
    "stall": _stall,
    "flood": _flood,
    "zeros": _zeros,
    "vanish": _vanish,
}


class SilentUpstream:
    """A TCP server that completes the WebSocket handshake, then never answers anything (a dead peer)."""

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.writers: list[asyncio.StreamWriter] = []
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):  # pings included: read and never answered
                pass
