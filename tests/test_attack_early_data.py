"""Attacks on the handshake's timing: a client that sends frames before the 101 comes back.

RFC 6455 §4.1 has a client wait for the server's answer before it sends data; a hostile one (or a
hasty one) does not. What it sends early must reach the upstream, in order, as if it had waited:
uvicorn dropped the rest of the read that ended the request head (frames lost, and a frame cut by
the read's end left its remaining bytes to be read as a frame header of the client's choosing),
and a spliced connection that got early frames in a later read was left with reading paused: the
client's later frames and its close never reached the upstream, whose connection stayed open.

Real uvicorn with the gateway's protocols (both HTTP parsers) and a raw upstream that holds its
101 until the test says so, for the splice, the frame relay and the relay.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from support.gateway import PASSTHROUGH, ProbedGateway, gateway_config
from support.rawhttp import accept_upstream, handshake, ws_frame
from support.rawws import next_frame
from support.servers import UvicornServer

MODES: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame-relay": {"message_policies": {"inbound": [{"limit-message-size": {"max": 4096}}]}},
    "relay": {"passthrough": False},
}
HTTP: dict[str, Any] = {"httptools": GatewayHTTPProtocol, "h11": GatewayH11Protocol}


async def _message(reader: asyncio.StreamReader) -> bytes:
    opcode, payload = await next_frame(reader)
    assert opcode in (0x1, 0x2), f"opcode {opcode}: {payload!r}"
    return payload


class _HeldUpstream:
    """A raw upstream that answers 101 once ``answer`` is set, then records the messages it reads."""

    def __init__(self, expected: int) -> None:
        self.requested = asyncio.Event()
        self.answer = asyncio.Event()
        self.messages: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._expected = expected

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requested.set()
        await self.answer.wait()
        await accept_upstream(reader, writer)
        try:
            self.messages.set_result([await _message(reader) for _ in range(self._expected)])
            while (close := await next_frame(reader))[0] != 0x8:  # until the gateway closes after the client
                continue
            writer.write(ws_frame(0x8, close[1][:2], mask=False))
        except (asyncio.IncompleteReadError, AssertionError) as exc:
            self.messages.set_exception(exc)
        finally:
            writer.close()


async def _serve(upstream: _HeldUpstream, mode: str) -> tuple[asyncio.Server, ProbedGateway]:
    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    return listener, ProbedGateway(gateway_config(f"ws://127.0.0.1:{port}", **MODES[mode]))


async def _upgraded(reader: asyncio.StreamReader) -> None:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head


@pytest.mark.parametrize("http", sorted(HTTP))
@pytest.mark.parametrize("mode", sorted(MODES))
async def test_frames_in_the_upgrade_requests_read_reach_the_upstream(mode: str, http: str) -> None:
    """The request head, a frame and the first bytes of another in one write: uvicorn dropped what
    followed the head, so the upstream got neither message (and read the cut frame's rest as frames)."""
    upstream = _HeldUpstream(expected=3)
    upstream.answer.set()
    second = ws_frame(0x1, b"second " * 40)
    listener, gateway = await _serve(upstream, mode)
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH, http=HTTP[http]) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(handshake() + ws_frame(0x1, b"first") + second[:5])
            await _upgraded(reader)
            writer.write(second[5:] + ws_frame(0x2, b"third"))
            messages = await asyncio.wait_for(upstream.messages, 10)
            writer.close()
            await gateway.settle()
    assert messages == [b"first", b"second " * 40, b"third"]


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_frames_sent_while_the_upstream_answers_reach_it_and_the_connection_still_reads(mode: str) -> None:
    """A frame in a later read, before the 101: the splice lost it and read nothing more from the
    client (its next frame and its close never reached the upstream, which stayed connected)."""
    upstream = _HeldUpstream(expected=2)
    listener, gateway = await _serve(upstream, mode)
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(handshake())
            await asyncio.wait_for(upstream.requested.wait(), 10)
            writer.write(ws_frame(0x1, b"early"))
            await asyncio.sleep(0.2)  # the gateway reads it while its upstream has not answered
            upstream.answer.set()
            await _upgraded(reader)
            writer.write(ws_frame(0x1, b"after the 101"))
            messages = await asyncio.wait_for(upstream.messages, 10)
            writer.close()
            await gateway.settle()  # the client's close was seen: no connection is left open
    assert messages == [b"early", b"after the 101"]


async def test_an_early_message_over_the_limit_is_refused_as_any_other() -> None:
    """Held until the handshake is answered, an early message meets the API's message policies."""
    upstream = _HeldUpstream(expected=1)
    upstream.answer.set()
    listener, gateway = await _serve(upstream, "frame-relay")
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH, http=GatewayHTTPProtocol) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(handshake() + ws_frame(0x2, bytes(8192)) + ws_frame(0x1, b"never"))
            await _upgraded(reader)
            b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
            code = struct.unpack("!H", (await reader.readexactly(b1 & 0x7F))[:2])[0]
            writer.close()
            await gateway.settle()
    assert (b0 & 0x0F, code) == (0x8, 1009)
    assert not upstream.messages.done() or upstream.messages.exception() is not None


# -- an upgrade pipelined behind a plain HTTP request ---------------------------------------------------


class _SlowPage:
    """The gateway, and ``GET /slow``: a page that takes 0.3 s (a management call, say)."""

    def __init__(self, gateway: ProbedGateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/slow":
            await asyncio.sleep(0.3)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"slow"})
            return
        await self.gateway(scope, receive, send)


@pytest.mark.parametrize("http", sorted(HTTP))
@pytest.mark.parametrize("mode", ["splice", "relay"])
async def test_an_upgrade_pipelined_behind_a_request_is_answered_after_it_and_stays_open(mode: str, http: str) -> None:
    """``GET /slow`` and an upgrade in one write: uvicorn upgraded at once, so the 101 went out before
    the page and the page's bytes landed inside the WebSocket stream; and the keep-alive timer the
    page's end armed closed the WebSocket connection (EOF, no close frame) ``timeout_keep_alive`` later."""
    upstream = _HeldUpstream(expected=2)
    upstream.answer.set()
    listener, gateway = await _serve(upstream, mode)
    app = _SlowPage(gateway)
    async with listener:
        with UvicornServer(app, ws=PASSTHROUGH, http=HTTP[http], timeout_keep_alive=1) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n" + handshake() + ws_frame(0x1, b"first"))
            page = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert page.startswith(b"HTTP/1.1 200"), page
            assert await reader.readexactly(4) == b"slow"
            await _upgraded(reader)
            await asyncio.sleep(1.5)  # past the keep-alive timeout
            writer.write(ws_frame(0x1, b"second"))
            messages = await asyncio.wait_for(upstream.messages, 10)
            writer.close()
            await gateway.settle()
    assert messages == [b"first", b"second"]
