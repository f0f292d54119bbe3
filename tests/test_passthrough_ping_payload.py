"""An endpoint's own ping gets its pong through the gateway, whatever payload it chose.

An attack pass found the splice's keepalive payload a constant (``b"asgi-ws-gateway"``, in the
source) and every pong carrying it taken out of the stream: a client or upstream whose own ping used
it never got its pong (a keepalive that drops healthy connections, or a probe that tells the gateway
is there). Now each connection pings with its own random payload (``passthrough.sides.ping_payload``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve

from asgi_ws_gateway.passthrough.sides import ping_payload
from support.clients import connect
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.servers import UvicornFactory

OLD_PAYLOAD = b"asgi-ws-gateway"
"""The constant payload the gateway's keepalive pings had."""


@asynccontextmanager
async def _upstream() -> AsyncIterator[str]:
    """Echoes; on "ping me" pings the client with :data:`OLD_PAYLOAD`, says "pinged", and answers the
    client's next message with whether the pong had come (the client answers a ping as it reads it)."""

    async def handler(connection: ServerConnection) -> None:
        async for message in connection:
            if message == "ping me":
                pong = await connection.ping(OLD_PAYLOAD)
                await connection.send("pinged")
                await connection.recv()
                await connection.send(f"pong came: {asyncio.ensure_future(pong).done()}")
            else:
                await connection.send(message)

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def _client(upstream: str, connector: str, uvicorn_server: UvicornFactory) -> ClientConnection:
    """A client of a gateway whose keepalive is on (its pongs are taken out), itself not pinging."""
    api = {"name": "h", "path": "/h", "upstreams": [upstream], "ping_interval": 20, **CONNECTORS[connector]}
    return await connect(uvicorn_server(ProbedGateway({"apis": [api]}), ws=PASSTHROUGH).url("/h"), ping_interval=None)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_clients_ping_with_the_old_keepalive_payload_gets_its_pong(
    uvicorn_server: UvicornFactory, connector: str
) -> None:
    """The upstream answers the client's ping before the echo of the message after it: the pong is in first."""
    async with _upstream() as upstream, await _client(upstream, connector, uvicorn_server) as ws:
        pong = await ws.ping(OLD_PAYLOAD)
        await ws.send("after")
        assert await ws.recv() == "after"
        assert asyncio.ensure_future(pong).done()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_an_upstreams_ping_with_the_old_keepalive_payload_gets_its_pong(
    uvicorn_server: UvicornFactory, connector: str
) -> None:
    """The client answers the upstream's ping before its next message: the upstream has the pong by then."""
    async with _upstream() as upstream, await _client(upstream, connector, uvicorn_server) as ws:
        await ws.send("ping me")
        assert await ws.recv() == "pinged"
        await ws.send("next")
        assert await ws.recv() == "pong came: True"


def test_each_connection_pings_with_its_own_payload() -> None:
    """Random, 8 bytes: no two connections (and no endpoint reading the source) share one."""
    payloads = {ping_payload() for _ in range(1000)}
    assert len(payloads) == 1000 and {len(p) for p in payloads} == {8} and OLD_PAYLOAD not in payloads
