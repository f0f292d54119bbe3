"""``max_message_size`` holds for compressed messages in every mode, the splice included.

A spliced connection negotiates permessage-deflate end to end and forwards compressed frames as
they are. A limit read from frame headers alone let 8 MiB of zeros through as 8 KiB on the wire, to
an upstream that trusted the gateway's 1 MiB: the limit is on what a message inflates to. The relay
modes inflate per hop and must agree.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import zlib
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.utils import apply_mask

from support.clients import connect, expect_close
from support.gateway import MIB, MODES, PASSTHROUGH, GatewayMode, ProbedGateway, Stack, gateway_config, serve
from support.servers import UvicornServer
from support.upstream import UpstreamServer

GATEWAY_RELAY = "gateway-protocol-relay"
"""The relay under the gateway's own protocol (``passthrough: false``): the server reads no larger message."""


@pytest.fixture(params=[*MODES, GATEWAY_RELAY])
def stack(request: pytest.FixtureRequest, upstream: UpstreamServer) -> Iterator[Stack]:
    """The gateway (1 MiB limit, the default) relaying or splicing to a permessage-deflate upstream."""
    if request.param == GATEWAY_RELAY:
        gateway = ProbedGateway(gateway_config(upstream, passthrough=False))
        with UvicornServer(gateway, ws=PASSTHROUGH, ws_max_size=16 * MIB) as server:
            yield Stack(gateway, server, upstream)
        return
    with serve(upstream, GatewayMode(request.param)) as served:
        yield served


async def _too_big(ws: ClientConnection) -> bool:
    """The client was closed with 1009: by the gateway ("message too big"), or under the gateway's
    protocol by the server itself, which reads no larger message (websockets' own words)."""
    code, reason = await expect_close(ws)
    return code == 1009 and (reason == "message too big" or "exceeds limit of 1048576 bytes" in reason)


async def test_a_compressed_message_over_the_limit_never_reaches_the_upstream(stack: Stack) -> None:
    """8 MiB of zeros is ~8 KiB compressed: the client gets 1009, the upstream 1001 and not the message."""
    async with await connect(stack.url("/ws/echo"), compression="deflate") as ws:
        assert ws.response is not None
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        await ws.send(b"ok")
        assert await ws.recv() == b"ok"
        await ws.send(bytes(8 * MIB))
        assert await _too_big(ws)
    assert await stack.upstream.wait_for_closes_async(1) == [(1001, "client message too big")]
    await stack.gateway.settle()


async def test_compressed_messages_up_to_the_limit_pass_with_context_takeover(stack: Stack) -> None:
    """Exactly the limit passes, message after message (each compressed against the previous ones)."""
    async with await connect(stack.url("/ws/echo"), compression="deflate") as ws:
        for message in (bytes(MIB), bytes(MIB), "a" * MIB, b"\x01" * 1000, bytes(MIB)):
            await ws.send(message)
            assert await ws.recv() == message
        await ws.close()
    assert await stack.upstream.wait_for_closes_async(1) == [(1000, "")]
    await stack.gateway.settle()


async def test_a_fragmented_compressed_message_is_counted_across_its_fragments(stack: Stack) -> None:
    """Four fragments of 512 KiB: the third takes the message over the limit."""
    async with await connect(stack.url("/ws/echo"), compression="deflate") as ws:
        await ws.send([bytes(512 * 1024) for _ in range(4)])
        assert await _too_big(ws)
    assert await stack.upstream.wait_for_closes_async(1) == [(1001, "client message too big")]
    await stack.gateway.settle()


async def test_an_upstreams_compressed_message_over_the_limit_never_reaches_the_client(stack: Stack) -> None:
    """The other way: the upstream sends 8 MiB of zeros; the client gets 1001, the upstream 1009."""
    async with await connect(stack.url("/ws/zeros/8388608"), compression="deflate") as ws:
        await ws.send("go")
        assert await expect_close(ws) == (1001, "upstream message too big")
    ((code, _reason),) = await stack.upstream.wait_for_closes_async(1)  # the relay's client library words it
    assert code == 1009
    await stack.gateway.settle()


# -- the splice alone: bytes a real client library would not send ------------------------------------------


def _upgrade(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    ).encode()


async def _raw_client(stack: Stack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.server.port)
    writer.write(_upgrade(stack.server.port))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" in head.lower()
    return reader, writer


def _masked_frame_header(b0: int, length: int, key: bytes) -> bytes:
    if length < 126:
        return bytes([b0, 0x80 | length]) + key
    if length < 65536:
        return bytes([b0, 0x80 | 126]) + struct.pack("!H", length) + key
    return bytes([b0, 0x80 | 127]) + struct.pack("!Q", length) + key


async def _close_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The first close frame the server sends (skipping anything before it)."""
    while True:
        b0, b1 = await reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        payload = await reader.readexactly(length)
        if b0 & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0], payload[2:]


@pytest.mark.parametrize("stack", ["passthrough"], indirect=True)
async def test_a_bomb_found_part_way_through_a_frame_drops_the_upstream_connection(stack: Stack) -> None:
    """The first part of the frame (under the limit, inflated) goes on before the rest arrives; the rest
    takes it over: the client gets 1009, and the upstream, holding part of a frame that never ends, has
    its connection closed (no close frame fits inside a frame)."""
    deflate = zlib.compressobj(wbits=-15)
    payload = (deflate.compress(bytes(4 * MIB)) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4]
    first = len(zlib.decompressobj(wbits=-15).decompress(payload[:400]))
    assert first < MIB  # the part sent first is within the limit
    key = os.urandom(4)
    frame = _masked_frame_header(0xC2, len(payload), key) + apply_mask(payload, key)
    reader, writer = await _raw_client(stack)
    try:
        header = len(frame) - len(payload)
        writer.write(frame[: header + 400])
        await writer.drain()
        await asyncio.sleep(0.3)  # read, scanned and forwarded on its own
        writer.write(frame[header + 400 :])
        await writer.drain()
        code, reason = await asyncio.wait_for(_close_frame(reader), 10)
        assert (code, reason) == (1009, b"message too big")
    finally:
        writer.close()
    assert await stack.upstream.wait_for_closes_async(1) == [(1006, "")]
    await stack.gateway.settle()


@pytest.mark.parametrize("stack", ["passthrough"], indirect=True)
async def test_compressed_data_that_does_not_inflate_closes_with_1007(stack: Stack) -> None:
    """A frame with RSV1 whose payload is not deflate data: 1007 to both, nothing forwarded."""
    key = os.urandom(4)
    payload = b"\xff\xff\xff\xff not deflate"
    reader, writer = await _raw_client(stack)
    try:
        writer.write(_masked_frame_header(0xC2, len(payload), key) + apply_mask(payload, key))
        await writer.drain()
        code, reason = await asyncio.wait_for(_close_frame(reader), 10)
        assert code == 1007 and reason.startswith(b"invalid compressed data")
    finally:
        writer.close()
    (upstream_close,) = await stack.upstream.wait_for_closes_async(1)
    assert upstream_close[0] == 1007
    await stack.gateway.settle()


async def test_the_gateways_protocol_reads_no_more_than_the_apis_limit(upstream: UpstreamServer) -> None:
    """Relayed under the gateway's protocol, the server itself stops at the API's max_message_size
    (64 KiB here), not at its ws_max_size (16 MiB): it never inflates a bomb further. The upstream
    still gets the gateway's 1001, the client the 1009 (not a reset, though it was still sending)."""
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False, max_message_size=65536))
    with UvicornServer(gateway, ws=PASSTHROUGH, ws_max_size=16 * MIB) as server:
        async with await connect(server.url("/ws/echo"), compression="deflate") as ws:
            await ws.send("ok")
            assert await ws.recv() == "ok"
            (live,) = gateway.gateway.connections()
            await ws.send([bytes(32 * 1024) for _ in range(64)])  # 2 MiB in 64 fragments
            code, reason = await expect_close(ws)
        assert code == 1009 and "65536" in reason
        assert await upstream.wait_for_closes_async(1) == [(1001, "client message too big")]
        await gateway.settle()
        assert (live.stats.closed_by, live.stats.close_code) == ("gateway", 1009)  # the access line says so


async def test_a_client_still_sending_gets_the_close_code_not_a_reset(upstream: UpstreamServer) -> None:
    """The server's own limit (ws_max_size 64 KiB) stops a 2 MiB message while the client is still
    sending it: the gateway's protocol reads out what comes after its close frame instead of
    resetting the connection (the client saw 1006, never the 1009)."""
    gateway = ProbedGateway(gateway_config(upstream, passthrough=False))
    with UvicornServer(gateway, ws=PASSTHROUGH, ws_max_size=65536) as server:
        for _ in range(3):
            async with await connect(server.url("/ws/echo"), compression=None) as ws:
                await ws.send([b"x" * 32768 for _ in range(64)])  # 2 MiB in 64 fragments
                code, _reason = await expect_close(ws)
            assert code == 1009
        assert await upstream.wait_for_closes_async(3) == [(1001, "client message too big")] * 3
        await gateway.settle()
