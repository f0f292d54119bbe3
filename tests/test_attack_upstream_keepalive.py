"""Attack: the keepalive blames the side that is really silent, and says so without an ERROR.

An upstream that answers no ping is a peer's fault, not the gateway's: one INFO line, the client
closed with 1011, no ERROR and no traceback (on the relay, websockets' keepalive logged "keepalive
ping failed" with an AssertionError's traceback per connection). The access line says the upstream
sent no close frame (1006), not that it closed with the gateway's own 1011.

A side the gateway stopped reading (because the other side reads nothing: backpressure) cannot
answer a ping in time: its pong waits behind the data the gateway does not read. The splice charges
that silence to nobody; it drops the side whose socket does not drain once a write to it stays stalled
longer than ``ping_timeout``, and closes the other side with a close frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.rawhttp import accept_upstream
from support.rawws import next_frame, raw_client
from support.servers import UvicornFactory

KEEPALIVE: dict[str, Any] = {"ping_interval": 0.2, "ping_timeout": 0.5, "close_timeout": 0.5}


async def _hung_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Completes the handshake, then reads and drops everything: it never answers a ping."""
    await accept_upstream(reader, writer)
    while await reader.read(1 << 16):
        pass
    writer.close()


@pytest.mark.parametrize("passthrough", [False, True], ids=["relay", "splice"])
async def test_an_upstream_that_answers_no_ping_is_dropped_with_one_info_line_and_no_error(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, passthrough: bool
) -> None:
    """The client gets 1011; the log has the gateway's INFO line, no ERROR, no traceback."""
    caplog.set_level(logging.INFO)
    listener = await asyncio.start_server(_hung_upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = api_entry(f"ws://127.0.0.1:{port}/", passthrough=passthrough, **KEEPALIVE)
    server = uvicorn_server(
        WebSocketGateway(not_found, config={"apis": [api]}), ws=PASSTHROUGH
    )  # the gateway's protocol
    async with listener, await connect(server.url("/ws/echo")) as client:  # answers the gateway's pings itself
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    for _ in range(100):  # the access line is written once the upstream's connection is over
        if any(r.name == "asgi_ws_gateway.access" for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert any("the upstream did not answer a ping" in m for m in messages), messages
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)
    (access,) = [r.getMessage() for r in caplog.records if r.name == "asgi_ws_gateway.access"]
    assert "closed by upstream with 1006" in access


def _gateway(port: int, mode: str, direction: str) -> WebSocketGateway:
    """A gateway to ``port`` that relays, splices, or relays frames (a message policy on ``direction``)."""
    api: dict[str, Any] = {"passthrough": mode != "relay", **KEEPALIVE}
    if mode == "frame-relay":
        api["message_policies"] = {direction: [{"limit-message-size": {"max": 65536}}]}
    return WebSocketGateway(not_found, config={"apis": [api_entry(f"ws://127.0.0.1:{port}/", **api)]})


@pytest.mark.parametrize("mode", ["relay", "splice", "frame-relay"])
async def test_an_upstream_that_reads_nothing_is_dropped_not_the_client_streaming_to_it(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """The client streams, the upstream reads nothing: the client (unread, so silent) gets 1011 with a
    close frame and the log blames the upstream. Before, the splice dropped the client without a close
    frame as "did not answer a ping", and the relay never found the upstream dead (its ping waited
    behind the full write buffer before its timeout started)."""
    caplog.set_level(logging.INFO)
    release = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await release.wait()
        writer.close()

    listener = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server = uvicorn_server(_gateway(port, mode, "inbound"), ws=PASSTHROUGH)
    try:
        async with listener, await connect(server.url("/ws/echo"), ping_interval=None, max_size=None) as client:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(client.send(b"z" * 60000), 30)
    finally:
        release.set()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    messages = [r.getMessage() for r in caplog.records]
    assert any("the upstream read nothing" in m for m in messages), messages
    assert not any("the client did not answer a ping" in m for m in messages)


@pytest.mark.parametrize("framed", [False, True], ids=["splice", "frame-relay"])
async def test_a_client_that_reads_nothing_is_dropped_not_the_upstream_streaming_to_it(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, framed: bool
) -> None:
    """A healthy upstream streams to a client that reads nothing: the upstream (unread, so its pongs
    wait) gets a close frame, 1001 "client went away"; the log blames the client. Before, the
    upstream was dropped as "did not answer a ping" and got no close frame."""
    caplog.set_level(logging.INFO)
    upstream_saw: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def streamer(ws: ServerConnection) -> None:
        try:
            while True:
                await ws.send(b"y" * 60000)
        except ConnectionClosed as exc:
            upstream_saw.set_result(exc.rcvd.code if exc.rcvd is not None else None)

    async with serve(streamer, "127.0.0.1", 0, ping_interval=None, compression=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        server = uvicorn_server(_gateway(port, "frame-relay" if framed else "splice", "outbound"), ws=PASSTHROUGH)
        _, writer = await raw_client(server.port, deflate=False)  # reads nothing from here on
        assert await asyncio.wait_for(upstream_saw, 30) == 1001
        writer.transport.abort()
    messages = [r.getMessage() for r in caplog.records]
    assert any("the client read nothing" in m for m in messages), messages
    assert not any("the upstream did not answer a ping" in m for m in messages)


async def test_the_relay_keeps_an_upstream_it_does_not_read_while_the_client_reads_nothing(
    uvicorn_server: UvicornFactory,
) -> None:
    """On the relay, a healthy upstream streaming to a client that pauses reading is not failed for
    pongs the gateway left unread; the client then reads on. Before, it got 1011 "keepalive ping timeout"."""
    upstream_saw: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def streamer(ws: ServerConnection) -> None:
        try:
            while True:
                await ws.send(b"y" * 60000)
        except ConnectionClosed as exc:
            upstream_saw.set_result(exc.rcvd.code if exc.rcvd is not None else None)

    async with serve(streamer, "127.0.0.1", 0, ping_interval=None, compression=None) as upstream:
        port = upstream.sockets[0].getsockname()[1]
        server = uvicorn_server(_gateway(port, "relay", "outbound"), ws=PASSTHROUGH)
        reader, writer = await raw_client(server.port, deflate=False)
        # Reads nothing through several keepalive rounds (an observation window: the old keepalive
        # failed the upstream within one round of ping_interval + ping_timeout).
        await asyncio.sleep(5 * (KEEPALIVE["ping_interval"] + KEEPALIVE["ping_timeout"]))
        for _ in range(100):
            opcode, _ = await asyncio.wait_for(next_frame(reader), 30)
            assert opcode == 0x2
        assert not upstream_saw.done()
        writer.transport.abort()
