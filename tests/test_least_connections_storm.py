"""least-connections under a reconnect storm, with real uvicorn and real upstream servers whose 101 is held
until every client of the storm has arrived: a backend's connects in progress count, so the clients that
arrive together spread over the backends instead of all taking the one that had the fewest connections."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from support.clients import connect
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.servers import UvicornFactory

HELD = 4
"""Clients on the backend that stayed up, before the storm."""
STORM = 20
"""Clients arriving at once once the other backend is back."""


@dataclass
class _Arrivals:
    """Handshakes held at every upstream until ``expected`` of them have arrived (0: none held)."""

    expected: int = 0
    seen: dict[str, int] = field(default_factory=lambda: {"up": 0, "restarted": 0})
    everyone: asyncio.Event = field(default_factory=asyncio.Event)

    def hold(self, name: str) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
        async def process_request(connection: ServerConnection, request: Request) -> Response | None:
            self.seen[name] += 1
            if self.expected and sum(self.seen.values()) >= self.expected:
                self.everyone.set()
            if self.expected:
                await self.everyone.wait()
            return None

        return process_request


async def _echo(ws: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            await ws.send(message)


@contextlib.asynccontextmanager
async def _upstream(arrivals: _Arrivals, name: str, sock: socket.socket) -> AsyncIterator[None]:
    sock.listen()
    async with serve(_echo, sock=sock, process_request=arrivals.hold(name)):
        yield


async def _echoes(url: str) -> ClientConnection:
    ws = await connect(url)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_clients_arriving_together_spread_over_the_backends(
    uvicorn_server: UvicornFactory, connector: str
) -> None:
    """One backend down while 4 clients connect (they all go to the other); it comes back, and 20 clients
    arrive at once, each upstream holding its 101 until all 20 are there. Each backend ends with at most half
    the 24, plus one (before: the 20 all went to the restarted backend, its 0 connections the fewest)."""
    arrivals = _Arrivals()
    up_sock, restarted_sock = socket.socket(), socket.socket()
    with up_sock, restarted_sock:
        for sock in (up_sock, restarted_sock):
            sock.bind(("127.0.0.1", 0))  # bound, not listening: a connect to it is refused (the backend is down)
        ports = [s.getsockname()[1] for s in (restarted_sock, up_sock)]
        entry = {
            "name": "h", "path": "/h", "upstreams": [f"ws://127.0.0.1:{p}/" for p in ports],
            "balancing": "least-connections", "unhealthy_after": 100, **CONNECTORS[connector],
        }  # fmt: skip
        url = uvicorn_server(ProbedGateway({"apis": [entry]}), ws=PASSTHROUGH).url("/h")
        clients: list[ClientConnection] = []
        try:
            async with _upstream(arrivals, "up", up_sock):
                clients += [await _echoes(url) for _ in range(HELD)]
                assert arrivals.seen == {"up": HELD, "restarted": 0}
                async with _upstream(arrivals, "restarted", restarted_sock):
                    arrivals.expected, arrivals.seen = STORM, {"up": 0, "restarted": 0}
                    async with asyncio.timeout(20):
                        clients += await asyncio.gather(*(_echoes(url) for _ in range(STORM)))
                    total = {"up": HELD + arrivals.seen["up"], "restarted": arrivals.seen["restarted"]}
                    assert max(total.values()) <= math.ceil((HELD + STORM) / 2) + 1, total
        finally:
            for client in clients:
                await client.close()
