"""``ws_gateway.upstream.connections`` of a backend a change removed while a client is connected through it.

A real ``asgi-ws-gateway run --management`` exporting to a real OTLP receiver, real upstreams, changes made
through the management API (no drain: the connection stays open). Before, the removed backend's series
left the export with the change, its client still connected: an operator saw the backend at 0 connections
(or, keeping the last point, at what it had at the change, for ever) while it still carried traffic. Now it
is observed on while its connections drain, then reads 0 until the next change forgets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from asgi_ws_gateway.telemetry import names as n
from support.clients import connect
from support.otlp import OtlpReceiver
from support.processes import Standalone, standalone
from support.signals import exporting_to
from support.upstream import UpstreamServer

METRIC = "ws_gateway.upstream.connections"
Snapshot = dict[tuple[str, str], float]
"""One export of the metric: (API, backend) to its value."""


def _snapshots(otlp: OtlpReceiver, since: int) -> list[Snapshot]:
    """The exports of the metric received after the first ``since`` points, each as one snapshot (an
    export's points of one metric arrive together)."""
    runs: list[Snapshot] = []
    last = -2
    for i, point in enumerate(otlp.points()[since:]):
        if point.metric != METRIC:
            continue
        if i != last + 1:
            runs.append({})
        key = (str(point.attributes[n.API]), str(point.attributes[n.BACKEND]))
        assert key not in runs[-1], f"two points of one series in one export: {key}"
        runs[-1][key] = point.value
        last = i
    return runs


def _exported(otlp: OtlpReceiver, since: int, wanted: Callable[[Snapshot], bool], timeout: float = 30) -> Snapshot:
    """The first export after ``since`` that ``wanted`` accepts (the reader exports every 200 ms), not counting
    the first: it may have been collected before ``since`` (the next is collected once it was received)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for snapshot in _snapshots(otlp, since)[1:]:
            if wanted(snapshot):
                return snapshot
        time.sleep(0.05)
    raise AssertionError(f"no such export of {METRIC} in {timeout} s; got {_snapshots(otlp, since)[-3:]}")


async def _echoing(url: str) -> ClientConnection:
    ws = await connect(url)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws


@pytest.fixture
def upstreams() -> Iterator[tuple[UpstreamServer, UpstreamServer]]:
    with UpstreamServer() as a, UpstreamServer() as b:
        yield a, b


@pytest.fixture
async def gateway(
    tmp_path: Path, upstreams: tuple[UpstreamServer, UpstreamServer]
) -> AsyncIterator[tuple[Standalone, OtlpReceiver]]:
    """``run --management /_gateway``, API ``h`` on ``/h`` to the first upstream, exporting every 200 ms."""
    config = tmp_path / "gateway.yaml"
    config.write_text(f"apis:\n  - {{name: h, path: /h, upstreams: ['{upstreams[0].url('/echo')}']}}\n")
    with OtlpReceiver() as otlp:
        async with standalone(config, env=exporting_to(otlp)) as server:
            yield server, otlp


async def test_a_backend_replaced_while_a_client_is_on_it_is_counted_until_it_leaves(
    gateway: tuple[Standalone, OtlpReceiver], upstreams: tuple[UpstreamServer, UpstreamServer]
) -> None:
    """PUT the API with another upstream: the old backend reads 1 beside the new one's 0, then 0 once the
    client left, then is gone at the next change."""
    server, otlp = gateway
    a, b = (("h", u.url("/echo")) for u in upstreams)
    client = await _echoing(server.ws("/h"))
    await server.client.replace_api("h", {"path": "/h", "upstreams": [upstreams[1].url("/echo")]})
    since = len(otlp.points())
    seen = await asyncio.to_thread(_exported, otlp, since, lambda s: b in s)  # collected under the change
    assert seen == {a: 1, b: 0}, seen
    await client.send("still relayed")
    assert await client.recv() == "still relayed"

    await client.close()
    since = len(otlp.points())
    assert await asyncio.to_thread(_exported, otlp, since, lambda s: s.get(a) == 0) == {a: 0, b: 0}

    await server.client.replace_api("h", {"path": "/h", "upstreams": [upstreams[1].url("/echo")], "idle_timeout": 60})
    since = len(otlp.points())
    assert await asyncio.to_thread(_exported, otlp, since, lambda s: a not in s) == {b: 0}


async def test_a_deleted_api_is_counted_until_its_client_leaves(
    gateway: tuple[Standalone, OtlpReceiver], upstreams: tuple[UpstreamServer, UpstreamServer]
) -> None:
    """An API added, a client on it, the API deleted: its backend reads 1 while the client stays, then 0."""
    server, otlp = gateway
    removed = ("m", upstreams[1].url("/echo"))
    await server.client.create_api({"name": "m", "path": "/m", "upstreams": [removed[1]]})
    client = await _echoing(server.ws("/m"))
    await server.client.delete_api("m")
    since = len(otlp.points())
    kept = ("h", upstreams[0].url("/echo"))
    seen = await asyncio.to_thread(_exported, otlp, since, lambda s: s.get(kept) == 0)
    assert seen == {kept: 0, removed: 1}, seen
    await client.close()
    since = len(otlp.points())
    assert await asyncio.to_thread(_exported, otlp, since, lambda s: s.get(removed) == 0) == {kept: 0, removed: 0}


async def test_a_backend_removed_and_added_again_while_draining_is_one_series(
    gateway: tuple[Standalone, OtlpReceiver], upstreams: tuple[UpstreamServer, UpstreamServer]
) -> None:
    """Removed with a client on it, then configured again: one series, the draining client counted in it
    beside the new connections."""
    server, otlp = gateway
    first, second = (u.url("/echo") for u in upstreams)
    old = await _echoing(server.ws("/h"))
    await server.client.replace_api("h", {"path": "/h", "upstreams": [second]})
    await server.client.replace_api("h", {"path": "/h", "upstreams": [first]})
    new = await _echoing(server.ws("/h"))
    since = len(otlp.points())
    seen = await asyncio.to_thread(_exported, otlp, since, lambda s: ("h", first) in s)
    assert seen == {("h", first): 2}, seen
    for client in (old, new):
        await client.close()
    since = len(otlp.points())
    assert await asyncio.to_thread(_exported, otlp, since, lambda s: s.get(("h", first)) == 0) == {("h", first): 0}
