"""An upstream as the attacker: what its handshake answer and its first frames do to the gateway.

A real uvicorn serves the gateway (the gateway's protocol, so APIs splice unless told otherwise) in
front of a raw upstream whose behaviour the upstream path names. Each connector is exercised: the
splice (no message policies), the frame relay (a message policy) and the ``websockets`` relay
(``passthrough: false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from asgi_ws_gateway.frame_rules import FRAGMENT_FLOOR
from asgi_ws_gateway.upstream import websockets_protocol
from asgi_ws_gateway.upstream.chunked import Dechunker, MalformedChunks
from support.access import access_line
from support.clients import connect, expect_close, expect_status
from support.configs import api_entry
from support.gateway import MIB, PASSTHROUGH, ProbedGateway
from support.hostile import (  # noqa: F401 - the fixture hostile
    CONNECTORS,
    Handler,
    gateway_before,
    hostile_upstream,
    sends_then_answers_close,
)
from support.rawhttp import EOF_TIMEOUT, accept_upstream, handshake, ws_frame
from support.servers import UvicornFactory

FAILED = (1011, "upstream connection failed")
NEVER = 60.0  # a close_timeout no test waits for: the client must hear of the failure at once

CHUNKED_403 = (
    b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    b"5;note=x\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


async def _refuse_in_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A refusal in chunks on a kept-alive connection: the body ends at its last chunk, not at EOF."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(CHUNKED_403)
    await writer.drain()
    await reader.read()  # keep the connection open until the gateway closes it
    writer.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_chunked_refusal_is_relayed_at_once_and_is_no_backend_failure(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """The upstream's 403 with its decoded body, not a 504 at connect_timeout counted against the backend."""
    gateway, url = gateway_before(await hostile(_refuse_in_chunks), connector, uvicorn_server, connect_timeout=5)
    status, headers, body = await expect_status(url)
    assert (status, body, headers.get("content-type")) == (403, b"hello world", "text/plain")
    assert "transfer-encoding" not in headers
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 0


@pytest.mark.parametrize("connector", ["splice", "frame relay"])
async def test_malformed_chunks_are_the_upstreams_502(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """A chunk size that is no number: a 502 at once, the backend's failure (the relay's websockets
    client says the same)."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        await reader.read()
        writer.close()

    gateway, url = gateway_before(await hostile(refuse), connector, uvicorn_server, connect_timeout=NEVER)
    status, _headers, _body = await expect_status(url)  # open_timeout: 5 s
    assert status == 502
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 1


def _refuse_with_length(lengths: bytes) -> Handler:
    """A 403 whose body is b"no", framed by the ``Content-Length`` lines ``lengths``, on a kept-alive connection."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\n" + lengths + b"\r\n\r\nno")
        await reader.read()
        writer.close()

    return refuse


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize(
    ("lengths", "status"),
    [
        (b"Content-Length: 2, 3", 502),
        (b"Content-Length: +2", 502),
        (b"Content-Length: 0x2", 502),
        (b"Content-Length: 2\r\nContent-Length: 5", 502),
        (b"Content-Length: 2, 2", 403),
        (b"Content-Length: 2\r\nContent-Length: 02", 403),
    ],
    ids=["list", "sign", "hex", "two-lines", "same-list", "same-lines"],
)
async def test_a_refusal_whose_content_length_is_not_one_number_is_the_upstreams_502_at_once(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
    lengths: bytes,
    status: int,
) -> None:
    """RFC 9112 §6.3: its body cannot be delimited. It was read as having no length, to the connection's
    end: a 504 at ``connect_timeout``, counted as a timeout (two lines: the first one's length, 403).
    One number repeated is that number (RFC 9110 §8.6): the 403 is relayed, no backend failure."""
    caplog.set_level(logging.WARNING)
    gateway, url = gateway_before(
        await hostile(_refuse_with_length(lengths)), connector, uvicorn_server, connect_timeout=NEVER
    )
    answer = await expect_status(url)  # open_timeout: 5 s
    assert (answer[0], answer[2] if status == 403 else b"") == (status, b"no" if status == 403 else b"")
    assert gateway.gateway._apis["h"].pool.backends[0].failures == (status == 502)
    if status == 502:
        assert "refused with a Content-Length that is not one number" in caplog.text


def _answer_then_hold(release: asyncio.Event, after: bytes = b"") -> Handler:
    """A valid 101, then ``after`` in the next write; the upstream holds its TCP connection open
    (whatever the gateway sends) until ``release`` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await writer.drain()
        writer.write(after)
        await release.wait()
        writer.close()

    return handle


async def test_a_relayed_text_message_that_is_not_utf8_closes_the_client_at_once(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory
) -> None:
    """The relay fails the upstream with 1007 and the client gets 1011 then, not close_timeout
    later: websockets waited inside recv() for the upstream to close TCP."""
    release = asyncio.Event()
    port = await hostile(_answer_then_hold(release, ws_frame(1, b"ok\xff\xfe", mask=False)))
    gateway, url = gateway_before(port, "relay", uvicorn_server, close_timeout=NEVER, ping_interval=None)
    try:
        async with await connect(url) as ws:
            assert await expect_close(ws) == FAILED  # within expect_close's 5 s
    finally:
        release.set()
    await gateway.settle()


@pytest.mark.parametrize("connector", ["relay", "frame relay"])
@pytest.mark.parametrize("close", [b"\x03\xe8", b"\x0f\xa1bye"], ids=["1000", "4001"])
async def test_a_text_message_that_is_not_utf8_then_a_close_is_the_gateways_failure(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    connector: str,
    close: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bad message and the upstream's close in one write: the relay's recv() found the message
    bad after the close had come and been answered, and the client got the upstream's clean close
    (1000, or 4001 "bye"), the message lost without a word, the access line "closed by upstream"."""
    caplog.set_level(logging.INFO)
    release = asyncio.Event()
    after = ws_frame(1, b"good", mask=False) + ws_frame(1, b"ok\xff\xfe", mask=False) + ws_frame(8, close, mask=False)
    gateway, url = gateway_before(await hostile(_answer_then_hold(release, after)), connector, uvicorn_server)
    try:
        async with await connect(url) as ws:
            assert await ws.recv() == "good"
            assert await expect_close(ws) == FAILED
    finally:
        release.set()
    await gateway.settle()
    line = await access_line(caplog)
    assert "closed by gateway with 1011" in line, line
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 1


async def test_a_close_in_the_same_read_as_the_101_leaves_no_keepalive_behind(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory
) -> None:
    """An upstream that closes in its 101's segment: no keepalive task is left to ping the dead
    connection ping_interval later (and log ``keepalive ping failed`` with a traceback, at ERROR)."""

    async def close_with_the_101(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=ws_frame(8, b"\x03\xe8bye", mask=False))
        with contextlib.suppress(OSError):
            await reader.read(64)  # the gateway's close frame: the closing handshake is over
        writer.close()

    gateway, url = gateway_before(await hostile(close_with_the_101), "relay", uvicorn_server)
    async with await connect(url) as ws:
        assert await expect_close(ws) == (1000, "bye")
    await gateway.settle()

    async def keepalives() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "").endswith(".keepalive")]

    assert await gateway.on_server(keepalives) == []


def test_chunks_decode_whatever_the_reads() -> None:
    """Fed a byte at a time, the body is the same; the head before ``start`` is skipped."""
    raw = b"HEAD\r\n\r\n" + CHUNKED_403.partition(b"\r\n\r\n")[2] + b"trailing"
    chunks, buffer = Dechunker(8, 1024), bytearray()
    for byte in raw:
        buffer.append(byte)
        chunks.advance(buffer)
    assert chunks.done and bytes(chunks.body) == b"hello world"


def test_chunks_keep_at_most_the_limit() -> None:
    """Past ``limit`` bytes of body, or 16 raw bytes per byte kept, the decoder is done."""
    big = Dechunker(0, 4)
    big.advance(b"a\r\n0123456789\r\n")
    assert big.done and bytes(big.body) == b"0123"
    extended = Dechunker(0, 4)
    extended.advance(b"1;" + b"e" * 100 + b"\r\nx\r\n" * 10)
    assert extended.done and len(extended.body) <= 1


@pytest.mark.parametrize(
    "raw",
    [b"zz\r\n", b"-1\r\n", b"1" * 17 + b"\r\n", b"5\r\nhelloXX", b"1;" + b"e" * 5000],
    ids=["not hex", "sign", "17 digits", "no CRLF after data", "endless size line"],
)
def test_malformed_chunks_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedChunks):
        Dechunker(0, 1024).advance(raw)


GARBAGE = b"\x81\x7f" + b"\xff" * 8  # a 64-bit length with its top bit set: no frame
ANSWERS = {"its close frame": (ws_frame(8, b"\x03\xe8", mask=False), 1000), "garbage": (GARBAGE, 1011)}


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_the_upstreams_answer_to_a_clients_close_ends_the_client_at_once(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, answer: str
) -> None:
    """The client closes; the upstream answers (with its close frame, or with a bad frame) and keeps
    its TCP connection open. The client gets a close frame and EOF at once, not at close_timeout:
    the splice waited for the upstream's TCP close, and after garbage sent the client nothing."""
    data, code = ANSWERS[answer]
    if connector == "relay":
        code = 1000  # the relay answers the client's close itself, whatever the upstream does
    release = asyncio.Event()

    async def answer_the_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await reader.read(64)  # the client's close frame, forwarded
        writer.write(data)
        await release.wait()
        writer.close()

    gateway, url = gateway_before(await hostile(answer_the_close), connector, uvicorn_server, close_timeout=NEVER)
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake("/h"))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ws_frame(8, b"\x03\xe8bye"))
        async with asyncio.timeout(EOF_TIMEOUT):
            frames = await reader.read()  # up to EOF
    finally:
        release.set()
        writer.close()
    assert frames[:1] == b"\x88" and int.from_bytes(frames[2:4], "big") == code, frames
    await gateway.settle()


def _endless(head: bytes, line: bytes) -> Handler:
    """An answer that never ends: ``head``, then ``line`` again and again until the gateway goes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        with contextlib.suppress(OSError):
            while True:
                writer.write(line * 64)
                await writer.drain()
        writer.close()

    return handle


async def test_an_endless_header_block_on_the_relay_is_a_502_at_once(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory
) -> None:
    """websockets' limit (128 headers) fails the handshake, but it waited for the upstream's EOF to
    say so: the client got a 504 at connect_timeout, not the 502 (here within 5 s)."""
    upstream = _endless(b"HTTP/1.1 101 Switching Protocols\r\n", b"X-Filler: " + b"a" * 1000 + b"\r\n")
    gateway, url = gateway_before(await hostile(upstream), "relay", uvicorn_server, connect_timeout=NEVER)
    status, _headers, _body = await expect_status(url)  # open_timeout: 5 s
    assert status == 502
    await gateway.settle()


BIG = 2 * 1024 * 1024  # over websockets' 1 MiB body limit


def _refusing(framing: str, size: int = BIG) -> Handler:
    """A 403 whose body of ``size`` bytes is framed by ``framing``; the connection then held open
    (but for ``eof``, whose body ends with it; ``endless``: a body that never ends)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: quota\r\n"
        body = bytes(i % 251 for i in range(size))
        with contextlib.suppress(OSError):
            if framing == "length":
                writer.write(head + b"Content-Length: %d\r\n\r\n" % size + body)
            elif framing == "chunked":
                writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
                for start in range(0, size, 1000):
                    piece = body[start : start + 1000]
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                writer.write(b"0\r\n\r\n")
            elif framing == "endless":
                writer.write(head + b"\r\n")
                while True:
                    writer.write(body[:65536])
                    await writer.drain()
            else:
                writer.write(head + b"Connection: close\r\n\r\n" + body)
                await writer.drain()
                writer.close()
                return
            await writer.drain()
            await reader.read()
        writer.close()

    return handle


@pytest.mark.parametrize("framing", ["length", "chunked", "eof", "endless"])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_refusal_with_a_large_body_is_relayed_cut_and_is_no_backend_failure(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, framing: str
) -> None:
    """The upstream's 403 with the first 64 KiB of its 2 MiB body, at once, on every connector. The
    relay's websockets client failed the handshake on a body over 1 MiB: a 502 and a failure counted
    against the backend (``unhealthy_after`` of them put a healthy backend in cooldown), where the
    splice relayed the 403; an endless body was a 502 too."""
    gateway, url = gateway_before(await hostile(_refusing(framing)), connector, uvicorn_server, connect_timeout=NEVER)
    status, headers, body = await expect_status(url)  # open_timeout: 5 s
    assert (status, headers.get("x-reason"), headers.get("content-type")) == (403, "quota", "text/plain")
    assert body == bytes(i % 251 for i in range(64 * 1024))
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 0
    await gateway.settle()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_small_refusal_is_relayed_whole_whatever_its_framing(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    for framing in ("length", "chunked", "eof"):
        gateway, url = gateway_before(await hostile(_refusing(framing, 3000)), connector, uvicorn_server)
        status, _headers, body = await expect_status(url)
        assert (status, body) == (403, bytes(i % 251 for i in range(3000))), framing
        await gateway.settle()


def _fragments(count: int, size: int) -> bytes:
    """A binary message in ``count`` fragments of ``size`` bytes each, as an upstream sends it."""
    piece = bytes(i % 251 for i in range(size))
    first, middle, last = (ws_frame(op, piece, fin=fin, mask=False) for op, fin in ((2, False), (0, False), (0, True)))
    return first + middle * (count - 2) + last


def _fragments_gateway(
    port: int, connector: str, uvicorn_server: UvicornFactory, **api: Any
) -> tuple[ProbedGateway, str]:
    """``gateway_before``, with the frame relay's outbound policy letting messages of 1 MiB through."""
    settings = {**CONNECTORS[connector], **api}
    if "message_policies" in settings:
        settings["message_policies"] = {"outbound": [{"limit-message-size": {"max": MIB}}]}
    gateway = ProbedGateway({"apis": [api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", **settings)]})
    return gateway, uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_message_in_5000_fragments_of_64_bytes_passes_whole(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """320,000 bytes in 5,000 fragments, far under the 1 MiB limit: the relay's websockets client
    refused a message of more than 4,096 fragments (its own rule), the client got 1001 "upstream
    message too big" where the splice and the frame relay delivered it."""
    got: list[bytes] = []
    port = await hostile(sends_then_answers_close(_fragments(5000, 64), got))
    gateway, url = _fragments_gateway(port, connector, uvicorn_server, ping_interval=None)
    async with await connect(url) as ws:  # streamed: websockets' recv() takes 4,096 fragments at most
        parts = [part async for part in ws.recv_streaming()]
        assert all(isinstance(part, bytes) for part in parts)
        assert b"".join(parts) == bytes(i % 251 for i in range(64)) * 5000  # type: ignore[arg-type]  # bytes: above
    await gateway.settle()
    assert got[:1] == [b"\x88\x03\xe8"]  # the client's close, mirrored
    assert gateway.gateway._apis["h"].pool.backends[0].failures == 0


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_tiny_fragments_that_count_past_the_limit_are_refused_alike(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    connector: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """2,000 bytes in 2,000 fragments count 64 bytes each (FRAGMENT_FLOOR), past a limit of 64 KiB at
    the 1,025th: the upstream gets 1009 and the client 1001 "upstream message too big" on every
    connector, the upstream's close after the message unread (the relay let the message through: one
    of 4,096 fragments or fewer counted its bytes)."""
    caplog.set_level(logging.INFO)
    got: list[bytes] = []
    closing = ws_frame(8, b"\x03\xe8", mask=False)  # after it, in the same write: its close comes too late
    port = await hostile(sends_then_answers_close(_fragments(2000, 1) + closing, got))
    gateway, url = _fragments_gateway(port, connector, uvicorn_server, ping_interval=None, max_message_size=65536)
    async with await connect(url) as ws:
        assert await expect_close(ws) == (1001, "upstream message too big")
    await gateway.settle()
    assert got[0][:3] == b"\x88\x03\xf1", got  # 1009
    line = await access_line(caplog)
    assert "closed by gateway with 1001" in line, line


def test_the_relays_fragment_floor_is_the_frame_relays() -> None:
    """The ``ws://`` connector's copy of FRAGMENT_FLOOR (the layers keep it from importing passthrough's)."""
    assert websockets_protocol.FRAGMENT_FLOOR == FRAGMENT_FLOOR
