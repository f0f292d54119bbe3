"""One rule for the head of an upstream's answer, whichever connector reads it.

The splice and the frame relay read the answer with their own parser, the relay (``passthrough:
false``) with ``websockets``': the same answer served the client on one and was a 502, counted
against the backend, on the other (a 101 with 300 header lines or a 60 KB cookie, a status line
without a reason phrase, a status code of ``0101``, a ``0403``). A raw upstream writes each answer;
a real uvicorn runs the gateway (the gateway's protocol) in front of it, and a raw client reads the
status, so that no client library's own limits decide it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway.upstream.interim import UnreadableHead
from asgi_ws_gateway.upstream.response_head import (
    MAX_HEAD,
    MAX_HEADER_LINES,
    MAX_LINE,
    MAX_REFUSAL_LINES,
    AnswerHead,
)
from support.clients import connect
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import handshake
from support.servers import UvicornFactory

NEVER = 60.0  # a connect_timeout no test waits for: a malformed head must fail at once
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ACCEPT = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"  # 3 header lines


def _headers(count: int) -> bytes:
    return b"".join(b"X-H-%04d: v\r\n" % i for i in range(count))


def _line(size: int) -> bytes:
    """A header line of ``size`` bytes, its CRLF included."""
    return b"X-Big: " + b"a" * (size - 9) + b"\r\n"


# Each answer: its status line, its header lines past the handshake's (a 101 gets a valid Accept
# first), and the status every connector answers the client with, or 502 and the log's words.
FORBIDDEN = b"HTTP/1.1 403 Forbidden"
SWITCHING = b"HTTP/1.1 101 Switching Protocols"
LINES = 124
"""The rule's header lines: ``websockets``' 128 (what a client built on it reads) less the 4 the gateway
may add (a literal: the tests say what the rule must be)."""
OVER = f"more than {LINES} response header lines"
REFUSAL_LINES = 121
"""A refusal's: 3 fewer, for the ``Cache-Control``, ``X-Content-Type-Options`` and ``Content-Security-Policy``
the gateway adds to every refusal it relays (``upstream.refusal_headers``)."""
REFUSAL_OVER = f"more than {REFUSAL_LINES} response header lines"
ANSWERS: dict[str, tuple[bytes, bytes, int, str | None]] = {
    "101, 124 header lines": (SWITCHING, _headers(LINES - 3), 101, None),
    "101, 125 header lines": (SWITCHING, _headers(LINES - 2), 502, OVER),
    "101, 128 header lines": (SWITCHING, _headers(128 - 3), 502, OVER),
    "101, 300 header lines": (SWITCHING, _headers(297), 502, OVER),
    "101, an 8192-byte line": (SWITCHING, _line(MAX_LINE), 101, None),
    "101, an 8193-byte line": (SWITCHING, _line(MAX_LINE + 1), 502, "line over 8192 bytes"),
    "101, a 60 KB cookie": (SWITCHING, b"Set-Cookie: a=" + b"b" * 60_000 + b"\r\n", 502, "line over 8192 bytes"),
    "101, 70 KB of head": (SWITCHING, _line(8000) * 9, 502, "more than 65536 bytes of response head"),
    "101, no reason phrase": (b"HTTP/1.1 101", b"", 101, None),
    "101, an empty reason phrase": (b"HTTP/1.1 101 ", b"", 101, None),
    "0101": (b"HTTP/1.1 0101 Switching Protocols", b"", 502, "status code that is not 3 digits: '0101'"),
    "000000101": (b"HTTP/1.1 000000101 Switching Protocols", b"", 502, "not 3 digits: '000000101'"),
    "1011": (b"HTTP/1.1 1011 x", b"", 502, "not 3 digits: '1011'"),
    "10": (b"HTTP/1.1 10 x", b"", 502, "not 3 digits: '10'"),
    "999": (b"HTTP/1.1 999 x", b"", 502, "status 999, outside 100-599"),
    "a control character in the reason": (b"HTTP/1.1 101 Switching\x01", b"", 502, "control character"),
    "101 in HTTP/1.0": (b"HTTP/1.0 101 Switching Protocols", b"", 502, "switched protocols in 'HTTP/1.0'"),
    "0403": (b"HTTP/1.1 0403 Forbidden", b"", 502, "not 3 digits: '0403'"),
    "403, no reason phrase": (b"HTTP/1.1 403", b"", 403, None),
    "403, 100 header lines": (FORBIDDEN, _headers(100), 403, None),
    "403, 121 header lines": (FORBIDDEN, _headers(REFUSAL_LINES - 1), 403, None),  # and its Content-Length
    "403, 122 header lines": (FORBIDDEN, _headers(REFUSAL_LINES), 502, REFUSAL_OVER),
    "403, 300 header lines": (FORBIDDEN, _headers(300), 502, REFUSAL_OVER),
    "403, a 20 KB line": (FORBIDDEN, _line(20_000), 502, "line over 8192 bytes"),
    "403, a malformed header line": (FORBIDDEN, b"Bad Name: x\r\n", 502, "malformed response header line: 'Bad Name'"),
}


def _answering(status_line: bytes, headers: bytes, done: asyncio.Event) -> Handler:
    """A raw upstream that answers the handshake with ``status_line`` and ``headers`` (a valid Accept
    before them for a 101), a refusal's body framed, then closes once the gateway sends anything or
    closes; ``done`` is set then."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
            if status_line[9:].partition(b" ")[0].lstrip(b"0") == b"101":  # (a 0101 too: a 101 to websockets)
                headers_out = _ACCEPT % base64.b64encode(hashlib.sha1(key + _GUID).digest()) + headers
                body = b""
            else:
                headers_out, body = headers + b"Content-Length: 4\r\n", b"nope"
            with contextlib.suppress(OSError):
                writer.write(status_line + b"\r\n" + headers_out + b"\r\n" + body)
                await writer.drain()
                await reader.read(1)  # the gateway's close frame, or its EOF
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        finally:
            done.set()

    return handle


async def _status(url: str) -> int:
    """The status a raw client gets for its upgrade (no client library's header limits in the way)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(url).port, limit=1 << 20)
    try:
        writer.write(handshake(urlsplit(url).path))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 "), head[:80]
    return int(head[9:12])


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_every_connector_reads_the_answers_head_by_one_rule(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    answer: str,
    connector: str,
) -> None:
    """The same status on the splice, the frame relay and the relay; a malformed head is a 502 at once,
    counted against the backend, in one line naming it and saying what is wrong."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    status_line, headers, expected, words = ANSWERS[answer]
    done = asyncio.Event()
    port = await hostile(_answering(status_line, headers, done))
    gateway, url = gateway_before(port, connector, uvicorn_server, connect_timeout=NEVER)
    assert await _status(url) == expected
    async with asyncio.timeout(5):
        await done.wait()
    await gateway.settle()
    failures = gateway.gateway._apis["h"].pool.backends[0].failures
    assert failures == (1 if expected == 502 else 0)
    if words is not None:
        lines = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
        assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and words in lines[0], lines


def _at_the_limit(status: int, done: asyncio.Event) -> Handler:
    """A raw upstream answering with as many header lines as the rule allows, and none of those the
    gateway adds: a 101 without ``Date`` or ``Server`` (nor an extension: the client's compression is
    the relay's to add), a 403 without ``Content-Type`` and its body ended by the connection."""
    if status == 101:
        return _answering(SWITCHING, _headers(MAX_HEADER_LINES - 3), done)

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(FORBIDDEN + b"\r\n" + _headers(MAX_REFUSAL_LINES) + b"\r\nnope")
            await writer.drain()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        finally:
            done.set()

    return refuse


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("status", [101, 403])
async def test_an_answer_at_the_limit_reaches_a_websockets_client_with_the_gateways_lines(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, status: int, connector: str
) -> None:
    """Before: a 101 with 128 lines passed the rule and reached the client with 130 (131 on the relay),
    a 403 with 128 with 132; a ``websockets`` client (128 lines) could not read either."""
    done = asyncio.Event()
    port = await hostile(_at_the_limit(status, done))
    gateway, url = gateway_before(port, connector, uvicorn_server, connect_timeout=NEVER)
    if status == 101:
        async with await connect(url) as ws:  # compression offered: the relay answers it itself
            assert ws.response is not None and len(ws.response.headers) <= 128
    else:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url)
        assert refused.value.response.status_code == 403 and refused.value.response.body == b"nope"
    async with asyncio.timeout(5):
        await done.wait()
    await gateway.settle()
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 0


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_a_head_read_a_byte_at_a_time_is_read_as_whole(answer: str) -> None:
    """The verdict (and the head) is the same whatever the reads: each line is checked as it completes."""
    status_line, headers, _expected, _words = ANSWERS[answer]
    if status_line[9:].partition(b" ")[0].lstrip(b"0") == b"101":
        headers = _ACCEPT % b"x" + headers
    else:  # as the raw upstream sends it
        headers += b"Content-Length: 4\r\n"
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + status_line + b"\r\n" + headers + b"\r\n" + b"frames"

    def verdict(pieces: list[bytes]) -> tuple[bool, str, bytes]:
        head, buffer, done = AnswerHead(), bytearray(), False
        try:
            for piece in pieces:
                buffer += piece
                done = head.feed(buffer)
        except UnreadableHead as exc:
            return False, str(exc), b""
        return done, "", head.as_http11(buffer) if done else b""

    whole = verdict([raw])
    assert verdict([raw[i : i + 1] for i in range(len(raw))]) == whole
    assert whole[0] == (ANSWERS[answer][2] != 502)
    if whole[0]:
        assert whole[2].startswith(b"HTTP/1.1 %s " % status_line[9:12]) and whole[2].endswith(b"\r\n\r\nframes")


def test_the_limits_are_ones_websockets_honours() -> None:
    """The relay's client would refuse nothing the rule lets through, nor a client what the gateway sends on."""
    from websockets import http11

    assert MAX_REFUSAL_LINES == REFUSAL_LINES
    assert MAX_HEADER_LINES == LINES and LINES + 4 <= http11.MAX_NUM_HEADERS and MAX_LINE <= http11.MAX_LINE_LENGTH
    assert MAX_HEAD == 64 * 1024
