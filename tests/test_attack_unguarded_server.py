"""The gateway served without its protocols, as the README's first command once did.

Under a bare ``uvicorn app:app`` (uvicorn's own protocols) an attack pass held 100 connections open
with silent or dripped request heads, grew a worker by 105 MiB with one 64 MiB header, by 165 MiB
with 15 MiB fragments against a 1 MiB ``max_message_size`` and by 400 MiB with pings whose pongs
were never read, and the log said nothing. (A later pass: under ``--ws websockets`` one client whose
upstream read nothing grew a worker by 578 MB, 32 queued messages of 16 MiB: the warning names
``--ws-max-queue``.) The gateway cannot close those holes from the middleware,
but it knows whether the server runs its protocol: one WARNING at the first handshake without it.
"""

from __future__ import annotations

import logging

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.server import GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import build_config
from support.servers import WS_IMPLS, UvicornServer, WSImpl
from support.upstream import UpstreamServer

MARK = "the server does not run the gateway's protocols"


@pytest.mark.parametrize("ws", WS_IMPLS)
async def test_uvicorns_own_protocols_are_warned_about_once(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture, ws: WSImpl
) -> None:
    gateway = WebSocketGateway(not_found, config=build_config(upstream))
    with caplog.at_level(logging.WARNING, "asgi_ws_gateway"), UvicornServer(gateway, ws=ws) as server:
        for _ in range(3):
            async with await connect(server.url("/ws/echo")) as ws_client:
                await ws_client.send("hi")
                assert await ws_client.recv() == "hi"
    warnings = [r.getMessage() for r in caplog.records if MARK in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "--ws asgi_ws_gateway.server:GatewayWebSocketProtocol" in warnings[0]
    assert "--ws-max-queue" in warnings[0]  # uvicorn's websockets: 32 x 16 MiB held for an upstream reading nothing


async def test_the_gateways_protocol_is_not(upstream: UpstreamServer, caplog: pytest.LogCaptureFixture) -> None:
    gateway = WebSocketGateway(not_found, config=build_config(upstream))
    with (
        caplog.at_level(logging.WARNING, "asgi_ws_gateway"),
        UvicornServer(gateway, ws=GatewayWebSocketProtocol) as server,  # type: ignore[arg-type]
    ):
        async with await connect(server.url("/ws/echo")) as ws_client:
            await ws_client.send("hi")
            assert await ws_client.recv() == "hi"
    assert not [r for r in caplog.records if MARK in r.getMessage()]
