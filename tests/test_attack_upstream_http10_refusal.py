"""An upstream that refuses the handshake in HTTP/1.0, on the ``websockets`` relay (``passthrough: false``).

The splice and the frame relay read the answer themselves and relay an ``HTTP/1.x`` refusal; the
relay's websockets client reads "HTTP/1.1 <status> <reason>" only, and took an HTTP/1.0 403 (or an
HTTP/1.1 one with no reason phrase) for no valid HTTP response: a 502, counted against a backend that
had answered with its own refusal. A real uvicorn serves the gateway in front of a raw upstream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway.upstream.refusal import MAX_REFUSAL_BODY, HeldRefusal
from support.clients import expect_status
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.servers import UvicornFactory

NEVER = 60.0  # a connect_timeout no test waits for: the answer must come at once
HEAD = b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: quota\r\n"
BIG = 2 * 1024 * 1024


def _body(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def _chunked(body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def _answering(answer: bytes, *, then_close: bool) -> Handler:
    """An upstream that reads the request and sends ``answer``, then closes the connection (its
    body ends there) or holds it open until the gateway closes it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(OSError):
            writer.write(answer)
            await writer.drain()
            if not then_close:
                await reader.read()
        writer.close()

    return handle


REFUSALS = {
    "to eof": (HEAD + b"\r\n" + _body(3000), True, _body(3000)),
    "to eof, large": (HEAD + b"\r\n" + _body(BIG), True, _body(MAX_REFUSAL_BODY)),
    "length": (HEAD + b"Content-Length: 3000\r\n\r\n" + _body(3000), False, _body(3000)),
    "length, large": (HEAD + b"Content-Length: %d\r\n\r\n" % BIG + _body(BIG), False, _body(MAX_REFUSAL_BODY)),
    # Chunked is no HTTP/1.0 coding, but the splice decodes it all the same (RefusalBody): so does the relay.
    "chunked": (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(_body(3000)), False, _body(3000)),
    # Not HTTP/1.0, but the same status line websockets would not read: no reason phrase (nor its space).
    "1.1, no reason phrase": (
        HEAD.replace(b"HTTP/1.0 403 Forbidden", b"HTTP/1.1 403") + b"Content-Length: 3\r\n\r\nabc",
        False,
        b"abc",
    ),
}


@pytest.mark.parametrize("framing", list(REFUSALS))
async def test_an_http10_refusal_on_the_relay_is_relayed_and_is_no_backend_failure(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, framing: str
) -> None:
    """The upstream's HTTP/1.0 403 with its body (the first 64 KiB of it), as the splice relays it:
    not a 502 after the upstream's EOF, counted against the backend."""
    answer, then_close, expected = REFUSALS[framing]
    upstream = _answering(answer, then_close=then_close)
    gateway, url = gateway_before(await hostile(upstream), "relay", uvicorn_server, connect_timeout=NEVER)
    status, headers, body = await expect_status(url)  # open_timeout: 5 s
    assert (status, headers.get("x-reason"), headers.get("content-type")) == (403, "quota", "text/plain")
    assert body == expected
    assert "transfer-encoding" not in headers
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 0
    await gateway.settle()


@pytest.mark.parametrize(
    ("sent", "handed_over"),
    [
        (b"HTTP/1.0 403 Go Away", b"HTTP/1.1 403 Go Away"),
        (b"HTTP/1.0 503", b"HTTP/1.1 503 "),
        (b"HTTP/1.1 429", b"HTTP/1.1 429 "),
    ],
)
def test_a_refusal_is_handed_over_with_a_status_line_websockets_reads(sent: bytes, handed_over: bytes) -> None:
    """websockets reads "HTTP/1.1 <status> <reason>" only: the version says 1.1, the reason phrase is
    kept, and its space is there when it is empty."""
    held = HeldRefusal()
    assert held.feed(sent + b"\r\nX-Reason: quota\r\n\r\nno") == b""
    assert held.eof() == handed_over + b"\r\nX-Reason: quota\r\nContent-Length: 2\r\n\r\nno"


BAD_ANSWERS = {
    "an HTTP/1.0 101": b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "no status line": b"<html>Forbidden</html>\r\n\r\n",
}


@pytest.mark.parametrize("answer", list(BAD_ANSWERS))
async def test_an_answer_that_is_no_refusal_stays_the_upstreams_502(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, answer: str
) -> None:
    """Only a refusal's status line is rewritten: an HTTP/1.0 101, or an answer with no HTTP status
    line, is a 502 and the backend's failure, as before."""
    upstream = _answering(BAD_ANSWERS[answer], then_close=True)
    gateway, url = gateway_before(await hostile(upstream), "relay", uvicorn_server, connect_timeout=NEVER)
    status, _headers, _body = await expect_status(url)
    assert status == 502
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 1
    await gateway.settle()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_101_in_http_1_0_is_a_502_whichever_connector(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """An ``HTTP/1.0 101`` with a right ``Sec-WebSocket-Accept`` was a switch on the splice and the
    frame relay (any ``HTTP/1.`` status line was read), a 502 on the relay, whose client reads 1.1 only."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        with contextlib.suppress(OSError):
            writer.write(b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
            await writer.drain()
            await reader.read()
        writer.close()

    gateway, url = gateway_before(await hostile(handle), connector, uvicorn_server, connect_timeout=NEVER)
    status, _headers, _body = await expect_status(url)
    assert status == 502
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 1
    await gateway.settle()
