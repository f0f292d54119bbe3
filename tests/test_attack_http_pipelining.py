"""Attacks with pipelined HTTP requests: a client that sends requests without reading the answers.

uvicorn's httptools protocol parsed every read whole, queued each request in it behind the one being
answered, and read again after every response, whatever was queued: one client that pipelined
``GET /healthz`` and read nothing grew a worker by 1.1 GiB in 8 s at 100% CPU (h11 reads one request
at a time: +0.4 MiB). An upgrade request behind such requests kept all the frames that followed it
as early data, read after each response and copied whole at each read. ``GatewayHTTPProtocol`` now
reads behind a request being answered one read at most, and parses a slice at a time.

Real uvicorn with the gateway's protocol, counting what the server parsed and read; real
``asgi-ws-gateway run`` for the memory its worker holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from asgi_ws_gateway.server.http import GatewayHTTPProtocol
from support.configs import build_config, write_config
from support.gateway import PASSTHROUGH, ProbedGateway, gateway_config
from support.processes import GatewayProcess, rss_kib
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.rawws import next_frame
from support.servers import UvicornServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
QUEUE_BOUND = 130
"""Requests a server may have parsed and not answered: a slice's worth (2 KiB of 16-byte requests), and one."""
ONE_READ = 512 * 1024
"""What a server may read behind a request it is answering, generously: one read (256 KiB) and a slice."""


class _Counts:
    def __init__(self) -> None:
        self.parsed = 0  # request heads parsed
        self.answered = 0  # responses completed
        self.ahead = 0  # the most requests parsed and not yet answered at once
        self.read = 0  # bytes the HTTP protocol read (until it handed the connection over)


def _counted() -> tuple[type[GatewayHTTPProtocol], _Counts]:
    """The gateway's HTTP protocol, counting into a fresh :class:`_Counts` (one connection per test)."""
    counts = _Counts()

    class Counted(GatewayHTTPProtocol):
        def data_received(self, data: bytes) -> None:
            counts.read += len(data)
            super().data_received(data)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            counts.parsed += 1
            counts.ahead = max(counts.ahead, counts.parsed - counts.answered)

        def on_response_complete(self) -> None:
            counts.answered += 1
            super().on_response_complete()

    return Counted, counts


async def _echo_path(scope: Any, receive: Any, send: Any) -> None:
    """Answers a request with its path and the body it sent."""
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def _send_until_unread(writer: asyncio.StreamWriter, chunk: bytes, limit: int) -> int:
    """Write ``chunk`` over and over, up to ``limit`` bytes or until the server stops reading; bytes sent."""
    sent = 0
    while sent < limit:
        writer.write(chunk)
        try:
            await asyncio.wait_for(writer.drain(), 2)
        except TimeoutError:
            break  # the server stopped reading: what it holds is what it will hold
        sent += len(chunk)
    return sent


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    return int(head.split(b" ", 2)[1]), await asyncio.wait_for(reader.readexactly(length), 10)


async def test_pipelined_requests_are_parsed_a_slice_ahead_of_the_answers_and_answered_in_order() -> None:
    """5,000 requests in one write (every tenth a POST with a 3 KB body): uvicorn parsed the read
    whole and queued each request (5,000 parsed ahead of their answers); a slice at a time now,
    every request answered, in order."""
    protocol, counts = _counted()
    requests, expected = [], []
    for i in range(5000):
        path = f"/r{i}".encode()
        body = b"%d" % i * 600 if i % 10 == 0 else b""
        method = b"POST" if body else b"GET"
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        requests.append(method + b" " + path + b" HTTP/1.1\r\nHost: gw\r\n" + length + b"\r\n" + body)
        expected.append((200, path + body))
    with UvicornServer(_echo_path, http=protocol) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(requests))
        answers = [await _response(reader) for _ in requests]
        writer.close()
    assert answers == expected
    assert counts.parsed == counts.answered == 5000
    assert counts.ahead <= QUEUE_BOUND, f"{counts.ahead} requests parsed ahead of their answers"


async def test_frames_behind_a_pipelined_upgrade_are_read_once_before_it_is_answered() -> None:
    """2,000 requests, an upgrade and 4 MiB of frames in one write: uvicorn read on after each of the
    2,000 responses and the gateway kept it all as early data (a copy of the whole at each read);
    now one read at most past the upgrade request, and every message reaches the upstream in order."""
    messages = [b"%04d" % i + bytes(65536 - 4) for i in range(64)]
    received: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        with contextlib.suppress(asyncio.IncompleteReadError):
            received.set_result([(await next_frame(reader))[1] for _ in messages])
        writer.close()

    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    gateway = ProbedGateway(gateway_config(f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}"))
    protocol, counts = _counted()
    pages = b"GET /page HTTP/1.1\r\nHost: gw\r\n\r\n" * 2000
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH, http=protocol) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(pages + handshake() + b"".join(ws_frame(0x2, message) for message in messages))
            statuses = {(await _response(reader))[0] for _ in range(2000)}
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101"), head
            assert await asyncio.wait_for(received, 10) == messages
            writer.close()
            await gateway.settle()
    assert statuses == {404}
    read_ahead = counts.read - len(pages) - len(handshake())
    assert read_ahead <= ONE_READ, f"{read_ahead} bytes read past the upgrade request before its answer"


class _HeldPage:
    """``GET /held``, answered when the test says (:meth:`answer`); any other request at once."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self._release: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/held":
            self._release = (asyncio.get_running_loop(), asyncio.Event())
            self.started.set()
            await self._release[1].wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def answer(self) -> None:
        assert self._release is not None, "GET /held never arrived"
        loop, release = self._release
        loop.call_soon_threadsafe(release.set)


async def test_a_head_pipelined_behind_a_request_being_answered_is_read_once_and_meets_the_limit() -> None:
    """``GET /held`` and behind it a head whose header grows to 8 MiB: max_head_bytes counted only
    while no request was being answered, so httptools took in all of it meanwhile (and the 414 that
    came after the page named the wrong limit); now one read is kept, and the head gets its 431."""
    page = _HeldPage()
    protocol, counts = _counted()
    loop = asyncio.get_running_loop()
    # A raw socket, not asyncio's streams: the refusal's linger reads 1 MiB of the client's queued header
    # and then resets it, and a stream's reader drops what it holds once its writer meets that (EPIPE).
    with UvicornServer(page, http=protocol) as server, socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        await loop.sock_sendall(sock, b"GET /held HTTP/1.1\r\nHost: gw\r\n\r\nGET / HTTP/1.1\r\nHost: gw\r\nX-Big: ")
        sent, chunk = 0, b"a" * 65536
        while sent < 8 * 1024 * 1024:
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, chunk), 2)
            except TimeoutError:
                break  # the server stopped reading: what it holds is what it will hold
            sent += len(chunk)
        assert await asyncio.to_thread(page.started.wait, 10)
        read_while_answering = counts.read
        assert read_while_answering <= ONE_READ, f"{read_while_answering} of {sent} bytes read during the answer"
        page.answer()
        received = b""
        with contextlib.suppress(OSError):  # the reset that ends the refusal's linger, after the answers
            while block := await asyncio.wait_for(loop.sock_recv(sock, 65536), 10):
                received += block
    answered, _, refusal = received.partition(b"HTTP/1.1 431 ")
    assert answered.startswith(b"HTTP/1.1 200 ") and answered.endswith(b"\r\n\r\nok"), received[:400]
    assert refusal, received[-400:]


async def test_a_client_that_pipelines_without_reading_does_not_grow_the_worker(tmp_path: Path) -> None:
    """8 MiB of pipelined ``GET /healthz`` from a client that reads nothing (4 KiB receive buffer)
    against ``asgi-ws-gateway run``: the worker grew by hundreds of MiB; now by what one connection
    may hold (one read, a slice of requests, the responses the socket takes)."""
    config = write_config(tmp_path, build_config("ws://127.0.0.1:9"))
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1) as gateway:
        assert gateway.process is not None
        pid = gateway.process.pid
        before = rss_kib(pid)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.port))
        _, writer = await asyncio.open_connection(sock=sock)
        sent = await _send_until_unread(writer, HEALTHZ * (65536 // len(HEALTHZ)), 8 * 1024 * 1024)
        grown = rss_kib(pid) - before
        writer.transport.abort()
        other_reader, other = await asyncio.open_connection("127.0.0.1", gateway.port)
        other.write(HEALTHZ)
        answer = await asyncio.wait_for(other_reader.readuntil(b"\r\n\r\n"), 10)
        other.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert grown < 50 * 1024, f"the worker grew by {grown / 1024:.0f} MiB ({sent} bytes sent)"


@pytest.mark.parametrize("leave", ["close", "reset"])
async def test_a_client_gone_while_a_request_ahead_of_a_queued_one_is_answered_is_told_to_its_application(
    leave: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two requests pipelined, the client gone while the first is answered: its application is told, and its
    response after that is dropped quietly. uvicorn told only the newest request read (the queued one): the
    first waited on for ``http.disconnect``, and its response raised into it (uvloop), a traceback logged."""
    started, events = threading.Event(), []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"  # the request's (empty) body
        started.set()
        with contextlib.suppress(TimeoutError):
            events.append((await asyncio.wait_for(receive(), 3))["type"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with UvicornServer(app, http=GatewayHTTPProtocol, lifespan="off", log_level="info") as server:

        def send_and_leave() -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(HEALTHZ + HEALTHZ)  # one read: the second is queued behind the first
                assert started.wait(5)
                if leave == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        await asyncio.to_thread(send_and_leave)
        for _ in range(50):  # told at once, or after the application's 3 s
            if len(events) and not server.server.server_state.tasks:
                break
            await asyncio.sleep(0.1)
    assert events == ["http.disconnect"]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
