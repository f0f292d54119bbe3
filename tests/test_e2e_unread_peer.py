"""End to end: a peer that pings and never reads cannot grow the gateway's write buffer.

A pong per ping piled up in the buffer of a peer that does not read: 170 MB in 15 s from one client
(the gateway's server protocol), 279 MB from one upstream (its ``websockets`` client leg). RFC 6455
§5.5.3 lets an endpoint answer only the most recent of the pings it has not answered yet, which is
what both legs now do while their transport's writes are paused (``held_pings``). Raw sockets play
the peer; each ping carries its sequence number, so the peer can count the pongs it got (what the
socket buffers held when the gateway's writes paused, then one) and check the last one answers its
last ping.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.apps import echo_app
from support.clients import connect
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import accept_upstream
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

PINGS = 100_000  # 12.7 MB of pongs if each were answered: more than loopback's socket buffers hold (~4 MB)


def _ping(number: int, *, masked: bool) -> bytes:
    payload = number.to_bytes(8, "big") + b"p" * 117  # 125 bytes: the most a control frame carries
    if not masked:
        return bytes([0x89, len(payload)]) + payload
    mask = os.urandom(4)
    return bytes([0x89, 0x80 | len(payload)]) + mask + _unmask(payload, mask)  # masking is the same XOR


async def _pongs(reader: asyncio.StreamReader, last: int) -> list[int]:
    """The sequence numbers of the pongs in the stream (other frames skipped), read until the pong of
    ``last`` (or 5 s of quiet: then it never came)."""
    buffer, numbers = bytearray(), list[int]()
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 16), 5)
        except TimeoutError:
            return numbers
        if not chunk:
            return numbers
        buffer += chunk
        while len(buffer) >= 2:
            length, offset = buffer[1] & 0x7F, 2
            if length >= 126:
                size = 2 if length == 126 else 8
                if len(buffer) < 2 + size:
                    break
                length, offset = int.from_bytes(buffer[2 : 2 + size], "big"), 2 + size
            masked = buffer[1] & 0x80
            end = offset + (4 if masked else 0) + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[end - length : end])
            if masked:
                payload = _unmask(payload, buffer[offset : offset + 4])
            if buffer[0] & 0x0F == 0xA:
                numbers.append(int.from_bytes(payload[:8], "big"))
            del buffer[:end]
            if numbers and numbers[-1] == last:
                return numbers


def _unmask(payload: bytes, mask: bytes | bytearray) -> bytes:
    key = int.from_bytes((bytes(mask) * (len(payload) // 4 + 1))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


async def _flood(writer: asyncio.StreamWriter, *, masked: bool, count: int = PINGS) -> None:
    """Send ``count`` pings, reading nothing meanwhile."""
    batch = 500
    for start in range(0, count, batch):
        writer.write(b"".join(_ping(number, masked=masked) for number in range(start, start + batch)))
        await writer.drain()


async def _open_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client of the gateway's ``/ws/echo``, handshake done. Its receive buffer is fixed (256 KiB: no
    autotuning, which under load grew it to MBs, and let most pongs in before the gateway's writes paused)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


def _check(answered: list[int]) -> None:
    # Without the fix every ping got its pong; now those the socket buffers took before the gateway's
    # writes paused (~34,500 here: ~4.3 MB), then one. The margin leaves room for larger buffers.
    assert len(answered) < PINGS * 9 // 10
    assert answered[-1] == PINGS - 1  # the most recent ping is answered (RFC 6455 §5.5.3)
    assert answered == sorted(answered)


async def test_a_client_that_pings_and_never_reads_gets_one_pong_for_its_latest_pings(
    uvicorn_server: UvicornFactory,
) -> None:
    api = api_entry(name="echo", path="/ws/echo")
    api["upstreams"] = [{"app": echo_app}]  # in-process: relayed through the server's own protocol
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
    reader, writer = await _open_client(server.port)
    await _flood(writer, masked=True)
    _check(await _pongs(reader, PINGS - 1))
    writer.write(_ping(7, masked=True))  # reading again: each ping is answered at once
    await writer.drain()
    assert await _pongs(reader, 7) == [7]
    writer.close()


async def test_an_upstream_that_pings_and_never_reads_gets_one_pong_for_its_latest_pings(
    uvicorn_server: UvicornFactory,
) -> None:
    answered: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await _flood(writer, masked=False)
        answered.set_result(await _pongs(reader, PINGS - 1))
        writer.close()

    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    config = {"apis": [api_entry(f"ws://127.0.0.1:{port}/", name="echo", path="/ws/echo")]}
    server = uvicorn_server(WebSocketGateway(not_found, config=config))  # the relay: websockets' client leg
    async with listener, await connect(server.url("/ws/echo")):
        _check(await asyncio.wait_for(answered, 60))


@pytest.mark.parametrize("ws", ["websockets-sansio", PASSTHROUGH])
async def test_pings_still_get_their_pongs_through_the_gateway(uvicorn_server: UvicornFactory, ws: str) -> None:
    api = api_entry(name="echo", path="/ws/echo")
    api["upstreams"] = [{"app": echo_app}]
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=ws)  # type: ignore[arg-type]
    async with await connect(server.url("/ws/echo")) as client:
        for _ in range(3):
            latency = await asyncio.wait_for(await client.ping(), 5)
            assert latency >= 0


@pytest.mark.parametrize("framed", [False, True], ids=["splice", "frame-relay"])
async def test_pings_from_a_side_that_reads_nothing_wait_and_only_the_latest_goes_on(
    uvicorn_server: UvicornFactory, framed: bool
) -> None:
    """Spliced or framed, pings go end to end and the other side answers them. While the client reads
    nothing (here: 32 MB the upstream sent it wait in the gateway), its pings do not reach the
    upstream, whose pongs could not go anywhere; once it reads again, only its latest ping goes on.
    Before, every ping went on and a websockets upstream piled up its pongs (240 MB in 15 s)."""
    pinged: list[int] = []
    stalled, finished = asyncio.Event(), asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        chunk = bytes([0x82, 127]) + (256 * 1024).to_bytes(8, "big") + bytes(256 * 1024)
        writer.write(chunk * 128)  # 32 MB, more than the socket buffers hold (~10 MB): the writes to the client pause
        while not await _settled(writer):
            continue
        stalled.set()
        buffer = bytearray()
        while data := await reader.read(1 << 16):  # answers every ping, as websockets does
            buffer += data
            while len(buffer) >= 6 and len(buffer) >= 6 + (buffer[1] & 0x7F):
                end = 6 + (buffer[1] & 0x7F)
                payload = _unmask(bytes(buffer[6:end]), buffer[2:6])
                if buffer[0] & 0x0F == 0x9:
                    pinged.append(int.from_bytes(payload[:8], "big"))
                    writer.write(bytes([0x8A, len(payload)]) + payload)
                del buffer[:end]
        writer.close()
        await writer.wait_closed()
        finished.set()

    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    # The upstream answers no close frame: once the client is gone, the gateway's close to it ends at close_timeout.
    api = api_entry(f"ws://127.0.0.1:{port}/", name="echo", path="/ws/echo", passthrough=True, close_timeout=0.5)
    if framed:
        api["message_policies"] = {"inbound": [{"limit-message-size": {"max": 4096}}]}
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
    async with listener:
        reader, writer = await _open_client(server.port)
        await asyncio.wait_for(stalled.wait(), 30)
        await _flood(writer, masked=True, count=PINGS // 10)  # the gateway reads them all: nothing blocks
        await asyncio.sleep(0.5)
        assert pinged == []  # held in the gateway, not one forwarded
        pongs = await _pongs(reader, PINGS // 10 - 1)  # reading again: the held ping goes on, and its pong comes back
        assert pinged == pongs == [PINGS // 10 - 1]
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(finished.wait(), 10)  # the gateway closed the upstream connection too


async def _settled(writer: asyncio.StreamWriter) -> bool:
    """The gateway stopped reading what ``writer`` sends: its write buffer no longer shrinks."""
    before = writer.transport.get_write_buffer_size()
    await asyncio.sleep(0.2)
    return writer.transport.get_write_buffer_size() >= before > 0


async def test_error_replies_to_a_client_that_reads_nothing_hold_its_messages_back(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """A message policy's drop answers the sender; to a client that reads nothing those answers piled
    up in the gateway (a client sending 11-byte messages over a 4-byte limit grew it by 298 MB in
    15 s). Now the answer waits for the client to read, and so does the client's next message: the
    client is held back (its writes block) instead."""
    api = api_entry(upstream, name="echo", path="/ws/echo", passthrough=True)
    api["message_policies"] = {"inbound": [{"limit-message-size": {"max": 4, "action": "drop"}}]}
    server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH)
    reader, writer = await _open_client(server.port)
    mask = b"\x01\x02\x03\x04"
    batch = (bytes([0x82, 0x85]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"12345"))) * 1000
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    sent = 0
    with pytest.raises(TimeoutError):  # the gateway stopped reading it: no drain for 5 s
        while sent < 3_000_000:  # 33 MB, over what socket buffers hold: before, the gateway read them all
            writer.write(batch)
            sent += 1000
            await asyncio.wait_for(writer.drain(), 5)
    replies = await _frames_read(reader, 1 << 20)
    assert replies and all(b'"error":"message_too_big"' in reply for reply in replies[:3])
    writer.transport.abort()


async def _frames_read(reader: asyncio.StreamReader, most: int) -> list[bytes]:
    """Payloads of the unmasked frames the server sent, up to ``most`` bytes, until it goes quiet."""
    data = bytearray()
    while len(data) < most:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 16), 1.5)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    payloads, pos = [], 0
    while pos + 2 <= len(data):
        length, offset = data[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, offset = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        if offset + length > len(data):
            break
        payloads.append(bytes(data[offset : offset + length]))
        pos = offset + length
    return payloads
