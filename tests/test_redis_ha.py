"""Redis Cluster and Sentinel: every Redis use (limits, leases, quotas, reservations, management store, bus).

The cluster (3 masters + 3 replicas) and the Sentinel set (1 master, 1 replica, 3 sentinels) are real
``redis-server`` processes the session fixtures start on free ports (tests/support/redis_ha.py).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis, RedisCluster

from asgi_ws_gateway import ConfigError, load_config
from asgi_ws_gateway.cli import main
from asgi_ws_gateway.management.bus import Command, RedisBus
from asgi_ws_gateway.management.overlay import Overlay
from asgi_ws_gateway.management.redis_store import RedisStore as ManagementStore
from asgi_ws_gateway.management.redis_store import state_key
from asgi_ws_gateway.redis_client import SentinelRedis, connect, parse_redis_url
from asgi_ws_gateway.state.base import store_key
from asgi_ws_gateway.state.redis import RedisState
from support.redis_ha import RedisClusterSet, RedisSentinelSet, ha_available

# -- the URL parser (pure) -------------------------------------------------------------------------


def test_cluster_url_lists_its_start_nodes_and_credentials() -> None:
    target = parse_redis_url("rediss+cluster://gw:s%40cret@10.0.0.1:7000,[::1]:7001")
    assert (target.kind, target.nodes, target.tls) == ("cluster", (("10.0.0.1", 7000), ("::1", 7001)), True)
    assert (target.username, target.password) == ("gw", "s@cret")
    assert "s@cret" not in repr(target)


def test_sentinel_url_names_service_and_db() -> None:
    target = parse_redis_url("redis+sentinel://s1:26379,s2:26379,s3:26379/gateway/2")
    assert (target.kind, target.service, target.db, len(target.nodes)) == ("sentinel", "gateway", 2, 3)
    assert parse_redis_url("redis+sentinel://s1:26379/gateway").db == 0


def test_plain_urls_are_left_to_redis_py() -> None:
    for url in ("redis://h:6379/0", "rediss://h:6380/1", "unix:///run/redis.sock"):
        assert parse_redis_url(url).kind == "single"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:1", "starts with one of"),
        ("redis+cluster://", "expected host:port"),
        ("redis+cluster://h", "expected host:port"),
        ("redis+cluster://h:0", "expected host:port"),
        ("redis+cluster://h:99999", "expected host:port"),
        ("redis+cluster://h:1,,h:2", "expected host:port"),
        ("redis+cluster://h:1/3", "has no path"),
        ("redis+cluster://h:1?timeout=1", "no query string"),
        ("redis+sentinel://h:1", "names the service"),
        ("redis+sentinel://h:1/svc/x", "must be a number"),
        ("redis+sentinel://h:1/svc/1/2", "names the service"),
    ],
)
def test_bad_urls_are_rejected_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_redis_url(url)


def test_store_url_errors_carry_the_field_path_and_never_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"store": {"type": "redis", "url": "redis+cluster://u:hunter2@h:1/3"}})
    assert info.value.problems == ["store.url: a redis+cluster:// URL has no path (a cluster has only database 0)"]
    assert "hunter2" not in str(info.value)
    config = load_config({"store": {"type": "redis", "url": "redis+sentinel://h:1,h:2/gw"}})
    assert config.store.url == "redis+sentinel://h:1,h:2/gw"


# -- against the real servers ----------------------------------------------------------------------


@pytest.fixture(params=["cluster", "sentinel"])
def ha_url(request: pytest.FixtureRequest) -> str:
    ha = request.getfixturevalue(f"redis_{request.param}")
    return str(ha.url)


@pytest.fixture
async def store(ha_url: str) -> AsyncIterator[RedisState]:
    store = RedisState(ha_url, prefix=f"test-{uuid.uuid4().hex[:10]}", timeout=2.0)
    yield store
    await store.aclose()


def test_connect_picks_the_client_for_the_url(redis_cluster: RedisClusterSet, redis_sentinel: RedisSentinelSet) -> None:
    assert isinstance(connect(redis_cluster.url), RedisCluster)
    assert isinstance(connect(redis_sentinel.url), SentinelRedis)
    assert type(connect("redis://127.0.0.1:1/0")).__name__ == "Redis"


async def test_every_lua_script_runs_on_the_cluster_without_crossslot(
    redis_cluster: RedisClusterSet,
) -> None:
    """hit, consume, reserve, acquire, renew (pipelined over many slots), release, and the management CAS."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    store = RedisState(redis_cluster.url, prefix=prefix, timeout=2.0)
    try:
        keys = [store_key(prefix, "conc", "c", f"user{i}") for i in range(12)]
        owners = {redis_cluster.master_for(key) for key in keys}
        assert len(owners) >= 2, "the keys should span several masters"
        assert (await store.hit(store_key(prefix, "rate", "r", "a"), 2, 60, "m1")).allowed
        assert (await store.consume(store_key(prefix, "quota", "q", "a"), 1, "hour")).allowed
        reservation = await store.reserve(store_key(prefix, "msg", "m", "a"), 60, [(5, 3), (1, 10)])
        assert reservation.granted == (3, 1)
        for i, key in enumerate(keys):
            assert (await store.acquire(key, f"lease{i}", 1, 30)).allowed
        await store.renew([(key, f"lease{i}") for i, key in enumerate(keys)], 30)
        for i, key in enumerate(keys):
            assert not (await store.acquire(key, "other", 1, 30)).allowed, "renew kept every lease"
            await store.release(key, f"lease{i}")
            assert (await store.acquire(key, "other", 1, 30)).allowed
    finally:
        await store.aclose()
    management = ManagementStore(connect(redis_cluster.url, decode_responses=True), prefix=prefix)
    try:
        saved = await management.update(lambda overlay: overlay.next())
        assert saved.revision == 1 == await management.revision()
        assert (await management.load()).revision == 1
    finally:
        await management.aclose()
    assert redis_cluster.master_for(state_key(prefix)) in redis_cluster.masters()


async def test_limits_are_exact_across_two_clients(store: RedisState, ha_url: str) -> None:
    """Two gateways (two clients) racing on one cap, one window and one quota admit exactly the limit."""
    other = RedisState(ha_url, prefix=store.prefix, timeout=2.0)
    try:
        conc = store_key(store.prefix, "conc", "c", "k")
        rate = store_key(store.prefix, "rate", "r", "k")
        quota = store_key(store.prefix, "quota", "q", "k")
        clients = [store, other] * 15
        leases = await asyncio.gather(*(c.acquire(conc, f"l{i}", 7, 30) for i, c in enumerate(clients)))
        hits = await asyncio.gather(*(c.hit(rate, 5, 60, f"m{i}") for i, c in enumerate(clients)))
        quotas = await asyncio.gather(*(c.consume(quota, 4, "hour") for c in clients))
        assert [sum(d.allowed for d in result) for result in (leases, hits, quotas)] == [7, 5, 4]
    finally:
        await other.aclose()


def _add(name: str) -> Callable[[Overlay], Overlay]:
    return lambda o: o.next(apis={**o.apis, name: {"name": name}})


async def test_management_store_compare_and_set_has_no_lost_update(ha_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    stores = [ManagementStore(connect(ha_url, decode_responses=True), prefix=prefix) for _ in range(3)]
    try:
        await asyncio.gather(*(s.update(_add(f"api{i}-{k}")) for i, s in enumerate(stores) for k in range(5)))
        assert await stores[0].revision() == 15
        assert len((await stores[1].load()).apis) == 15
    finally:
        for s in stores:
            await s.aclose()


async def test_bus_reaches_every_worker_and_counts_them(ha_url: str) -> None:
    """gather() knows how many workers heard the command (sharded pub/sub on a cluster) and hears each."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    buses = [RedisBus(connect(ha_url, decode_responses=True), prefix=prefix) for _ in range(3)]
    heard: list[str] = []

    def handler_for(bus: RedisBus):  # type: ignore[no-untyped-def]
        async def handle(command: Command) -> Command | None:
            heard.append(bus.worker)
            return {"echo": command["n"]} if command["op"] == "ask" else None

        return handle

    try:
        for bus in buses:
            await bus.start(handler_for(bus))
        answers = await buses[0].gather({"op": "ask", "n": 7}, wait=10)
        assert answers.expected == 3
        assert sorted(a["worker"] for a in answers.replies) == sorted(b.worker for b in buses)
        assert {a["echo"] for a in answers.replies} == {7}
        heard.clear()
        await buses[1].publish({"op": "tell", "n": 1})
        async with asyncio.timeout(10):
            while len(heard) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert sorted(heard) == sorted(b.worker for b in buses)
    finally:
        for bus in buses:
            await bus.aclose()


async def test_plain_publish_undercounts_on_a_cluster_hence_sharded_pubsub(redis_cluster: RedisClusterSet) -> None:
    """Measured: PUBLISH reaches subscribers on every node but counts only its own node's."""
    channel = f"test-{uuid.uuid4().hex[:10]}:{{mgmt}}:bus"
    nodes = [Redis(port=port) for port in redis_cluster.ports[:3]]
    subscriptions = [node.pubsub() for node in nodes]
    cluster = connect(redis_cluster.url)
    try:
        for subscription in subscriptions:
            await subscription.subscribe(channel)
        await cluster.initialize()
        counted = await cluster.publish(channel, "x")
        received = 0
        for subscription in subscriptions:
            for _ in range(30):
                if await subscription.get_message(ignore_subscribe_messages=True, timeout=0.1) is not None:
                    received += 1
                    break
        assert received == 3
        assert counted < 3
    finally:
        for subscription in subscriptions:
            await subscription.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
        for node in nodes:
            await node.aclose()
        await cluster.aclose()


def test_run_rejects_a_malformed_redis_url_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "gateway.yaml", "--management", "/_gateway", "--redis", "redis+cluster://u:hunter2@h"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --redis: expected host:port, not 'h'" in err
    assert "hunter2" not in err


def test_a_set_whose_port_was_taken_meanwhile_starts_on_others() -> None:
    """The tests' Redis sets: a port taken between choosing it and redis-server binding it (another test
    worker's server) means other ports, not a 10-second wait and a failed test."""
    if not ha_available():
        pytest.skip("redis-server and redis-cli are not installed")
    sentinels = RedisSentinelSet()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", sentinels.master_port))  # bound, not listening: redis-server cannot bind it
        first = sentinels.master_port
        with sentinels:
            assert sentinels.master_port != first
            assert sentinels.current_master() == sentinels.master_port
