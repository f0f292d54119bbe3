"""A backend that accepts and at once says it cannot serve (1001, 1012) is a failing backend.

An attack pass saw a backend answer each handshake with 101 and then close with 1001 "going away",
1012 "service restart" or 1013 "try again later": the trial counted each such connection as served,
so the backend never cooled down, and least-connections, seeing it with no connections, sent it 19
clients of 20 (round-robin: every other one). Now such a close before the client sent anything
counts against the backend on every connector (upstream/balancing.py ``upstream_failed``), whatever
the upstream sent first; after a client's message it is the application's answer and says nothing.
1013 is not counted: an application answers a handshake's own values with it ("room full" for
``?room=x``), and a re-attack pass cooled a healthy backend by asking for a full room three times.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from support.clients import connect, expect_close
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS, Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.servers import UvicornFactory

CLIENTS = 10
UNAVAILABLE = [1001, 1012]
COOLED = "failed 3 times in a row; skipped for 3600 s"


def _closing(code: int, *, greeting: bytes = b"") -> Handler:
    """A raw upstream that accepts, sends ``greeting`` (a text message, if any), then closes with ``code``."""
    first = ws_frame(1, greeting, mask=False) if greeting else b""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer, then=first + ws_frame(8, struct.pack("!H", code) + b"later", mask=False))
        await reader.read(1)  # the answer to its close
        writer.close()

    return handler


@asynccontextmanager
async def _serving() -> AsyncIterator[str]:
    """A healthy upstream: greets each client with "served" (the client need send nothing), then echoes."""

    async def greet_then_echo(connection: ServerConnection) -> None:
        await connection.send("served")
        async for message in connection:
            await connection.send(message)

    async with serve(greet_then_echo, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


def _gateway(upstreams: list[str], connector: str, **api: Any) -> ProbedGateway:
    entry = {"name": "h", "path": "/h", "upstreams": upstreams, "close_timeout": 2, "cooldown": 3600,
             **CONNECTORS[connector], **api}  # fmt: skip
    return ProbedGateway({"apis": [entry]})


async def _clients(gateway: ProbedGateway, url: str) -> list[str]:
    """CLIENTS clients one after another, each sending nothing and staying connected if served; which
    backend served each. After a failed one, waits until the gateway has judged its end."""
    held: list[ClientConnection] = []
    outcomes = []
    try:
        for _ in range(CLIENTS):
            ws = await connect(url)
            try:
                first = await ws.recv()
            except ConnectionClosed:
                first = None
            if first == "served":
                outcomes.append("good")
                held.append(ws)
                continue
            outcomes.append("bad")
            await expect_close(ws)
            async with asyncio.timeout(5):
                while gateway.gateway.open_connections != len(held):  # noqa: ASYNC110 - the server thread's state
                    await asyncio.sleep(0.01)
    finally:
        for ws in held:
            await ws.close()
    return outcomes


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("code", UNAVAILABLE)
async def test_least_connections_cools_a_backend_that_closes_as_unavailable_after_its_101(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
    code: int,
) -> None:
    """Three clients fail on it; then every client reaches the healthy backend, and one WARNING says why."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    bad_url = f"ws://127.0.0.1:{await hostile(_closing(code))}/"
    async with _serving() as good_url:
        gateway = _gateway([good_url, bad_url], connector, balancing="least-connections")
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        outcomes = await _clients(gateway, url)
        await gateway.settle()
    assert outcomes == ["good", "bad", "bad", "bad"] + ["good"] * (CLIENTS - 4)
    assert sum(COOLED in r.getMessage() and bad_url in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("code", UNAVAILABLE)
async def test_round_robin_cools_a_backend_that_greets_then_closes_as_unavailable(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, code: int
) -> None:
    """The upstream's own message before its close changes nothing: every other client fails until the
    third failure, then all reach the healthy backend."""
    bad_url = f"ws://127.0.0.1:{await hostile(_closing(code, greeting=b'welcome'))}/"
    async with _serving() as good_url:
        gateway = _gateway([good_url, bad_url], connector)
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        outcomes = await _clients(gateway, url)
        await gateway.settle()
    assert outcomes == ["good", "bad"] * 3 + ["good"] * (CLIENTS - 6)


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("code", UNAVAILABLE)
async def test_an_unavailable_close_answering_a_clients_message_cools_no_backend(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, code: int
) -> None:
    """A healthy application may answer a message with 1001 (a "bye") or 1013 (a rate limit): were that
    counted, any client could cool every backend in turn."""

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upstream(reader, writer)
        await reader.read(1)  # the first byte of the client's message: it arrived
        writer.write(ws_frame(8, struct.pack("!H", code) + b"bye", mask=False))
        await reader.read(65536)
        writer.close()

    port = await hostile(answer_then_close)
    gateway = _gateway([f"ws://127.0.0.1:{port}/"], connector, unhealthy_after=1)
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    for _ in range(3):
        async with await connect(url) as ws:
            await ws.send("bye")
            assert (await expect_close(ws))[0] == code
        await gateway.settle()
    (backend,) = gateway.gateway._apis["h"].pool.backends
    assert (backend.failures, backend.cooling_until) == (0, 0.0)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_try_again_later_at_once_cools_no_backend(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str
) -> None:
    """1013 right after the 101, before any message: the answer to a request's values, not a failure."""
    port = await hostile(_closing(1013))
    gateway = _gateway([f"ws://127.0.0.1:{port}/"], connector, unhealthy_after=1)
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    for _ in range(3):
        async with await connect(url) as ws:
            assert (await expect_close(ws))[0] == 1013
        await gateway.settle()
    (backend,) = gateway.gateway._apis["h"].pool.backends
    assert (backend.failures, backend.cooling_until) == (0, 0.0)
