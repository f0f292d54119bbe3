"""End to end: an upstream that ends the WebSocket but keeps its TCP connection open, relayed.

RFC 6455 has the server close TCP after the closing handshake; an upstream that does not (or that
breaks the protocol, so that the gateway fails the connection and waits for the server to drop
it) used to leave the relay waiting on ``websockets``' ``recv()``, which ended only with the TCP
connection: the client heard nothing until a keepalive ping timed out (never, without pings) and the
socket stayed counted. A raw upstream plays that server: it completes the handshake, sends one
frame, reads what the gateway sends back, and never closes. Keepalive pings are off, so nothing but
the fix can end the connection; ``close_timeout`` is long enough to tell "at once" from "at the
deadline" without a tight clock.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_close
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import accept_upstream
from support.rawws import close_frame_in, raw_client
from support.servers import WS_IMPLS, UvicornFactory, WSImpl

CLOSE_TIMEOUT = 1.0
FAILED = "upstream connection failed"
BOUND = 10.0  # far under "never"; the 20-s keepalive is off anyway

FRAMES = {
    # A close frame, 1000 "bye": the client gets it as it is.
    "close": (b"\x88\x05\x03\xe8bye", 1000, "bye", 1000),
    # A masked frame from a server (RFC 6455 §5.1): the gateway fails the upstream with 1002.
    "masked": (b"\x81\x82abcd" + bytes(x ^ y for x, y in zip(b"hi", b"ab", strict=True)), 1011, FAILED, 1002),
    # A close frame with a 1-byte payload (§5.5.1: 0 or at least 2).
    "short close": (b"\x88\x01\x03", 1011, FAILED, 1002),
    # A control frame over 125 bytes (§5.5).
    "long ping": (b"\x89\x7e\x00\x7e" + b"p" * 126, 1011, FAILED, 1002),
}


def _close_code(received: bytes) -> int | None:
    """The code of the (masked) close frame that opens ``received``, if it does."""
    if len(received) < 8 or received[0] != 0x88:
        return None
    mask, payload = received[2:6], received[6 : 6 + (received[1] & 0x7F)]
    unmasked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return int.from_bytes(unmasked[:2], "big")


@pytest.mark.parametrize("frame", list(FRAMES))
@pytest.mark.parametrize("ws", [*WS_IMPLS, PASSTHROUGH])
async def test_an_upstream_close_reaches_the_client_at_once_and_its_socket_closes_at_close_timeout(
    uvicorn_server: UvicornFactory, ws: WSImpl, frame: str
) -> None:
    """The client gets the upstream's close (or 1011) at once; the gateway drops the held socket by close_timeout."""
    data, client_code, client_reason, upstream_code = FRAMES[frame]
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()  # all the gateway sent, once it closed TCP
    release = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        writer.write(data)
        sent = b""
        try:
            while chunk := await reader.read(65536):
                sent += chunk
        except ConnectionResetError:  # dropped with a reset: what came before still counts
            pass
        received.set_result(sent)
        await release.wait()  # never close first: only the gateway may end this connection
        writer.close()

    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = api_entry(f"ws://127.0.0.1:{port}/", ping_interval=None, close_timeout=CLOSE_TIMEOUT, passthrough=False)
    gateway = WebSocketGateway(not_found, config={"apis": [api]})
    server = uvicorn_server(gateway, ws=ws)
    try:
        async with listener, await connect(server.url("/ws/echo")) as client:
            async with asyncio.timeout(BOUND):
                assert await expect_close(client) == (client_code, client_reason)
                assert not received.done()  # the client was told before the deadline, not at it
                sent = await received
    finally:
        release.set()
    assert _close_code(sent) == upstream_code  # the close echoed, or the gateway's 1002
    async with asyncio.timeout(BOUND):
        while gateway.open_connections:  # noqa: ASYNC110 - another thread's state
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("ws", [*WS_IMPLS, PASSTHROUGH])
async def test_the_gateways_close_ends_a_relayed_connection_whose_upstream_reads_nothing(
    uvicorn_server: UvicornFactory, ws: WSImpl
) -> None:
    """``idle_timeout`` closes a relayed connection whose upstream reads nothing (a frozen backend, its buffers
    full of the client's messages). The client got its 1001, but websockets bounds only the wait for the
    upstream's answer, not the write of the close frame before it: the relay's close and its send waited for
    ever (keepalive off; 40 s with the default), the connection open, its task held, no access line, no
    count. The splice drops such an upstream at ``close_timeout``; so does the relay now."""
    release = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await release.wait()  # reads nothing, closes nothing
        writer.close()

    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = api_entry(f"ws://127.0.0.1:{port}/", ping_interval=None, close_timeout=CLOSE_TIMEOUT, passthrough=False,
                    idle_timeout=1.0)  # fmt: skip
    gateway = WebSocketGateway(not_found, config={"apis": [api]})
    server = uvicorn_server(gateway, ws=ws)
    try:
        async with listener:
            reader, writer = await raw_client(server.port, deflate=False)
            message = b"\x82\xff" + (65536).to_bytes(8, "big") + b"\0\0\0\0" + b"u" * 65536  # masked, zero key

            async def upload() -> None:
                with contextlib.suppress(ConnectionError):
                    while True:
                        writer.write(message)
                        await writer.drain()

            sending = asyncio.create_task(upload())
            try:
                async with asyncio.timeout(BOUND):
                    assert await close_frame_in(reader) == (1001, b"idle timeout")
                    while gateway.open_connections:  # noqa: ASYNC110 - another thread's state
                        await asyncio.sleep(0.02)
            finally:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
                writer.transport.abort()
    finally:
        release.set()
