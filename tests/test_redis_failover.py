"""Failover under load: SIGKILL the Redis master (Cluster, then Sentinel) while a gateway holds and admits.

A real ``asgi-ws-gateway run`` holds echoing connections on two APIs capped by ``limit-concurrency``,
one failing open and one failing closed, while a probe keeps making handshakes. The master holding
their counters is killed; its replica takes over. Each set is private to its test (it is broken).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway.management.bus import Command, RedisBus
from asgi_ws_gateway.management.errors import Unavailable
from asgi_ws_gateway.management.redis_store import RedisStore as ManagementStore
from asgi_ws_gateway.management.redis_store import state_key
from asgi_ws_gateway.redis_client import connect as redis_connect
from asgi_ws_gateway.state.base import store_key
from support.clients import connect
from support.processes import standalone
from support.redis_ha import RedisClusterSet, RedisSentinelSet, ha_available
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not ha_available(), reason="redis-server and redis-cli are needed")
logger = logging.getLogger(__name__)
CAP = 3
HELD = 2
LEASE_TTL = 2


@dataclass
class Probe:
    """Handshake outcomes (status, seconds since the kill) per API, and echo round trips on held sockets."""

    statuses: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: {"open": [], "closed": []})
    echoes: int = 0


async def _handshake(url: str) -> int:
    """Status of one handshake; an admitted connection is closed at once (it only probes)."""
    try:
        ws = await connect(url)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


async def _hold(url: str, stack: contextlib.AsyncExitStack) -> ClientConnection:
    ws = await stack.enter_async_context(await connect(url))
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws


async def _echo_forever(held: list[ClientConnection], probe: Probe) -> None:
    while True:
        for ws in held:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            probe.echoes += 1
        await asyncio.sleep(0.05)


async def _exact_again(url: str, stack: contextlib.AsyncExitStack) -> None:
    """Exactly CAP - HELD more are admitted (after leases orphaned by the outage expire), then 429."""
    async with asyncio.timeout(4 * LEASE_TTL + 10):
        while True:
            try:
                extra = [await _hold(url, stack) for _ in range(CAP - HELD)]
                break
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                await asyncio.sleep(0.2)
    assert len(extra) == CAP - HELD
    with pytest.raises(InvalidStatus) as refused:
        await connect(url)
    assert refused.value.response.status_code == 429


@pytest.fixture
def failover_cluster() -> Iterator[RedisClusterSet]:
    with RedisClusterSet(node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.fixture
def failover_sentinel() -> Iterator[RedisSentinelSet]:
    with RedisSentinelSet(down_after_ms=1000) as sentinel:
        yield sentinel


def _counters(prefix: str, cluster: RedisClusterSet | None) -> tuple[str, str, int | None]:
    """Counter names for the two APIs whose keys live on one master (on a cluster), and that master."""
    if cluster is None:
        return "open", "closed", None
    owner = cluster.master_for(store_key(prefix, "conc", "open", "everyone"))
    for i in range(200):
        if cluster.master_for(store_key(prefix, "conc", f"closed{i}", "everyone")) == owner:
            return "open", f"closed{i}", owner
    raise AssertionError("no counter name hashed to the same master")


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
async def test_master_killed_under_load(
    kind: str, tmp_path: Path, upstream: UpstreamServer, request: pytest.FixtureRequest
) -> None:
    """No crash, no held connection dropped, open/closed as configured, limits exact again after the switch."""
    ha: RedisClusterSet | RedisSentinelSet = request.getfixturevalue(f"failover_{kind}")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    open_counter, closed_counter, master = _counters(prefix, ha if isinstance(ha, RedisClusterSet) else None)
    if isinstance(ha, RedisSentinelSet):
        master = ha.current_master()
    assert master is not None

    def api(name: str, counter: str) -> dict[str, object]:
        limit = {"key": "everyone", "max": CAP, "lease_ttl": LEASE_TTL, "counter": counter, "on_store_error": name}
        return {"name": name, "path": f"/ws/{name}", "upstreams": [upstream.url("/echo")],
                "policies": [{"limit-concurrency": limit}]}  # fmt: skip

    config = tmp_path / "gateway.yaml"
    store = {"type": "redis", "url": ha.url, "prefix": prefix, "timeout": 0.5}
    config.write_text(
        yaml.safe_dump({"store": store, "apis": [api("open", open_counter), api("closed", closed_counter)]})
    )
    probe = Probe()
    async with standalone(config) as gateway, contextlib.AsyncExitStack() as stack:
        urls = {name: gateway.ws(f"/ws/{name}") for name in ("open", "closed")}
        held = [await _hold(urls[name], stack) for name in ("open", "closed") for _ in range(HELD)]
        echo = asyncio.create_task(_echo_forever(held, probe))
        stack.callback(echo.cancel)
        loop = asyncio.get_running_loop()
        ha.kill(master)
        killed_at = loop.time()
        recovered = None
        async with asyncio.timeout(60):
            while recovered is None:
                for name, url in urls.items():
                    status = await _handshake(url)
                    probe.statuses[name].append((status, loop.time() - killed_at))
                closed = [status for status, _ in probe.statuses["closed"]]
                if 503 in closed and closed[-1] == 101:
                    recovered = loop.time() - killed_at
                await asyncio.sleep(0.1)
        echoes_at_recovery = probe.echoes
        # Held leases outlived by the outage come back with each worker's next renewal (every
        # lease_ttl / 3): only then are the counts exact again.
        client = redis_connect(ha.url)
        try:
            async with asyncio.timeout(4 * LEASE_TTL + 10):
                for counter in (open_counter, closed_counter):
                    key = store_key(prefix, "conc", counter, "everyone")
                    while await client.zcard(key) < HELD:  # noqa: ASYNC110 - another process renews
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        renewed_at = loop.time() - killed_at
        await _exact_again(urls["closed"], stack)
        await _exact_again(urls["open"], stack)
        exact_at = loop.time() - killed_at
        assert not echo.done(), echo  # a held connection failed (its exception shows here)
        async with asyncio.timeout(10):  # and they still echo: wait for a round trip after recovery
            while probe.echoes <= echoes_at_recovery:  # noqa: ASYNC110 - the echo task counts
                await asyncio.sleep(0.05)
        echo.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await echo
        assert gateway.process.returncode is None, "the gateway survived"
        for ws in held:
            await ws.send("still here")
            while (message := await ws.recv()) == "ping":  # the echo of a ping the cancelled pump sent
                pass
            assert message == "still here"

    open_statuses = {status for status, _ in probe.statuses["open"]}
    closed_statuses = {status for status, _ in probe.statuses["closed"]}
    assert 503 not in open_statuses and 101 in open_statuses  # fail-open: admitted through the switch
    assert closed_statuses <= {101, 429, 503} and 503 in closed_statuses  # fail-closed: 503 until it is back
    first_503 = min(t for status, t in probe.statuses["closed"] if status == 503)
    logger.info(
        "%s failover: first 503 after %.2f s, admitting again after %.2f s, leases renewed after %.2f s, "
        "limits exact after %.2f s, %d echoes on held connections",
        kind,
        first_503,
        recovered,
        renewed_at,
        exact_at,
        probe.echoes,
    )


async def test_bus_and_management_store_survive_a_cluster_failover(failover_cluster: RedisClusterSet) -> None:
    """Kill the master of the ``{mgmt}`` slot: the bus resubscribes and counts every worker again, saves resume."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    buses = [RedisBus(redis_connect(failover_cluster.url, decode_responses=True), prefix=prefix) for _ in range(2)]
    store = ManagementStore(redis_connect(failover_cluster.url, decode_responses=True), prefix=prefix)

    async def answer(command: Command) -> Command | None:
        return {"ok": True} if command["op"] == "ask" else None

    try:
        for bus in buses:
            await bus.start(answer)
        await store.update(lambda o: o.next())
        assert (await buses[0].gather({"op": "ask"}, wait=5)).expected == 2
        master = failover_cluster.master_for(state_key(prefix))
        failover_cluster.wait_replicated(master)  # else revision 1 may die with the master: not the gateway's loss
        failover_cluster.kill(master)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        async with asyncio.timeout(30):
            while True:
                with contextlib.suppress(Unavailable):  # the bus reports Redis failing so
                    answers = await buses[0].gather({"op": "ask"}, wait=2)
                    if answers.expected == 2 and len(answers.replies) == 2:
                        break
                await asyncio.sleep(0.2)
        bus_back = loop.time() - killed_at
        assert (await store.update(lambda o: o.next())).revision == 2  # the replica had revision 1
        logger.info("bus answered by both workers %.2f s after the {mgmt} master was killed", bus_back)
    finally:
        for bus in buses:
            await bus.aclose()
        await store.aclose()
