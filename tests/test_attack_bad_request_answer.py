"""A request the HTTP parser refuses (400) while its client is still sending gets its answer whole.

uvicorn's ``send_400_response`` writes the 400 and closes the socket at once. With the client's bytes
still unread, Linux answers that close with a reset, and the client (still sending, or reading after it
sent) read ECONNRESET instead of the 400: the answer was lost, as the gateway's own 408/414/431 were before
they half-closed (``HeadDeadline._refuse``). Now the parser's 400 closes the same way: the answer, a FIN,
what still arrives dropped, the close 2 s later. And under h11, a bad chunk of a body the application was
already answering made its response (after the 400) raise: a traceback logged per bad request; now that
application is told the request is over. A real uvicorn with each of the gateway's HTTP protocols; raw
clients that send a bad head and 4 MiB behind it in one go.

Further down: a 400 never goes inside another response being written, and an application waiting for
the refused body is woken as the 400 goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.passthrough.lingering_close import LINGER_BYTES
from asgi_ws_gateway.server import GatewayH11Protocol, GatewayHTTPProtocol, GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import not_found
from support.configs import build_config
from support.servers import UvicornServer

BAD_HEADS = {
    "control byte in the target": b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    "two Content-Lengths": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "space before the colon": b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    "a bad chunk": b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}
BEHIND = 4 << 20
"""Bytes the client sends right behind the bad head: more than the socket buffers hold."""


def _refused_while_sending(port: int, head: bytes) -> bytes:
    """Send ``head`` and :data:`BEHIND` bytes behind it (from a thread) while reading; what was read, or
    ``b"RESET"`` appended when the connection was reset."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)

    def send() -> None:
        with contextlib.suppress(OSError):  # the gateway closed: EPIPE or a reset, after its answer
            sock.sendall(head + bytes(BEHIND))

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while block := sock.recv(65536):
            received += block
    except ConnectionResetError:
        received += b"RESET"
    finally:
        sender.join(15)
        sock.close()
    return received


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
@pytest.mark.parametrize("name", BAD_HEADS)
async def test_the_parsers_400_reaches_a_client_still_sending(
    http: object, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = WebSocketGateway(not_found, config=build_config())
    ws: Any = GatewayWebSocketProtocol
    with caplog.at_level(logging.INFO), UvicornServer(gateway, ws=ws, http=http, log_level="info") as server:
        received = await asyncio.to_thread(_refused_while_sending, server.port, BAD_HEADS[name])
    assert received.startswith(b"HTTP/1.1 400 "), received[:200]
    assert b"Invalid HTTP request received." in received, received[:400]
    assert not received.endswith(b"RESET"), received[-200:]
    # The application answering the request (a bad body comes after the head) is told it is over: its
    # response after the 400 was h11's LocalProtocolError, logged with its traceback.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    # One INFO line naming the client (uvicorn's h11 protocol logged a WARNING naming nobody per bad request).
    lines = [r for r in caplog.records if "nvalid HTTP request" in r.getMessage()]
    assert [(r.levelno, r.getMessage().startswith("127.0.0.1:")) for r in lines] == [(logging.INFO, True)], [
        (r.levelname, r.getMessage()) for r in lines
    ]


# A 400 while another response is being written. uvicorn's httptools protocol wrote its 400 at once,
# inside that response's chunked body; its h11 protocol raised out of data_received (a "Fatal error on
# transport" traceback) and the response was cut short. A 400 for bytes behind a request read whole now
# waits for that request's response; bytes refused in the body of a request whose response has begun end
# the connection, that response cut short and no 400 after it.

BAD_REQUEST = b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED_POST = b"POST /stream?wait HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
CLOSING_GET = b"GET /stream?wait HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
STREAMED = b"5\r\npart1\r\n5\r\npart2\r\n0\r\n\r\n"
"""The chunked body of the application's 200, whole."""
BEHIND_A_RESPONSE = {
    # name: (first write, what is sent once the first bytes of the response are read, the 200's body, after it)
    "a request in the same read": (b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n" + BAD_REQUEST, b"", STREAMED, b"400"),
    "a request behind the body": (CHUNKED_POST, b"3\r\nabc\r\n0\r\n\r\n" + BAD_REQUEST, STREAMED, b"400"),
    "a request behind one asking to close": (CLOSING_GET, BAD_REQUEST, STREAMED, b""),
    "a bad chunk of the body": (CHUNKED_POST, b"zz\r\n", b"5\r\npart1\r\n", b""),
    "a bad chunk after the response": (CHUNKED_POST.replace(b"stream?wait", b"early"), b"zz\r\n", b"ok", b""),
}


def _instrumented(base: Any, read_behind: asyncio.Event, lost: list[str]) -> Any:
    """``base`` that sets ``read_behind`` once it has handled a read that came while a response was being
    written, and records its ``connection_lost`` in ``lost``."""

    class Instrumented(base):  # type: ignore[misc]
        def data_received(self, data: bytes) -> None:
            answering = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
            try:
                super().data_received(data)
            finally:
                if answering:
                    read_behind.set()

        def connection_lost(self, exc: Exception | None) -> None:
            lost.append("connection_lost")
            super().connection_lost(exc)

    return Instrumented


def _streaming_app(read_behind: asyncio.Event) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/early":  # answered whole before the request's body is read
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part1", "more_body": True})
        if scope["query_string"] == b"wait":  # the rest once the client's next bytes are handled
            await read_behind.wait()
        await send({"type": "http.response.body", "body": b"part2", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def _exchange_behind(port: int, first: bytes, then: bytes) -> bytes:
    """Send ``first``; once the response's first bytes are read, ``then``; what was read up to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(first)
        received = b""
        while not received.endswith((b"part1\r\n", b"ok")) and (block := sock.recv(65536)):
            received += block
        if then:
            sock.sendall(then)
        with contextlib.suppress(ConnectionResetError):
            while block := sock.recv(65536):
                received += block
    return received


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
@pytest.mark.parametrize("name", BEHIND_A_RESPONSE)
async def test_a_400_is_never_written_inside_another_response(
    http: object, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, then, body, after = BEHIND_A_RESPONSE[name]
    read_behind = asyncio.Event()  # used by the server's loop only
    protocol = _instrumented(http, read_behind, [])
    app = _streaming_app(read_behind)
    with caplog.at_level(logging.INFO), UvicornServer(app, http=protocol, lifespan="off", log_level="info") as server:
        received = await asyncio.to_thread(_exchange_behind, server.port, first, then)
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    rest = received.partition(b"\r\n\r\n")[2]
    assert rest.startswith(body), received
    rest = rest[len(body) :]
    if after == b"400":
        assert rest.startswith(b"HTTP/1.1 400 ") and rest.count(b"HTTP/1.1 ") == 1, received
    else:  # one answer to one request: after a response whole, the rest of its body gets no 400 either
        assert rest == b"", received
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    # The line naming the client says what it was told: it said 400 where none was written (5 of these 10).
    lines = [r.getMessage() for r in caplog.records if "invalid HTTP request" in r.getMessage()]
    assert [line.endswith(": 400") for line in lines] == ([True] if after == b"400" else [False] * len(lines)), lines


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
async def test_an_application_waiting_for_the_body_is_told_at_the_400(http: object) -> None:
    """It wakes in ``receive()`` with ``http.disconnect`` as the 400 goes out, not at the close that follows."""
    events: list[str] = []
    waiting = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        waiting.set()  # and receive() is waiting before the loop reads anything more
        events.append((await receive())["type"])

    protocol = _instrumented(http, asyncio.Event(), events)
    with UvicornServer(app, http=protocol, lifespan="off") as server:

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(CHUNKED_POST)
                waiting.wait(10)
                sock.sendall(b"zz\r\n")
                received = b""
                while block := sock.recv(65536):  # the 400, then the gateway's FIN
                    received += block
            return received  # and the client's close: the gateway's connection_lost

        received = await asyncio.to_thread(exchange)
    # The server stopped: the client's close was its connection_lost, and the application has returned.
    assert received.startswith(b"HTTP/1.1 400 "), received
    assert events == ["http.disconnect", "connection_lost"]


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
async def test_an_application_reading_a_refused_body_after_the_400_is_sent_no_100_continue(
    http: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A request that expects 100 Continue and whose body the parser refused: the application's first
    ``receive()``, after the 400, is ``http.disconnect``, and nothing is written after the 400."""
    events: list[str] = []
    answered, received_once = threading.Event(), threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.to_thread(answered.wait, 10)  # the 400 is out: the connection lingers
        events.append((await receive())["type"])
        received_once.set()

    with caplog.at_level(logging.INFO), UvicornServer(app, http=http, lifespan="off") as server:

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(CHUNKED_POST.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n") + b"zz\r\n")
                received = b""
                while block := sock.recv(65536):  # the 400, then the gateway's FIN
                    received += block
                    answered.set()
                received_once.wait(10)  # the client's end still open: the gateway's linger goes on
            return received

        received = await asyncio.to_thread(exchange)
    assert received.startswith(b"HTTP/1.1 400 "), received
    assert b"100 Continue" not in received, received
    assert events == ["http.disconnect"]
    # uvicorn wrote its 100 Continue to the half-closed transport: a RuntimeError (uvloop) or h11's
    # LocalProtocolError, raised into the application and logged with its traceback.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    ("http", "first"),
    [
        (GatewayH11Protocol, CLOSING_GET.replace(b"?wait", b"")),
        (GatewayHTTPProtocol, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        # Nothing behind these is served: it was held unparsed (reads paused), not dropped as in a later read.
        (GatewayHTTPProtocol, CLOSING_GET.replace(b"?wait", b"")),
        (GatewayHTTPProtocol, b"GET / HTTP/1.0\r\n\r\n"),
    ],
    ids=["h11-connection-close", "httptools", "httptools-connection-close", "httptools-http10"],
)
async def test_a_client_gone_behind_its_flood_while_a_400_waits_is_told_to_the_application(
    http: object, first: bytes
) -> None:
    """A client that sends a request, 2 MiB it cannot parse behind it, and closes, while its response is
    still to come (an application waiting for ``http.disconnect``): the application is told the client
    went (the reads, paused past the 1 MiB dropped, left its close unread)."""
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"  # the request's (empty) body
        with contextlib.suppress(TimeoutError):
            events.append((await asyncio.wait_for(receive(), 30))["type"])

    with UvicornServer(app, http=http, lifespan="off") as server:

        def flood_and_leave() -> None:
            # One write: the request and the flood's start share a read (a flood in a later read is held
            # unparsed behind a keep-alive request, its close unseen: left out, see docs/security.md).
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock, contextlib.suppress(OSError):
                sock.sendall(first + b"\0" * (2 << 20))

        await asyncio.to_thread(flood_and_leave)
        for _ in range(300):
            if events:
                break
            await asyncio.sleep(0.1)
    assert events == ["http.disconnect"]


CLOSING_FIRST = {
    "connection-close": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    # uvicorn closes after any HTTP/1.0 request; llhttp keeps this one alive (held, as pipelined, before).
    "http10-keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    # That request answered, and one read with it queued behind it, never to be served.
    "http10-then-queued": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /q HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
@pytest.mark.parametrize("first", CLOSING_FIRST)
@pytest.mark.parametrize(
    "behind", [b"\0junk\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"], ids=["junk", "a-request"]
)
async def test_a_client_gone_behind_a_connection_close_request_is_told_to_the_application(
    http: object, first: str, behind: bytes
) -> None:
    """A client that sends a request after which the connection closes, then (in a later read) bytes behind
    it, and closes, while the application waits for ``http.disconnect``: the application is told the client
    went (held unparsed behind the request, those bytes paused the reads and left the client's close unread)."""
    told = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"  # the request's (empty) body
        with contextlib.suppress(TimeoutError):
            if (await asyncio.wait_for(receive(), 30))["type"] == "http.disconnect":
                told.set()

    with UvicornServer(app, http=http, lifespan="off") as server:

        def send_and_leave() -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(CLOSING_FIRST[first])
                assert not told.wait(0.3)  # the request is read (and answered) alone: still waiting
                sock.sendall(behind)

        await asyncio.to_thread(send_and_leave)
        assert await asyncio.to_thread(told.wait, 5)


FLOODED = 16 << 20
"""Bytes read behind the request that end its response at once (a flood read whole): more than any bound."""


def _counted_until_flooded(http: Any, wait: float) -> tuple[Any, Any, list[int]]:
    """``http`` counting the bytes it reads (in the list returned), and an application streaming a 200 that
    ends once :data:`FLOODED` bytes were read, or after ``wait`` seconds."""
    read = [0]
    flooded = asyncio.Event()  # used by the server's loop only

    class Counting(http):  # type: ignore[misc]
        def data_received(self, data: bytes) -> None:
            read[0] += len(data)
            if read[0] > FLOODED:
                flooded.set()
            super().data_received(data)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part1", "more_body": True})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(flooded.wait(), wait)
        await send({"type": "http.response.body", "body": b""})

    return Counting, app, read


def _flood_behind(port: int, first: bytes) -> bytes:
    """Send ``first``, then bytes behind it without end (from a thread) until the response ends; what was read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    done = threading.Event()

    def flood() -> None:
        block = bytes(1 << 16)
        with contextlib.suppress(OSError):  # the gateway closed: EPIPE or a reset
            while not done.is_set():
                sock.sendall(block)

    sock.sendall(first)
    received = sock.recv(65536)  # the response has begun
    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        with contextlib.suppress(OSError):
            while block := sock.recv(65536):
                received += block
    finally:
        done.set()
        sock.close()
        sender.join(10)
    return received


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
@pytest.mark.parametrize("behind", [BAD_REQUEST, b""], ids=["a bad request", "nothing"])
async def test_a_flood_behind_a_request_asking_to_close_is_not_read_for_as_long_as_its_response_lasts(
    http: Any, behind: bytes
) -> None:
    """While a 400 waits for the response before it, what still arrives is dropped up to the linger's bound
    (1 MiB), then not read: under h11 a flood behind any Connection: close request was read (2.5 GB in 2 s)."""
    Counting, app, read = _counted_until_flooded(http, 1.5)  # long enough for the flood to be read

    # What follows a request asking to close is refused (h11: anything; httptools: the bad request).
    with UvicornServer(app, http=Counting, lifespan="off") as server:
        received = await asyncio.to_thread(_flood_behind, server.port, CLOSING_GET.replace(b"?wait", b"") + behind)
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    assert read[0] < 2 * LINGER_BYTES, read[0]


async def test_a_flood_behind_a_400_waiting_for_a_long_response_is_read_at_the_lingers_pace() -> None:
    """While a 400 waits for a response lasting past the 2 s after which the reads go on, what still arrives
    is dropped 1 MiB per 2 s at most: ``GatewayHTTPProtocol`` cleared it uncounted, read as fast as it came
    (4.0 GB in a 5 s response over loopback)."""
    Counting, app, read = _counted_until_flooded(GatewayHTTPProtocol, 5)  # past two of the linger's rounds

    with UvicornServer(app, http=Counting, lifespan="off") as server:
        first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + BAD_REQUEST
        received = await asyncio.to_thread(_flood_behind, server.port, first)
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    assert read[0] < 5 * LINGER_BYTES, read[0]  # 1 MiB, and 1 MiB at each of two rounds, and a read each
