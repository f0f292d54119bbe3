"""End to end: the relay reads compressed messages as the splice does (RFC 7692 §7.2.3.3; 1007 for bad data).

A sender may end a message's deflate data with a final block; what follows it is a new deflate stream.
websockets' decoder, on both of the relay's legs, stopped at the first stream's end and dropped the rest
unrefused: "abc" in a final block then "XYZ" in one frame reached the other side as "abc", and under
context takeover every later message of the connection as empty. The splice lets a frame end one
stream (``passthrough/inflate.py``) and fails a second with 1007; the relay's legs now read the same,
and fail data that is not deflate data with 1007 too (websockets: 1002 "decompression failed").

Real uvicorn (the gateway's protocol, and uvicorn's own for the upstream leg), a real ``websockets``
echo upstream or a raw one sending hand-built frames, and a raw client.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator

import pytest

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway, Stack, gateway_config
from support.hostile import Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, next_frame
from support.servers import UvicornServer, WSImpl
from support.upstream import UpstreamServer

TWO_ENDS = "invalid compressed data (a frame ends more than one deflate stream)"
OFFERS = {
    "context takeover": "permessage-deflate",
    "no context takeover": "permessage-deflate; client_no_context_takeover",
}
ANSWERS = {
    "context takeover": b"permessage-deflate",
    "no context takeover": b"permessage-deflate; server_no_context_takeover",
}


def ended(text: bytes) -> bytes:
    """``text`` as a deflate stream of its own, ended by a final block."""
    deflate = zlib.compressobj(wbits=-15)
    return deflate.compress(text) + deflate.flush(zlib.Z_FINISH)


def flushed(text: bytes) -> bytes:
    """``text`` as a permessage-deflate sender sends it: a sync flush, its ``00 00 ff ff`` taken off."""
    deflate = zlib.compressobj(wbits=-15)
    return (deflate.compress(text) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]


MESSAGES = [
    (ended(b"abc") + flushed(b"XYZ"), b"abcXYZ"),  # one stream ends, a new one follows: one message
    (ended(b"end"), b"end"),  # a final block with nothing after it
    (flushed(b"next"), b"next"),  # and the messages after them
]


async def _client(port: int, path: str, offer: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client of ``path``, its handshake done with ``offer`` (None: no compression)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    extensions = "" if offer is None else f"Sec-WebSocket-Extensions: {offer}\r\n"
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and (b"permessage-deflate" in head) == (offer is not None)
    return reader, writer


@pytest.fixture
def relayed(upstream: UpstreamServer) -> Iterator[Stack]:
    """The relay under the gateway's protocol in front of a permessage-deflate ``websockets`` echo."""
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False))
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        yield Stack(gateway, server, upstream)


@pytest.mark.parametrize("offer", OFFERS.values(), ids=OFFERS)
async def test_a_client_message_past_a_final_block_reaches_the_upstream_whole(relayed: Stack, offer: str) -> None:
    """The upstream got "abc" of "abc"+"XYZ", and under context takeover nothing of later messages."""
    reader, writer = await _client(relayed.server.port, "/ws/echo", offer)
    inflater = zlib.decompressobj(wbits=-15)  # the gateway compresses its answers with context takeover
    try:
        for payload, text in MESSAGES:
            writer.write(ws_frame(0x2, payload, rsv=0x40))
            opcode, echoed = await asyncio.wait_for(next_frame(reader), 10)
            assert (opcode, inflater.decompress(echoed + b"\x00\x00\xff\xff")) == (0x2, text)
        writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
        assert await asyncio.wait_for(close_frame_in(reader), 10) == (1000, b"")
    finally:
        writer.close()
    assert await relayed.upstream.wait_for_closes_async(1) == [(1000, "")]
    await relayed.gateway.settle()


@pytest.mark.parametrize("offer", OFFERS.values(), ids=OFFERS)
async def test_a_client_frame_ending_two_deflate_streams_is_1007(relayed: Stack, offer: str) -> None:
    """The upstream got "abc" of "abc"+"XYZ", both ended, unrefused: now 1007 to both, as the splice."""
    reader, writer = await _client(relayed.server.port, "/ws/echo", offer)
    try:
        writer.write(ws_frame(0x2, ended(b"abc") + ended(b"XYZ"), rsv=0x40))
        opcode, payload = await asyncio.wait_for(next_frame(reader), 10)
        assert (opcode, struct.unpack("!H", payload[:2])[0], payload[2:]) == (0x8, 1007, TWO_ENDS.encode())
    finally:
        writer.close()
    assert await relayed.upstream.wait_for_closes_async(1) == [(1007, TWO_ENDS)]
    await relayed.gateway.settle()


def _upstream_sending(answer: bytes, frames: bytes, closed: asyncio.Future[tuple[int, bytes]]) -> Handler:
    """A raw upstream that accepts with ``answer``, sends ``frames``, and keeps the gateway's close frame."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, extensions=answer, then=frames)
        try:
            closed.set_result(await close_frame_in(reader))
            writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError) as exc:
            closed.set_exception(exc)
        writer.close()

    return handle


SERVERS: dict[str, WSImpl] = {"gateway's protocol": PASSTHROUGH, "websockets-sansio": "websockets-sansio"}


@pytest.mark.parametrize("ws", SERVERS.values(), ids=SERVERS)
@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS)
async def test_an_upstream_message_past_a_final_block_reaches_the_client_whole(
    hostile: Callable[[Handler], Awaitable[int]], answer: bytes, ws: WSImpl
) -> None:
    """The client got "abc" of "abc"+"XYZ", and under context takeover empty messages after it."""
    closed: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
    frames = b"".join(ws_frame(0x2, payload, mask=False, rsv=0x40) for payload, _ in MESSAGES)
    port = await hostile(_upstream_sending(answer, frames, closed))
    gateway = ProbedGateway({"apis": [api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", passthrough=False)]})
    with UvicornServer(gateway, ws=ws) as server:
        reader, writer = await _client(server.port, "/h", None)
        try:
            for _, text in MESSAGES:
                assert await asyncio.wait_for(next_frame(reader), 10) == (0x2, text)
            writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
            assert await asyncio.wait_for(closed, 10) == (1000, b"")
        finally:
            writer.close()
        await gateway.settle()


@pytest.mark.parametrize("ws", SERVERS.values(), ids=SERVERS)
@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS)
async def test_an_upstream_frame_ending_two_deflate_streams_is_1007(
    hostile: Callable[[Handler], Awaitable[int]], answer: bytes, ws: WSImpl
) -> None:
    """The client got "abc" of "abc"+"XYZ", both ended: now the upstream gets 1007, the client 1011."""
    closed: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
    frame = ws_frame(0x2, ended(b"abc") + ended(b"XYZ"), mask=False, rsv=0x40)
    port = await hostile(_upstream_sending(answer, frame, closed))
    gateway = ProbedGateway({"apis": [api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", passthrough=False)]})
    with UvicornServer(gateway, ws=ws) as server:
        reader, writer = await _client(server.port, "/h", None)
        try:
            assert await asyncio.wait_for(next_frame(reader), 10) == (
                0x8,
                struct.pack("!H", 1011) + b"upstream connection failed",
            )
        finally:
            writer.close()
        assert await asyncio.wait_for(closed, 10) == (1007, TWO_ENDS.encode())
        await gateway.settle()


# -- data that is not deflate data ---------------------------------------------------------------------
#
# websockets failed it with 1002 "decompression failed" (a framing error, which it is not: RFC 6455 §7.4.1
# gives 1007 to data inconsistent with the message's type); the splice and docs/security.md say 1007,
# "invalid compressed data (zlib's word)".

NOT_DEFLATE = b"\xff\xff\xff\xff not deflate"
REASON = "invalid compressed data (Error -3 while decompressing data: invalid block type)"


@pytest.mark.parametrize("offer", OFFERS.values(), ids=OFFERS)
async def test_a_client_message_that_does_not_inflate_is_1007(relayed: Stack, offer: str) -> None:
    """The client got 1002 "decompression failed", the upstream 1002: now 1007 to both."""
    reader, writer = await _client(relayed.server.port, "/ws/echo", offer)
    try:
        writer.write(ws_frame(0x2, NOT_DEFLATE, rsv=0x40))
        opcode, payload = await asyncio.wait_for(next_frame(reader), 10)
        assert (opcode, struct.unpack("!H", payload[:2])[0], payload[2:]) == (0x8, 1007, REASON.encode())
    finally:
        writer.close()
    assert await relayed.upstream.wait_for_closes_async(1) == [(1007, REASON)]
    await relayed.gateway.settle()


@pytest.mark.parametrize("ws", SERVERS.values(), ids=SERVERS)
@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS)
async def test_an_upstream_message_that_does_not_inflate_is_1007(
    hostile: Callable[[Handler], Awaitable[int]], answer: bytes, ws: WSImpl
) -> None:
    """The upstream got 1002 "decompression failed": now 1007, and the client 1011 as before."""
    closed: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
    port = await hostile(_upstream_sending(answer, ws_frame(0x2, NOT_DEFLATE, mask=False, rsv=0x40), closed))
    gateway = ProbedGateway({"apis": [api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", passthrough=False)]})
    with UvicornServer(gateway, ws=ws) as server:
        reader, writer = await _client(server.port, "/h", None)
        try:
            close = await asyncio.wait_for(next_frame(reader), 10)
            assert close == (0x8, struct.pack("!H", 1011) + b"upstream connection failed")
        finally:
            writer.close()
        assert await asyncio.wait_for(closed, 10) == (1007, REASON.encode())
        await gateway.settle()
