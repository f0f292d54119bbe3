"""A client whose FIN or reset is read just before its handshake is accepted: abandoned, with the gateway's
access line and no ERROR, for each connector.

Seen once each under load (2026-12-07): the transport was already closing (the FIN read: uvicorn's
``eof_received`` closes it) but ``connection_lost`` had not run yet when the gateway accepted. The
splice's and the frame relay's hand-over raised ``ClientDisconnected``, the middleware took it as the
client gone and returned, and the protocol logged ERROR ``ASGI callable returned without completing
handshake.`` (a line any client could cause at will); the relay's ``websocket.accept`` was skipped
without a word by uvicorn's protocol, and its access line said ``101 ... with 1006`` for a client that
read nothing.

The race is made certain: the accept waits on the server's loop (blocking it) until the client's FIN
is sent, then yields once: uvloop's turn reads the FIN (uvicorn closes the transport) and runs the
accept's step before ``connection_lost``, which comes a turn later. (With no yield the accept goes out
before the FIN is read, and the half-closed client is served its 101; with two, ``connection_lost``
cancels the handshake first: neither was ever wrong.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from typing import Any

import pytest

from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.passthrough.asgi_extension import ACCEPT
from asgi_ws_gateway.server.http import GatewayHTTPProtocol
from support.access import access_line
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.rawhttp import handshake
from support.servers import UvicornServer
from support.upstream import UpstreamServer

CONNECTORS: dict[str, dict[str, Any]] = {
    "splice": {},
    "frame-relay": {"message_policies": {"outbound": [{"limit-message-size": {"max": 65536}}]}},
    "relay": {"passthrough": False},
}


class AcceptAfterFin:
    """The gateway, its accept held on the server's loop until the test has sent the client's FIN."""

    def __init__(self, gateway: ProbedGateway) -> None:
        self.gateway = gateway
        self.accepting = threading.Event()
        self.fin_sent = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def held_send(message: Any) -> None:
            if message["type"] in ("websocket.accept", ACCEPT):
                self.accepting.set()
                self.fin_sent.wait(10)  # blocking, on purpose: the FIN (or reset) must be there when the loop reads
                time.sleep(0.05)  # noqa: ASYNC251 - (its segment on the loopback)
                await asyncio.sleep(0)  # the turn that reads the FIN, and connection_lost's a turn later
            await send(message)

        await self.gateway(scope, receive, held_send)


@pytest.mark.parametrize("end", ["fin", "rst"])
@pytest.mark.parametrize("connector", sorted(CONNECTORS))
async def test_a_client_end_read_just_before_the_accept_abandons_the_handshake_quietly(
    upstream_server: UpstreamServer, caplog: pytest.LogCaptureFixture, connector: str, end: str
) -> None:
    caplog.set_level(logging.INFO)
    closed = len(upstream_server.closes)
    api = api_entry(upstream_server, name=connector, path=f"/{connector}", **CONNECTORS[connector])
    gateway = ProbedGateway({"apis": [api]})
    app = AcceptAfterFin(gateway)
    with UvicornServer(app, ws=PASSTHROUGH, http=GatewayHTTPProtocol, loop="uvloop") as server:  # (its turn's order)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(handshake(f"/{connector}"))
        assert await asyncio.to_thread(app.accepting.wait, 10)
        read = b""
        if end == "rst":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            await writer.wait_closed()
            app.fin_sent.set()
        else:
            writer.write_eof()
            await writer.drain()
            app.fin_sent.set()
            read = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await writer.wait_closed()
        line = await access_line(caplog)
        async with asyncio.timeout(10):
            await upstream_server.wait_for_closes_async(closed + 1)  # the upstream's leg ended too
        await gateway.settle()
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, errors
    assert read == b"", read  # no 101, and no 500 either
    assert f"{connector} abandoned (client went away)" in line, line
