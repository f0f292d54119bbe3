"""End to end: a frame whose header breaks a framing rule, its payload never sent in full.

An upstream's 101 followed by a body (``Content-Length: 5`` then ``hello``) reads, past the head, as a
close frame without FIN announcing 101 bytes. websockets' parser, the relay's, read a header and waited
for the whole payload before checking its rules: under ``uvicorn app:app`` the client got nothing until
the keepalive gave up on the silent upstream (40 s by default), where the splice failed the header at
once. Each such header, after the 101 or after a message, is now failed as it comes in: the upstream
1002, the client 1011 ``upstream connection failed``, an access line, the close counted. The keepalive
is set far beyond the bound the test waits, so only the header's check can end the connection in time.
The relay's client leg under the gateway's protocol read a client's frames the same way, and does the same.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from support.access import access_line
from support.clients import connect, expect_close
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, raw_client
from support.servers import WS_IMPLS, UvicornFactory, WSImpl
from support.telemetry import close_counts

KEEPALIVE = 60.0  # ping_interval and ping_timeout: what ended such a connection before, 120 s on
BOUND = 10.0  # the test's wait for the close: far under the keepalive
FAILED = (1011, "upstream connection failed")

AFTER_THE_101 = {
    # A body behind the 101: "hello" is a close frame without FIN (and RSV1, RSV2) announcing 101 bytes.
    "content-length body": (b"Content-Length: 5\r\n", b"hello"),
    "bytes past the head": (b"", b"hello"),
}
HEADERS = {  # after a first message, each announcing more payload than follows
    "reserved bit": b"\xc1\x64abc",  # text, RSV1 without permessage-deflate, 100 bytes
    "continuation first": b"\x80\x64abc",  # a continuation frame with no message begun
    "long ping": b"\x89\x7e\x01\x00abc",  # a ping of 256 bytes (over 125)
}
MODES: dict[str, tuple[WSImpl, dict[str, Any]]] = {
    **{f"relay under {ws}": (ws, {"passthrough": False}) for ws in WS_IMPLS},
    "relay under the gateway's protocol": (PASSTHROUGH, {"passthrough": False}),
    "splice": (PASSTHROUGH, {}),
    "frame relay": (PASSTHROUGH, {"message_policies": {"outbound": [{"limit-message-size": {"max": 65536}}]}}),
}


def _switching(request: bytes, extra: bytes) -> bytes:
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))  # fmt: skip
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n")  # fmt: skip


async def _fails_at_once(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, mode: str, extra: bytes, then: bytes
) -> None:
    """A raw upstream answers with ``extra`` in its 101's head, then sends ``then`` and falls silent (it
    closes only once the gateway's close frame came, as a peer that reads on would)."""
    caplog.set_level(logging.INFO)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_switching(await reader.readuntil(b"\r\n\r\n"), extra) + then)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            received.set_result(await reader.readexactly(2))  # the gateway's close frame, its first bytes
        writer.close()

    ws, fields = MODES[mode]
    metrics = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metrics], shutdown_on_exit=False)
    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = api_entry(f"ws://127.0.0.1:{port}/", ping_interval=KEEPALIVE, ping_timeout=KEEPALIVE, **fields)
    gateway = ProbedGateway({"apis": [api]}, meter_provider=provider)
    server = uvicorn_server(gateway, ws=ws)
    try:
        async with listener, await connect(server.url("/ws/echo")) as client:
            async with asyncio.timeout(BOUND):
                if then.startswith(b"\x81"):
                    assert await client.recv() == "first"
                assert await expect_close(client) == FAILED
                assert (await received)[0] == 0x88  # the upstream got the gateway's close frame
        await gateway.settle()  # no relay task left
        line = await access_line(caplog)
        assert "closed by gateway with 1011" in line, line
        assert close_counts(metrics) == {("gateway", 1011): 1}
        assert gateway.gateway._apis["echo"].pool.backends[0].failures == 1
    finally:
        provider.shutdown()


@pytest.mark.parametrize("answer", list(AFTER_THE_101))
@pytest.mark.parametrize("mode", list(MODES))
async def test_bytes_after_the_101_that_stall_the_parser_close_the_client_at_once(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, mode: str, answer: str
) -> None:
    """A 101 with a body, or bytes past its head that are no frame: 1011 to the client, not at the keepalive."""
    extra, then = AFTER_THE_101[answer]
    await _fails_at_once(uvicorn_server, caplog, mode, extra, then)


@pytest.mark.parametrize("header", list(HEADERS))
@pytest.mark.parametrize("mode", list(MODES))
async def test_a_frame_header_that_breaks_a_rule_closes_the_client_at_once(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, mode: str, header: str
) -> None:
    """After a message, a header that breaks a framing rule and a payload cut short: 1011 at once."""
    await _fails_at_once(uvicorn_server, caplog, mode, b"", ws_frame(1, b"first", mask=False) + HEADERS[header])


CLIENT_HEADERS = {  # masked, as a client's are; each announcing more payload than follows
    "reserved bit": b"\xc1\xe4mask" + b"abc",  # text, RSV1 without permessage-deflate, 100 bytes
    "fragmented close": b"\x08\x90mask" + b"abc",  # a close frame without FIN, 16 bytes
    "long ping": b"\x89\xfe\x01\x00mask" + b"abc",  # a ping of 256 bytes (over 125)
    # The first bytes of a header that breaks a rule, the rest of the header never sent: its first two
    # bytes tell the rule; the splice and the frame relay waited for the whole header.
    "reserved opcode, cut": b"\xff\xff\xff\xff\xff",  # masked, a 64-bit length: 14 bytes of header
    "fragmented close, cut": b"\x08\xfe\x01",  # masked, a 16-bit length: 8 bytes of header
}


@pytest.mark.parametrize("header", list(CLIENT_HEADERS))
@pytest.mark.parametrize("mode", ["relay under the gateway's protocol", "splice", "frame relay"])
async def test_a_clients_frame_header_that_breaks_a_rule_is_refused_at_once(
    uvicorn_server: UvicornFactory, mode: str, header: str
) -> None:
    """A client's header that breaks a rule, its payload cut short: 1002 at once, not at the keepalive."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        with contextlib.suppress(OSError):
            await reader.read(65536)  # the gateway's close frame (the client sent no frame it forwards)
        writer.close()

    ws, fields = MODES[mode]
    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = api_entry(f"ws://127.0.0.1:{port}/", ping_interval=KEEPALIVE, ping_timeout=KEEPALIVE, **fields)
    gateway = ProbedGateway({"apis": [api]})
    server = uvicorn_server(gateway, ws=ws, ws_ping_interval=KEEPALIVE, ws_ping_timeout=KEEPALIVE)
    async with listener:
        reader, writer = await raw_client(server.port, deflate=False)
        try:
            writer.write(CLIENT_HEADERS[header])
            async with asyncio.timeout(BOUND):
                code, _ = await close_frame_in(reader)
            assert code == 1002
        finally:
            writer.close()
        await gateway.settle()


LINGER_BOUND = (
    5.0  # the wait for the gateway to drop the upstream: over close_timeout (1 s), under the 10 s kept without one
)


@pytest.mark.parametrize("mode", [m for m in MODES if m.startswith("relay")])
async def test_an_upstream_failed_at_its_header_that_keeps_its_socket_is_dropped_at_close_timeout(
    uvicorn_server: UvicornFactory, mode: str
) -> None:
    """The failed upstream's socket lingers ``close_timeout`` (1 s here) for its TCP close, as after any
    failure, not the 10 s kept for a connection with no deadline (the relay, its slot and access line with it)."""
    dropped = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_switching(await reader.readuntil(b"\r\n\r\n"), b"") + b"hello")
        with contextlib.suppress(OSError):
            while await reader.read(65536):  # never closes first: reads until the gateway drops it
                pass
        dropped.set()
        writer.close()

    ws, fields = MODES[mode]
    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = api_entry(f"ws://127.0.0.1:{port}/", ping_interval=KEEPALIVE, ping_timeout=KEEPALIVE, close_timeout=1.0,
                    **fields)  # fmt: skip
    gateway = ProbedGateway({"apis": [api]})
    server = uvicorn_server(gateway, ws=ws)
    async with listener, await connect(server.url("/ws/echo")) as client:
        async with asyncio.timeout(BOUND):
            assert await expect_close(client) == FAILED
        async with asyncio.timeout(LINGER_BOUND):
            await dropped.wait()
    await gateway.settle()
