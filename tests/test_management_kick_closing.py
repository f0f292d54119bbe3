"""The management API's kick of a connection that is already closing: a 409 that says so, never a 200.

Found by a chaos probe (2026-12-07): ``POST /connections/{id}/close`` answered 200 ``{"closed": true}``
for a connection whose worker was draining at SIGHUP: the client got 1012, not the kick's code. Every
connector's ``close`` is a no-op once the connection is closing, and the answer said it had closed it
all the same. Whatever began the closing (an earlier kick, the client's close, the upstream's), the kick
now answers 409 and sends nothing; a kick that decides the close still answers 200. Each connector under
the gateway's protocol, a raw upstream that never answers a close frame holding the connection in its
closing handshake (``close_timeout`` far past the test); and through the Redis bus of ``run --workers 2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from asgi_ws_gateway.management import ManagementAPIError, ManagementClient
from asgi_ws_gateway.management.client_types import Connection
from asgi_ws_gateway.management.openapi import openapi_document
from support.configs import api_entry
from support.gateway import PASSTHROUGH
from support.hostile import CONNECTORS
from support.management import TOKEN, Managed, managed_gateway
from support.processes import Cli, Standalone, in_process_cli, standalone
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import close_frame_in, next_frame, raw_client_of

CLOSE_TIMEOUT = 60.0  # far past the tests' own bounds: the closing handshake is under way throughout
REDIS_URL = "redis://127.0.0.1:6379/0"

Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HoldsTheClose:
    """A raw upstream that says hello, reads every frame and never answers a close frame: ``closes`` holds
    the close frames it read (code, reason), ``closed`` is set at the first. :meth:`close` sends its own."""

    def __init__(self) -> None:
        self.closes: list[tuple[int, bytes]] = []
        self.closed = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await accept_upstream(reader, writer, then=ws_frame(1, b"hello", mask=False))
            while True:
                opcode, payload = await next_frame(reader)
                if opcode == 0x8:
                    self.closes.append((struct.unpack("!H", payload[:2])[0], payload[2:]))
                    self.closed.set()

    def close(self, code: int, reason: bytes) -> None:
        for writer in self.writers:
            writer.write(ws_frame(8, struct.pack("!H", code) + reason, mask=False))

    def abort_all(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


@pytest.fixture
async def holding() -> AsyncIterator[tuple[HoldsTheClose, int]]:
    upstream = HoldsTheClose()
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    try:
        yield upstream, int(server.sockets[0].getsockname()[1])
    finally:
        upstream.abort_all()
        server.close()
        await server.wait_closed()


@pytest.fixture(params=list(CONNECTORS))
def managed(request: pytest.FixtureRequest, holding: tuple[HoldsTheClose, int], tmp_path: Path) -> Iterator[Managed]:
    """The gateway's protocol in front of the holding upstream through each connector, management on."""
    _, port = holding
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", close_timeout=CLOSE_TIMEOUT,
                      **CONNECTORS[request.param])  # fmt: skip
    with managed_gateway({"apis": [entry]}, tmp_path / "state.json", ws=PASSTHROUGH) as running:
        yield running


@contextlib.asynccontextmanager
async def _client(managed: Managed, upstream: HoldsTheClose) -> AsyncIterator[tuple[Raw, str]]:
    """A raw client through the gateway, its upstream's hello read; yields its ends and the connection's id.
    At the end both ends are dropped and the connection is waited out of the gateway."""
    reader, writer = await raw_client_of(managed.url("/h"))
    try:
        assert await asyncio.wait_for(next_frame(reader), 5) == (1, b"hello")
        (connection,) = managed.gateway.connections()
        writer.write(ws_frame(1, b"hi"))  # through to the upstream: both sides relayed
        yield (reader, writer), connection.id
    finally:
        writer.transport.abort()
        upstream.abort_all()
        async with asyncio.timeout(10):
            while managed.gateway.connections():  # noqa: ASYNC110 - the server thread's state
                await asyncio.sleep(0.02)


async def _kick(http: httpx2.AsyncClient, connection_id: str, code: int, reason: str) -> httpx2.Response:
    return await http.post(f"connections/{connection_id}/close", json={"code": code, "reason": reason})


def _already_closing(answer: httpx2.Response, connection_id: str) -> None:
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["detail"].startswith(f"connection '{connection_id}' is already closing")
    assert "part way through a message" not in body["detail"]  # not the send's 409


async def test_a_kick_that_decides_the_close_answers_200_and_a_second_one_409(
    managed: Managed, holding: tuple[HoldsTheClose, int]
) -> None:
    upstream, _ = holding
    async with _client(managed, upstream) as ((reader, _), connection_id), managed.http() as http:
        first = await _kick(http, connection_id, 4001, "first")
        assert first.status_code == 200 and first.json()["closed"] is True
        assert await asyncio.wait_for(close_frame_in(reader), 5) == (4001, b"first")
        await asyncio.wait_for(upstream.closed.wait(), 5)
        # The upstream never answers: the connection is in its closing handshake, the first kick's.
        _already_closing(await _kick(http, connection_id, 4002, "second"), connection_id)
        assert upstream.closes == [(4001, b"first")]


async def test_a_kick_after_the_clients_close_answers_409(managed: Managed, holding: tuple[HoldsTheClose, int]) -> None:
    upstream, _ = holding
    async with _client(managed, upstream) as ((_, writer), connection_id), managed.http() as http:
        writer.write(ws_frame(8, struct.pack("!H", 4100) + b"bye"))
        await asyncio.wait_for(upstream.closed.wait(), 5)  # the client's close went on to the upstream
        _already_closing(await _kick(http, connection_id, 4002, "kicked"), connection_id)
        assert upstream.closes == [(4100, b"bye")]


async def test_a_kick_after_the_upstreams_close_answers_409(
    managed: Managed, holding: tuple[HoldsTheClose, int]
) -> None:
    upstream, _ = holding
    async with _client(managed, upstream) as ((reader, _), connection_id), managed.http() as http:
        upstream.close(4200, b"going")
        assert await asyncio.wait_for(close_frame_in(reader), 5) == (4200, b"going")  # unanswered by the client
        _already_closing(await _kick(http, connection_id, 4002, "kicked"), connection_id)
        assert all(code != 4002 for code, _ in upstream.closes)


@pytest.fixture
def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return in_process_cli(capsys, monkeypatch)


async def test_the_client_and_the_command_line_say_the_connection_is_already_closing(
    managed: Managed, holding: tuple[HoldsTheClose, int], in_process: Cli
) -> None:
    upstream, _ = holding
    async with _client(managed, upstream) as ((reader, _), connection_id), managed.client() as client:
        await client.kick(connection_id, 4001, "first")
        assert await asyncio.wait_for(close_frame_in(reader), 5) == (4001, b"first")
        with pytest.raises(ManagementAPIError) as refused:
            await client.kick(connection_id, 4002, "second")
        assert refused.value.status == 409
        assert refused.value.detail.startswith(f"connection '{connection_id}' is already closing")
        code, out, err = await in_process("connections", "kick", connection_id, "--code", "4003", "--url", managed.base)
        assert (code, out) == (5, "")  # conflict
        assert err.startswith(f"error: 409 Conflict: connection '{connection_id}' is already closing")


@contextlib.asynccontextmanager
async def _held_on_two_workers(
    tmp_path: Path, holding: tuple[HoldsTheClose, int], redis_prefix: str, connector: dict[str, Any]
) -> AsyncIterator[tuple[Standalone, Raw, Connection]]:
    """``run --workers 2`` on Redis in front of the holding upstream, both workers on the bus, and one raw
    client through it that got the upstream's hello: (the gateway, the client, its listing)."""
    upstream, port = holding
    api: dict[str, Any] = {"name": "h", "path": "/h", "upstreams": [f"ws://127.0.0.1:{port}/"],
                           "close_timeout": CLOSE_TIMEOUT, **connector}  # fmt: skip
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"apis": [api]}))
    async with standalone(config, "--redis", REDIS_URL, "--redis-prefix", redis_prefix, workers=2) as gateway:
        async with asyncio.timeout(30):
            while (await gateway.client.connection_listing()).expected < 2:  # noqa: ASYNC110 - other processes' state
                await asyncio.sleep(0.1)
        reader, writer = await raw_client_of(gateway.ws("/h"))
        try:
            assert await asyncio.wait_for(next_frame(reader), 5) == (1, b"hello")
            (live,) = await gateway.client.list_connections()
            yield gateway, (reader, writer), live
        finally:
            writer.transport.abort()
            upstream.abort_all()


async def test_through_the_redis_bus_a_second_kick_answers_409(
    tmp_path: Path, holding: tuple[HoldsTheClose, int], redis_prefix: str
) -> None:
    """``run --workers 2`` sharing Redis: every worker's answer, the holder's own included, travels as JSON
    through Redis (PUBLISH, then BLPOP on the reply list) and the worker that took the call answers for it."""
    upstream, _ = holding
    async with _held_on_two_workers(tmp_path, holding, redis_prefix, {}) as (gateway, (reader, writer), live):
        client = gateway.client
        assert await client.kick(live["id"], 4001, "first") == live["worker"]
        assert await asyncio.wait_for(close_frame_in(reader), 5) == (4001, b"first")
        with pytest.raises(ManagementAPIError) as refused:
            await client.kick(live["id"], 4002, "second")
        assert refused.value.status == 409
        assert refused.value.detail.startswith(f"connection '{live['id']}' is already closing")
        writer.transport.abort()
        upstream.abort_all()
        async with asyncio.timeout(10):
            while await client.list_connections():  # noqa: ASYNC110 - other processes' state
                await asyncio.sleep(0.05)


def test_the_openapi_document_lists_the_409_of_a_close() -> None:
    answers = openapi_document()["paths"]["/connections/{id}/close"]["post"]["responses"]
    assert "already closing" in answers["409"]["description"]
    assert "problem+json" in next(iter(answers["409"]["content"]))
    assert {"200", "404", "422", "503"} <= answers.keys()


async def test_a_kick_after_a_drain_answers_409(managed: Managed, holding: tuple[HoldsTheClose, int]) -> None:
    upstream, _ = holding
    async with _client(managed, upstream) as ((reader, _), connection_id), managed.client() as client:
        api = await client.get_api("h")
        await client.replace_api("h", {**api, "display_name": "changed"}, drain=True)
        code, _ = await asyncio.wait_for(close_frame_in(reader), 5)  # the drain's
        with pytest.raises(ManagementAPIError) as refused:
            await client.kick(connection_id, 4002, "kicked")
        assert (refused.value.status, code) == (409, managed.gateway.config.drain_close_code)
        assert refused.value.detail.startswith(f"connection '{connection_id}' is already closing")


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_kick_of_a_connection_its_worker_drains_at_sighup_answers_409(
    tmp_path: Path, holding: tuple[HoldsTheClose, int], redis_prefix: str, connector: str
) -> None:
    """The chaos probe's case: ``run --workers 2`` replaces each worker on SIGHUP; the old one sends its
    clients 1012 and waits for their upstreams' answers (never, here) while still on the bus. A kick
    then answered 200 ``{"closed": true}``: the client had got 1012, not the kick's code."""
    held = _held_on_two_workers(tmp_path, holding, redis_prefix, CONNECTORS[connector])
    async with held as (gateway, (reader, _), live):
        gateway.process.send_signal(signal.SIGHUP)
        assert (await asyncio.wait_for(close_frame_in(reader), 30))[0] == 1012  # its worker drains
        # A new connection: the client's kept one may be to a worker that is retiring (a read error).
        async with ManagementClient(gateway.url, token=TOKEN) as fresh:
            with pytest.raises(ManagementAPIError) as refused:
                await fresh.kick(live["id"], 4002, "kicked")
        assert refused.value.status == 409
        assert refused.value.detail.startswith(f"connection '{live['id']}' is already closing")
        assert refused.value.problems == [f"worker {live['worker']}: already closing"]
