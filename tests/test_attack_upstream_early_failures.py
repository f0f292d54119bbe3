"""A backend that completes every handshake and then fails the connection at once is a failing backend.

An attack pass saw a backend answer each handshake with 101 and then close with 1011 (or send a bad
frame, or reset): passive health counted only failed connects, so it never cooled down, and
least-connections, seeing it with no connections, sent it 9 clients of 10. Now a connection its
upstream fails within ``TRIAL_PERIOD`` of its 101 counts against its backend like a failed connect
(upstream/balancing.py ``Trial``), on every connector; the client's close, the upstream's normal
close and the gateway's own close do not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import asgi_ws_gateway.upstream.balancing as balancing
from asgi_ws_gateway.config.apis import ApiConfig
from asgi_ws_gateway.upstream.balancing import Backend, BackendPool, upstream_failed
from support.access import ACCESS_LOGGER, access_line
from support.clients import connect, expect_close
from support.configs import write_config
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS, Handler, hostile_upstream  # noqa: F401 - the fixture hostile
from support.processes import GatewayProcess
from support.rawhttp import accept_upstream, ws_frame
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

CLIENTS = 12
COOLED = "failed 3 times in a row; skipped for 3600 s"


async def _close_1011(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_upstream(reader, writer, then=ws_frame(8, struct.pack("!H", 1011) + b"boom", mask=False))
    await reader.read(1)  # the answer to its close
    writer.close()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_upstream(reader, writer)
    writer.transport.abort()


async def _bad_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_upstream(reader, writer, then=ws_frame(3, b"x", mask=False))  # a reserved opcode
    await reader.read(1)  # the gateway's close (1002)
    writer.close()


async def _close_normally(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await accept_upstream(reader, writer, then=ws_frame(8, struct.pack("!H", 1000) + b"bye", mask=False))
    await reader.read(1)
    writer.close()


async def _close_4401(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The application's own refusal after the 101 (a client's bad token, say)."""
    await accept_upstream(reader, writer, then=ws_frame(8, struct.pack("!H", 4401) + b"no", mask=False))
    await reader.read(1)
    writer.close()


BAD = {"close 1011": _close_1011, "reset": _reset, "bad frame": _bad_frame}


def _gateway(upstreams: list[str], connector: str, **api: Any) -> ProbedGateway:
    entry = {"name": "h", "path": "/h", "upstreams": upstreams, "close_timeout": 2, **CONNECTORS[connector], **api}
    return ProbedGateway({"apis": [entry]})


async def _open(url: str) -> ClientConnection | None:
    """A client that stays: its connection if the echo answers, None if the gateway closed it."""
    ws = await connect(url)
    try:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    except ConnectionClosed:
        return None
    return ws


async def _gone(gateway: ProbedGateway, left: int) -> None:
    """Wait until the gateway holds ``left`` connections: the failed one's end is judged."""
    async with asyncio.timeout(5):
        while gateway.gateway.open_connections != left:  # noqa: ASYNC110 - the server thread's state
            await asyncio.sleep(0.01)


async def _clients(gateway: ProbedGateway, url: str) -> list[str]:
    """CLIENTS clients one after another, each staying connected; which backend served each."""
    held: list[ClientConnection] = []
    outcomes = []
    try:
        for _ in range(CLIENTS):
            ws = await _open(url)
            if ws is None:
                outcomes.append("bad")
                await _gone(gateway, len(held))
            else:
                outcomes.append("good")
                held.append(ws)
    finally:
        for ws in held:
            await ws.close()
    return outcomes


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("bad", list(BAD))
async def test_least_connections_cools_a_backend_that_fails_every_connection_after_its_101(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    caplog: pytest.LogCaptureFixture,
    connector: str,
    bad: str,
) -> None:
    """Three clients fail on it; then every client reaches the good backend, and one WARNING says why."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    bad_url = f"ws://127.0.0.1:{await hostile(BAD[bad])}/"
    gateway = _gateway([upstream.url("/echo"), bad_url], connector, balancing="least-connections", cooldown=3600)
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    outcomes = await _clients(gateway, url)
    assert outcomes == ["good", "bad", "bad", "bad"] + ["good"] * (CLIENTS - 4)
    assert sum(COOLED in r.getMessage() and bad_url in r.getMessage() for r in caplog.records) == 1
    await gateway.settle()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_round_robin_cools_a_backend_that_resets_every_connection_after_its_101(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    caplog: pytest.LogCaptureFixture,
    connector: str,
) -> None:
    """Every other client fails until the third failure; after it, all reach the good backend."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")
    bad_url = f"ws://127.0.0.1:{await hostile(_reset)}/"
    gateway = _gateway([upstream.url("/echo"), bad_url], connector, cooldown=3600)
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    outcomes = await _clients(gateway, url)
    assert outcomes == ["good", "bad"] * 3 + ["good"] * (CLIENTS - 6)
    assert any(COOLED in r.getMessage() for r in caplog.records)
    await gateway.settle()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_failed_connection_is_judged_before_its_access_line_and_before_it_leaves_the_count(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
) -> None:
    """The access line is a connection's last: once it is written, or the connection no longer counted, the
    backend's "failed" line is there and the failure recorded. The gateway wrote the access line and removed
    the connection first, then judged it: a reader waiting for either (a test, from another thread) could
    find the line and the failure missing (the keepalive test's "failed" line, suspected flaky under load)."""
    caplog.set_level(logging.INFO)
    gateway = _gateway([f"ws://127.0.0.1:{await hostile(_close_1011)}/"], connector, unhealthy_after=5)
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    async with await connect(url) as ws:
        await expect_close(ws)
    await access_line(caplog)
    names = [
        r.name for r in caplog.records if r.name == ACCESS_LOGGER or "failed: it failed a connection" in r.getMessage()
    ]
    assert names == ["asgi_ws_gateway.upstream.balancing", ACCESS_LOGGER]
    await gateway.settle()  # no connection counted
    (backend,) = gateway.gateway._apis["h"].pool.backends
    assert (backend.failures, backend.active) == (1, 0)


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("handler", [_close_normally, _close_4401], ids=["1000", "4401"])
async def test_an_upstream_that_closes_normally_or_with_its_own_code_is_healthy(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, handler: Handler
) -> None:
    """1000 at once (nothing to serve) or an application code (a refusal after the 101): its answer."""
    gateway = _gateway([f"ws://127.0.0.1:{await hostile(handler)}/"], connector, unhealthy_after=1)
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    for _ in range(3):
        async with await connect(url) as ws:
            await expect_close(ws)
        await gateway.settle()
    (backend,) = gateway.gateway._apis["h"].pool.backends
    assert (backend.failures, backend.cooling_until) == (0, 0.0)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_the_gateways_own_close_and_the_clients_count_against_no_backend(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, connector: str
) -> None:
    """An idle timeout, a management kick and a client's close at once leave the backend healthy."""
    gateway = _gateway([upstream.url("/echo")], connector, unhealthy_after=1, idle_timeout=0.2)
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    async with await connect(url) as ws:
        assert await expect_close(ws) == (1001, "idle timeout")
    # The first connection is listed until its upstream side has closed too (the splice's close wait):
    # the kick below is for the second alone (it found two 5 of 8 times under load).
    await gateway.settle()
    async with await connect(url) as ws:
        (live,) = gateway.gateway.connections()
        await gateway.on_server(lambda: gateway.gateway.close_connection(live.id, 1011, "kicked"))
        assert await expect_close(ws) == (1011, "kicked")
    async with await connect(url) as ws:
        await ws.close(1011, "client error")
    await gateway.settle()
    (backend,) = gateway.gateway._apis["h"].pool.backends
    assert (backend.failures, backend.cooling_until) == (0, 0.0)


async def test_under_asgi_ws_gateway_run_the_failing_backend_is_cooled_and_logged(
    hostile: Callable[[Handler], Awaitable[int]], upstream: UpstreamServer, tmp_path: Path
) -> None:
    """The finding as reported, end to end: ``asgi-ws-gateway run``, least-connections, 101 then 1011."""
    bad_url = f"ws://127.0.0.1:{await hostile(_close_1011)}/"
    api = {"name": "h", "path": "/h", "upstreams": [upstream.url("/echo"), bad_url],
           "balancing": "least-connections", "cooldown": 3600, "close_timeout": 2}  # fmt: skip
    config = write_config(tmp_path, {"apis": [api]})
    log = tmp_path / "gateway.log"
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log, log_level="info") as gateway:
        url = gateway.url("/h")
        held: list[ClientConnection] = []
        outcomes = []
        for _ in range(CLIENTS):
            ws = await _open(url)
            outcomes.append("bad" if ws is None else "good")
            if ws is not None:
                held.append(ws)
            elif outcomes.count("bad") == 3:
                # The third failure's end is judged when the gateway's access line for it is written.
                async with asyncio.timeout(5):
                    while COOLED not in log.read_text():  # noqa: ASYNC110 - another process's log
                        await asyncio.sleep(0.02)
        for ws in held:
            await ws.close()
    assert outcomes.count("bad") <= 4  # the third's verdict may trail the next handshake by a close
    assert outcomes[-6:] == ["good"] * 6
    assert log.read_text().count(COOLED) == 1


@dataclass
class _End:
    closed_by: str | None
    close_code: int | None
    close_reason: str = ""
    messages_in_at_close: int = 0


@pytest.mark.parametrize(
    ("end", "verdict"),
    [
        (_End("upstream", 1011, "internal error"), True),
        (_End("upstream", 1006), True),  # reset, EOF without a close frame, the splice's keepalive
        (_End("upstream", 1002, "invalid opcode"), True),  # the relay's websockets client found its frame bad
        (_End("upstream", 1014), True),
        (_End("gateway", 1011, "upstream connection failed"), True),  # the splice found its frame bad
        (_End("upstream", 1000), False),
        (_End("upstream", 1001, "going away"), True),  # accepted, then cannot serve
        (_End("upstream", 1012, "service restart"), True),
        (_End("upstream", 1013, "try again later"), False),  # an answer to the request's values ("room full")
        (_End("upstream", 1003), False),  # a client's binary message to a text-only app
        (_End("upstream", 1008), False),
        (_End("upstream", 4401), False),
        (_End("upstream", 1011, "internal error", messages_in_at_close=1), None),  # a client's message drew it
        (_End("upstream", 1014, messages_in_at_close=1), None),
        (_End("upstream", 1001, messages_in_at_close=1), None),  # a "bye" answered
        (_End("upstream", 1012, messages_in_at_close=1), None),
        (_End("upstream", 1013, messages_in_at_close=1), False),  # a rate limit's answer
        (_End("upstream", 1006, messages_in_at_close=3), True),  # vanished: no application's answer
        (_End("gateway", 1011, "upstream connection failed", messages_in_at_close=2), True),  # its own bad frame
        (_End("client", 1006), False),
        (_End("gateway", 1001, "idle timeout"), None),
        (_End("gateway", 1001, "upstream message too big"), None),
        (_End("gateway", 1011, "gateway error"), None),
        (_End("gateway", 1012, "server shutting down"), None),
        (_End(None, None), None),  # the client left before the accept
    ],
)
def test_upstream_failed_reads_whose_failure_an_end_was(end: _End, verdict: bool | None) -> None:
    """True: the backend's failure; False: it served the connection; None: no word on the backend."""
    assert upstream_failed(end) is verdict


async def test_a_connection_that_lives_past_its_trial_resets_the_streak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two failures, then a connection that outlives its trial: the next failure is the first again."""
    monkeypatch.setattr(balancing, "TRIAL_PERIOD", 0.0)
    api = ApiConfig.model_validate({"name": "h", "path": "/h", "upstreams": ["ws://a/"]})
    backend = Backend("a", connector=None, index=0)  # type: ignore[arg-type]
    pool = BackendPool(api, [backend])
    backend.failures = 2
    trial = pool.opened(backend)
    async with asyncio.timeout(5):
        while backend.failures:  # noqa: ASYNC110 - the trial's timer, due at once
            await asyncio.sleep(0.001)
    trial.ended(_End("upstream", 1011))  # after its trial: no word on the backend any more
    assert (backend.failures, backend.active) == (0, 0)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_client_whose_messages_make_healthy_apps_raise_cools_no_backend(
    uvicorn_server: UvicornFactory, caplog: pytest.LogCaptureFixture, connector: str
) -> None:
    """A healthy application closes with 1011 when a message makes its handler raise: an attack pass sent
    "not json" to 5 connections in a row, and both backends sat out in turn (all clients on the last one)."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.upstream.balancing")

    def app(name: str) -> Callable[[ServerConnection], Awaitable[None]]:
        async def strict_json(connection: ServerConnection) -> None:
            async for message in connection:
                await connection.send(f"{name}:{json.loads(message)}")  # bad JSON raises: websockets closes 1011

        return strict_json

    async with serve(app("A"), "127.0.0.1", 0) as a, serve(app("B"), "127.0.0.1", 0) as b:
        urls = [f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/" for server in (a, b)]
        gateway = _gateway(urls, connector, cooldown=3600)
        url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
        for _ in range(3 * len(urls)):
            async with await connect(url) as attacker:
                await attacker.send("not json")
                assert (await expect_close(attacker))[0] == 1011
        served = []
        for _ in range(4):
            async with await connect(url) as client:
                await client.send("1")
                served.append((await client.recv())[0])
    assert sorted(served) == ["A", "A", "B", "B"]  # round-robin still spreads them
    assert not any("in a row" in r.getMessage() for r in caplog.records)
    await gateway.settle()
