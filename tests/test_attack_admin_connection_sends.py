"""An admin-token holder sends messages to a client that reads nothing: every call is answered on time,
one message per connection waits in memory, and an open connection is never reported as gone.

Before: each send waited for the client to read (until the relay dropped it, 20 s later), the API
answered ``404 no open connection`` once the bus gave up after 3 s (a single worker: not at all
until then), and every such send kept its message in the worker: 400 sends of 1 MB to one client
took a worker from 94 to 565 MB under ``run``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from asgi_ws_gateway.management import live_connections
from asgi_ws_gateway.management.bus import Answers, Command, LocalBus
from asgi_ws_gateway.management.errors import Conflict, NotFound, Unavailable
from asgi_ws_gateway.management.live_connections import LiveConnections
from support.management import Managed, api, managed_gateway
from support.upstream import UpstreamServer

MB = 1_000_000


class _StuckGateway:
    """One open connection whose client reads nothing until ``release`` is set."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.release = asyncio.Event()
        self.open = True

    def connections(self) -> list[Any]:
        return [SimpleNamespace(id="c1")]

    async def send_to_connection(self, connection_id: str, data: str | bytes) -> bool:
        self.sent.append(data)
        await self.release.wait()
        return self.open


async def _live(gateway: _StuckGateway) -> LiveConnections:
    bus = LocalBus()
    live = LiveConnections(gateway, bus)  # type: ignore[arg-type]
    await bus.start(live.answer)
    return live


async def test_a_send_to_a_client_that_reads_nothing_is_answered_and_the_next_waits_its_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live_connections, "SEND_ANSWER_WAIT", 0.05)
    gateway = _StuckGateway()
    live = await _live(gateway)
    async with asyncio.timeout(2):  # before: the first send waited for the client for ever
        await live.send("c1", "first")
        for data in ("second", b"third"):
            with pytest.raises(Conflict, match="has not yet read the last message"):
                await live.send("c1", data)
    assert gateway.sent == ["first"]  # held in memory: one message, not one per call
    gateway.release.set()
    await asyncio.sleep(0.01)  # the first is delivered: the next one goes
    async with asyncio.timeout(2):
        await live.send("c1", "fourth")
    assert gateway.sent == ["first", "fourth"]


async def test_a_send_that_finds_the_connection_closing_is_409_and_a_failed_one_frees_its_turn(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(live_connections, "SEND_ANSWER_WAIT", 0.5)
    gateway = _StuckGateway()
    gateway.release.set()
    gateway.open = False
    live = await _live(gateway)
    with pytest.raises(Conflict, match="is closing"):
        await live.send("c1", "x")

    async def failing(connection_id: str, data: str | bytes) -> bool:
        raise OSError("broken pipe")

    gateway.send_to_connection = failing  # type: ignore[method-assign]
    for _ in range(2):  # the failed send is not left in flight
        with pytest.raises(Conflict, match="is closing"):
            await live.send("c1", "x")
    assert "sending to a connection failed" in caplog.text


async def test_workers_that_do_not_answer_are_503_not_404() -> None:
    class SilentBus(LocalBus):
        async def gather(self, command: Command, **_: Any) -> Answers:
            return Answers([{"found": False}], 2)  # one worker answered, the other did not in time

    live = LiveConnections(_StuckGateway(), SilentBus())  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="1 of 2 worker"):
        await live.send("c1", "x")
    with pytest.raises(Unavailable):
        await live.kick("c1")

    class AllAnswered(LocalBus):
        async def gather(self, command: Command, **_: Any) -> Answers:
            return Answers([{"found": False}, {"found": False}], 2)

    with pytest.raises(NotFound):
        await LiveConnections(_StuckGateway(), AllAnswered()).send("c1", "x")  # type: ignore[arg-type]


@pytest.fixture(params=[False, "auto"], ids=["passthrough-false", "passthrough-auto"])
def managed(request: pytest.FixtureRequest, upstream: UpstreamServer, tmp_path: Path) -> Iterator[Managed]:
    config = {"apis": [api("echo", "/ws/echo", upstream, passthrough=request.param)]}
    with managed_gateway(config, tmp_path / "state.json") as running:
        yield running


def _client_that_reads_nothing(managed: Managed) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", managed.server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


async def test_megabyte_sends_to_a_client_that_reads_nothing_end_in_409_each_on_time(managed: Managed) -> None:
    sock = await asyncio.to_thread(_client_that_reads_nothing, managed)
    try:
        async with managed.http() as http:
            for _ in range(50):
                listed = (await http.get("connections")).json()["connections"]
                if listed:
                    break
                await asyncio.sleep(0.05)
            connection = listed[0]["id"]
            statuses: list[int] = []
            for _ in range(30):  # the kernel's buffers take a few megabytes; then the client must read
                started = time.monotonic()
                answer = await http.post(f"connections/{connection}/messages", json={"text": "x" * MB})
                assert time.monotonic() - started < 2.5, statuses  # before: no answer until the client left
                statuses.append(answer.status_code)
                if answer.status_code == 409:
                    assert "has not yet read the last message" in answer.json()["detail"]
                    break
            assert statuses[-1] == 409 and set(statuses[:-1]) <= {200}, statuses
            assert len(statuses) <= 20, statuses
            again = await http.post(f"connections/{connection}/messages", json={"text": "x"})
            assert again.status_code == 409  # still open, still not reading: never "no open connection"
    finally:
        sock.close()
