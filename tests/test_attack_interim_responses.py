"""Interim (1xx) responses before the upstream's 101: skipped, a bounded number of them.

RFC 9110 §15.2: a client must parse one or more 1xx responses before the final one. A proxy in
front of the upstream answers ``100 Continue``, a server ``102 Processing`` or ``103 Early Hints``:
each connector took any 1xx but 101 for a failed backend (a 502, counted towards its cooldown).
A raw upstream sends them; the gateway runs under real uvicorn with the gateway's protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway.upstream.interim import InterimOverflow, InterimResponses
from support.clients import connect, expect_status
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.servers import UvicornFactory

NEVER = 60.0  # a connect_timeout no test waits for: a flood must fail at once

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\nX-Hint: 1\r\n\r\n"
PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"


def _answering(answer: bytes) -> Handler:
    """A raw upstream that reads the request, writes ``answer`` and waits for the gateway to close."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        with contextlib.suppress(OSError):
            await reader.read()  # keeps the connection open until the gateway closes it
        writer.close()

    return handle


async def _interim_then_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """100 Continue and 103 Early Hints, in separate writes, one of them cut in its status line, then
    the 101 and a message."""
    head = await reader.readuntil(b"\r\n\r\n")
    for piece in (CONTINUE, EARLY_HINTS[:12], EARLY_HINTS[12:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)  # separate reads, most of the time
    reader.feed_data(head)  # accept_upstream reads the request again
    await accept_upstream(reader, writer, then=ws_frame(1, b"hello", mask=False))
    with contextlib.suppress(OSError):
        await reader.read(64)  # the gateway's close frame: the server ends the connection
    writer.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_interim_responses_before_the_101_are_skipped(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """100 and 103 (with headers) then 101: the client is connected, the backend not failed (a 502 before)."""
    gateway, url = gateway_before(await hostile(_interim_then_accept), connector, uvicorn_server)
    async with await connect(url) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 0
    await gateway.settle()


async def _flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """102 Processing, without end, until the gateway goes."""
    await reader.readuntil(b"\r\n\r\n")
    with contextlib.suppress(OSError):
        while True:
            writer.write(PROCESSING * 16)
            await writer.drain()
    writer.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_flood_of_interim_responses_is_a_502_at_once(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """Past 8 interim responses the handshake failed: a 502 (within expect_status's 5 s), not a
    504 at connect_timeout."""
    gateway, url = gateway_before(await hostile(_flood), connector, uvicorn_server, connect_timeout=NEVER)
    status, _headers, _body = await expect_status(url)
    assert status == 502
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 1
    await gateway.settle()


def test_interim_responses_are_skipped_whatever_the_reads() -> None:
    """Fed a byte at a time (a CRLF cut between reads is no bare CR), the interim heads are dropped
    and the 101 leads the buffer."""
    raw = CONTINUE + EARLY_HINTS + b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x00"
    interim, buffer, answers = InterimResponses(1024), bytearray(), []
    for byte in raw:
        buffer.append(byte)
        answers.append(interim.skip(buffer))
    assert answers[-1] and bytes(buffer).startswith(b"HTTP/1.1 101 ")
    assert (interim.count, interim.skipped) == (2, len(CONTINUE) + len(EARLY_HINTS))


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\n", True),
        (b"HTTP/1.1 403 Forbidden\r\n", True),
        (b"garbage\r\n", True),
        (b"HTTP/1.1 1000 Continue\r\n\r\n", True),  # no status code: the connector refuses it
        (b"HTTP/1.1 100\r\n\r\n", False),  # no reason phrase: still interim (dropped, then more is needed)
        (b"HTTP/1.1 103 Ear", False),
    ],
)
def test_only_a_1xx_other_than_101_is_interim(raw: bytes, answer: bool) -> None:
    assert InterimResponses(1024).skip(bytearray(raw)) is answer


@pytest.mark.parametrize(
    "raw",
    [CONTINUE * 9 + b"HTTP/1.1 101 ", EARLY_HINTS + b"HTTP/1.1 100 Continue\r\nX: " + b"a" * 1024],
    ids=["nine", "over the byte limit"],
)
def test_too_many_interim_responses_overflow(raw: bytes) -> None:
    with pytest.raises(InterimOverflow):
        InterimResponses(1024).skip(bytearray(raw))


_interim_then_refuse = _answering(CONTINUE + EARLY_HINTS + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_interim_responses_before_a_refusal_leave_the_refusal_whole(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """The 403 after them is relayed with its body: the interim heads moved no offset."""
    gateway, url = gateway_before(await hostile(_interim_then_refuse), connector, uvicorn_server)
    status, _headers, body = await expect_status(url)
    assert (status, body) == (403, b"nope")
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 0
    await gateway.settle()


# -- answers whose lines end with a bare LF ---------------------------------------------------------------

BARE_LF_ANSWERS = {
    "101 all bare": b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n\n",
    "101 headers bare": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\nConnection: Upgrade\n\n",
    "101 end bare": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\n",
    "interim bare": b"HTTP/1.1 100 Continue\n\n",
    "interim headers bare": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\n\n",
    "refusal bare": b"HTTP/1.1 403 Forbidden\nContent-Length: 0\n\n",
    "101 bare CR": b"HTTP/1.1 101 Switching Protocols\rUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "refusal bare CR": b"HTTP/1.1 403 Forbidden\rX: 1\r\n",
}


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("answer", list(BARE_LF_ANSWERS))
async def test_an_answer_with_bare_lf_line_ends_is_a_502_at_once(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, answer: str
) -> None:
    """A head whose lines end with LF alone (RFC 9112 §2.2 lets a recipient refuse it, as websockets
    does), or with a bare CR (invalid): a 502 at once, as the relay gave for some of them, not a wait
    for a CRLF CRLF that never comes until connect_timeout (a 504, the backend counted as timing out)."""
    handler = _answering(BARE_LF_ANSWERS[answer])
    gateway, url = gateway_before(await hostile(handler), connector, uvicorn_server, connect_timeout=NEVER)
    status, _headers, _body = await expect_status(url)
    assert status == 502
    await gateway.settle()
