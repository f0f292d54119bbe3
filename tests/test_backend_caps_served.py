"""Backend caps under real uvicorn (the gateway's protocol) in front of real upstream WebSocket servers, for
each connector (splice, frame relay, relay) and an in-process ``asgi:`` upstream: a backend at its
``max_connections`` is skipped, every backend full is a 503 ``upstream_full`` (problem+json, Retry-After, one
WARNING, the handshake span's ``error.type``), connects past ``max_connecting`` wait their turn or get 503
``upstream_queue_timeout``, and every way a connection ends gives its slot back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.upstream.balancing import BackendPool
from support.clients import connect, expect_close, expect_status
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.servers import UvicornFactory
from support.telemetry import refused_url
from support.upstream import UpstreamServer

GATEWAY_LOGGER = "asgi_ws_gateway.middleware"


def _served(
    uvicorn_server: UvicornFactory, upstreams: list[Any], connector: str, **api: Any
) -> tuple[ProbedGateway, str]:
    entry = {"name": "h", "path": "/h", "upstreams": upstreams, **CONNECTORS[connector], **api}
    gateway = ProbedGateway({"apis": [entry]})
    return gateway, uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")


def _pool(gateway: ProbedGateway) -> BackendPool:
    return gateway.gateway._apis["h"].pool


async def _settled(gateway: ProbedGateway) -> list[int]:
    """The backends' slots once no connection or connect holds one (fails after 5 s with what is held)."""
    pool = _pool(gateway)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while any(b.connections for b in pool.backends) or pool.connecting.in_flight:  # noqa: ASYNC110 - another loop's counts
                await asyncio.sleep(0.01)
    return [b.connections for b in pool.backends] + [pool.connecting.in_flight, pool.connecting.waiting]


async def _echoes(url: str) -> Any:
    ws = await connect(url)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws


@contextlib.asynccontextmanager
async def _gated_upstream() -> AsyncIterator[tuple[int, asyncio.Event, list[str]]]:
    """A real websockets upstream (on the test's loop) that holds each handshake's 101 until the event is set;
    the list gets each request's path as it arrives."""
    release, arrived = asyncio.Event(), []

    async def hold(connection: ServerConnection, request: Request) -> Response | None:
        arrived.append(request.path)
        await release.wait()
        return None

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the gateway drops what it refused at accept
            async for message in ws:
                await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, process_request=hold) as server:
        try:
            yield server.sockets[0].getsockname()[1], release, arrived
        finally:
            release.set()


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - another loop's or server's state
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_full_backend_is_skipped_then_every_one_full_is_503(
    uvicorn_server: UvicornFactory, connector: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A: cap 1, B: cap 2. Clients 1-3 go to A, B, and (A full) B; the fourth: 503 upstream_full, problem+json,
    Retry-After, one WARNING naming the API and its backends, the fifth refused without another line. A
    client gone frees A's slot for the next."""
    caplog.set_level(logging.WARNING, logger=GATEWAY_LOGGER)
    with UpstreamServer() as a, UpstreamServer() as b:
        upstreams = [{"url": a.url("/echo"), "max_connections": 1}, {"url": b.url("/echo"), "max_connections": 2}]
        gateway, url = _served(uvicorn_server, upstreams, connector)
        clients = [await _echoes(url) for _ in range(3)]
        assert (len(a.handshakes), len(b.handshakes)) == (1, 2)
        status, headers, body = await expect_status(url)
        assert (status, headers["retry-after"], headers["content-type"]) == (503, "5", "application/problem+json")
        assert json.loads(body)["status"] == 503
        assert (await expect_status(url))[0] == 503
        lines = [r.getMessage() for r in caplog.records if "upstream_full" in r.getMessage()]
        assert len(lines) == 1 and "API h" in lines[0] and f"{a.url('/echo')} (1 of 1)" in lines[0], lines
        await clients[0].close()
        await _until(lambda: _pool(gateway).backends[0].connections == 0)
        clients[0] = await _echoes(url)
        assert len(a.handshakes) == 2
        for client in clients:
            await client.close()
        assert await _settled(gateway) == [0, 0, 0, 0]


async def test_the_refusal_is_on_the_handshake_span(
    uvicorn_server: UvicornFactory, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    with UpstreamServer() as upstream:
        entry = {"name": "h", "path": "/h", "upstreams": [{"url": upstream.url("/echo"), "max_connections": 1}]}
        gateway = ProbedGateway({"apis": [entry]}, tracer_provider=provider)
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        async with await connect(url):
            assert (await expect_status(url))[0] == 503
    refused = [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("error.type") == "upstream_full"]
    assert len(refused) == 1 and refused[0].attributes["http.response.status_code"] == 503  # type: ignore[index]


async def _client_closes(base: str, upstream: UpstreamServer) -> None:
    ws = await _echoes(base + "/echo/x")
    await ws.close()


async def _upstream_closes(base: str, upstream: UpstreamServer) -> None:
    ws = await connect(base + "/close/4001")
    await ws.send("bye")
    assert (await expect_close(ws))[0] == 4001


async def _upstream_refuses(base: str, upstream: UpstreamServer) -> None:
    assert (await expect_status(base + "/reject/403"))[0] == 403


async def _upstream_vanishes(base: str, upstream: UpstreamServer) -> None:
    ws = await _echoes(base + "/echo/x")
    upstream.kill_connections()
    assert (await expect_close(ws))[0] == 1011


async def _client_vanishes(base: str, upstream: UpstreamServer) -> None:
    ws = await _echoes(base + "/echo/x")
    ws.transport.abort()


ENDS = {
    "client closes": _client_closes,
    "upstream closes": _upstream_closes,
    "upstream refuses": _upstream_refuses,
    "upstream vanishes": _upstream_vanishes,
    "client vanishes": _client_vanishes,
}


@pytest.mark.parametrize("end", list(ENDS))
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_each_end_gives_the_slot_back(uvicorn_server: UvicornFactory, connector: str, end: str) -> None:
    with UpstreamServer() as upstream:
        backend = {"url": upstream.url("/{kind}/{arg}"), "max_connections": 1}
        entry = {"name": "h", "path": "/h/{kind}/{arg}", "upstreams": [backend], "max_connecting": 1,
                 **CONNECTORS[connector]}  # fmt: skip
        gateway = ProbedGateway({"apis": [entry]})
        base = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        await ENDS[end](base, upstream)
        assert await _settled(gateway) == [0, 0, 0]
        async with await connect(base + "/echo/again"):  # the one slot is free: admitted
            pass


@pytest.mark.parametrize("failure", ["timed out", "unreachable"])
@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_failed_connect_gives_the_slot_back(
    uvicorn_server: UvicornFactory, connector: str, failure: str
) -> None:
    """A connect past ``connect_timeout`` (504), or to a port nothing listens on (502): no slot stays held (a
    held one would count against the backend in least-connections' choice for good)."""
    with UpstreamServer() as upstream:
        url = upstream.url("/slow?delay=5") if failure == "timed out" else refused_url()
        gateway, base = _served(uvicorn_server, [url], connector, connect_timeout=0.2, balancing="least-connections")
        assert (await expect_status(base))[0] == (504 if failure == "timed out" else 502)
        assert await _settled(gateway) == [0, 0, 0]


async def test_a_client_gone_mid_connect_gives_the_slot_and_turn_back(uvicorn_server: UvicornFactory) -> None:
    async with _gated_upstream() as (port, release, arrived):
        backend = {"url": f"ws://127.0.0.1:{port}/", "max_connections": 1}
        gateway, url = _served(uvicorn_server, [backend], "splice", max_connecting=1)
        leaving = asyncio.create_task(connect(url))
        await _until(lambda: len(arrived) == 1)
        leaving.cancel()  # the client's socket closed while the upstream holds its 101
        await asyncio.gather(leaving, return_exceptions=True)
        assert await _settled(gateway) == [0, 0, 0]
        release.set()
        async with await connect(url):
            pass


async def test_a_connect_refused_at_accept_after_a_change_gives_its_slot_back(uvicorn_server: UvicornFactory) -> None:
    """The API changed while its upstream held the 101: the client gets 503 config_changed, the upstream is
    closed and its slot given back."""
    async with _gated_upstream() as (port, release, arrived):
        backend = {"url": f"ws://127.0.0.1:{port}/", "max_connections": 1}
        gateway, url = _served(uvicorn_server, [backend], "relay")
        refused = asyncio.create_task(expect_status(url))
        await _until(lambda: len(arrived) == 1)
        changed = {"apis": [{"name": "h", "path": "/h", "upstreams": [{**backend, "max_connections": 2}]}]}
        await gateway.on_server(lambda: gateway.gateway.apply_config(changed))
        release.set()
        assert (await refused)[0] == 503
        assert await _settled(gateway) == [0, 0, 0]


async def test_a_drain_gives_the_slots_back(uvicorn_server: UvicornFactory) -> None:
    with UpstreamServer() as upstream:
        backend = {"url": upstream.url("/echo"), "max_connections": 2}
        gateway, url = _served(uvicorn_server, [backend], "relay")
        clients = [await _echoes(url) for _ in range(2)]
        await gateway.on_server(lambda: gateway.gateway.drain(grace=1))
        assert [(await expect_close(ws))[0] for ws in clients] == [1001, 1001]
        assert await _settled(gateway) == [0, 0, 0]


async def test_a_drain_refuses_the_connects_in_flight_and_waiting_and_frees_their_turns(
    uvicorn_server: UvicornFactory,
) -> None:
    """max_connecting 1: one connect holds its turn (its upstream holds the 101), one waits; a drain meanwhile
    refuses both with 503 once they connect, their slots and turns given back."""
    async with _gated_upstream() as (port, release, arrived):
        backend = {"url": f"ws://127.0.0.1:{port}/", "max_connections": 2}
        gateway, url = _served(uvicorn_server, [backend], "splice", max_connecting=1)
        clients = [asyncio.create_task(expect_status(url))]
        await _until(lambda: len(arrived) == 1)
        clients.append(asyncio.create_task(expect_status(url)))
        await _until(lambda: _pool(gateway).connecting.waiting == 1)
        await gateway.on_server(lambda: gateway.gateway.drain(grace=1))
        release.set()
        assert [(await client)[0] for client in clients] == [503, 503]
        assert await _settled(gateway) == [0, 0, 0]


async def _echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message.get("text")})


async def test_an_in_process_upstream_is_capped_and_gives_its_slot_back(uvicorn_server: UvicornFactory) -> None:
    gateway, url = _served(uvicorn_server, [{"app": _echo_app, "max_connections": 1}], "relay")
    client = await _echoes(url)
    assert (await expect_status(url))[0] == 503
    await client.close()
    assert await _settled(gateway) == [0, 0, 0]
    async with await connect(url):
        pass


async def test_connects_past_max_connecting_wait_for_a_turn(uvicorn_server: UvicornFactory) -> None:
    """max_connecting 1 and an upstream that holds its 101: the second client's connect waits (the upstream
    sees one handshake at a time); both are served once it answers."""
    async with _gated_upstream() as (port, release, arrived):
        gateway, url = _served(uvicorn_server, [f"ws://127.0.0.1:{port}/"], "splice", max_connecting=1)
        first = asyncio.create_task(_echoes(url))
        await _until(lambda: len(arrived) == 1)
        second = asyncio.create_task(_echoes(url))
        await _until(lambda: _pool(gateway).connecting.waiting == 1)
        assert len(arrived) == 1
        release.set()
        clients = await asyncio.gather(first, second)
        assert len(arrived) == 2
        for client in clients:
            await client.close()
        assert await _settled(gateway) == [0, 0, 0]


async def test_a_connect_that_waits_past_connect_timeout_is_503(uvicorn_server: UvicornFactory) -> None:
    """The first client's handshake holds the one turn through both backends (each holds its 101 until
    connect_timeout): the second, waiting, gets 503 upstream_queue_timeout; the first 504."""
    async with _gated_upstream() as (port, _release, arrived):
        backends = [f"ws://127.0.0.1:{port}/a", f"ws://127.0.0.1:{port}/b"]
        gateway, url = _served(uvicorn_server, backends, "relay", max_connecting=1, connect_timeout=2)
        first = asyncio.create_task(expect_status(url))
        await _until(lambda: len(arrived) == 1)
        status, headers, _ = await expect_status(url)
        assert (status, headers["retry-after"]) == (503, "5")
        assert (await first)[0] == 504
        assert await _settled(gateway) == [0, 0, 0, 0]


async def test_a_configuration_change_applies_new_caps(uvicorn_server: UvicornFactory) -> None:
    """apply_config (what the management API calls): a raised cap admits at once, a lowered one refuses new
    connects and closes none; the counts carry over."""
    with UpstreamServer() as upstream:

        def config(cap: int) -> dict[str, Any]:
            return {"apis": [{"name": "h", "path": "/h", "upstreams": [{"url": upstream.url("/echo"),
                                                                        "max_connections": cap}]}]}  # fmt: skip

        gateway = ProbedGateway(config(1))
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        first = await _echoes(url)
        assert (await expect_status(url))[0] == 503
        await gateway.on_server(lambda: gateway.gateway.apply_config(config(2)))
        second = await _echoes(url)
        await gateway.on_server(lambda: gateway.gateway.apply_config(config(1)))
        assert (await expect_status(url))[0] == 503
        await first.send("still open")
        assert await first.recv() == "still open"
        await first.close()
        assert (await expect_status(url))[0] == 503  # one open, cap 1
        await second.close()
        assert await _settled(gateway) == [0, 0, 0]
