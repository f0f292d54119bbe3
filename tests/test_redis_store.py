"""The Redis store against a real Redis: atomic scripts, key layout, leases, and outages."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.cancellation import POLICY_DEADLINE
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.state.base import StoreUnavailable, store_key
from asgi_ws_gateway.state.failures import STORE_FAILURES
from asgi_ws_gateway.state.leases import LeaseKeeper
from asgi_ws_gateway.state.redis import RedisState
from support.policies import build, context, denied
from support.redis import SHARED_REDIS, DelayingProxy, RedisServer, redis_available, redis_state, unique_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")


@pytest.fixture
async def store() -> AsyncIterator[RedisState]:
    async with redis_state() as store:
        yield store


async def test_sliding_window_is_atomic_under_concurrency(store: RedisState) -> None:
    key = store_key(store.prefix, "rate", "t", "alice")
    decisions = await asyncio.gather(*(store.hit(key, 5, 60, f"m{i}") for i in range(20)))
    assert sum(d.allowed for d in decisions) == 5
    refused = [d for d in decisions if not d.allowed]
    assert all(0 < d.retry_after <= 60 for d in refused)


async def test_quota_counts_to_the_limit(store: RedisState) -> None:
    key = store_key(store.prefix, "quota", "t:0", "alice")
    results = [await store.consume(key, 3, "hour") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results[:3]] == [2, 1, 0]
    assert results[3].resets_at % 3600 == 0
    assert 0 < results[3].retry_after <= 3600


async def test_leases_cap_release_and_expire(store: RedisState) -> None:
    key = store_key(store.prefix, "conc", "t", "alice")
    assert (await store.acquire(key, "a", 2, 1.0)).allowed
    assert (await store.acquire(key, "b", 2, 30.0)).allowed
    assert not (await store.acquire(key, "c", 2, 30.0)).allowed
    await store.release(key, "b")
    assert (await store.acquire(key, "c", 2, 30.0)).allowed
    # Lease "a" was never renewed: it expires after its 1 s (Redis's clock), and "d" gets its place.
    async with asyncio.timeout(10):
        while not (await store.acquire(key, "d", 2, 30.0)).allowed:  # noqa: ASYNC110 - Redis's state
            await asyncio.sleep(0.05)
    await store.renew([(key, "c"), (key, "d")], 30.0)
    assert not (await store.acquire(key, "e", 2, 30.0)).allowed


async def test_many_leases_are_renewed_in_batches_each_key_in_few_script_calls() -> None:
    """1,203 leases over three keys (1,200 under one, as a per-API cap holds them) and 1,000 keys of one
    lease each: every lease renewed (re-added when it had expired), with one script call per key and
    RENEW_BATCH leases (before: a script call and a pipeline entry per lease, all in one pipeline, which
    held the event loop for 0.65 s at 50,000 leases)."""
    with RedisServer() as server:  # its own Redis: the script calls are counted
        store = RedisState(server.url, prefix="renew")
        client: Any = Redis.from_url(server.url, decode_responses=True)  # (redis-py's reply types are unions)
        try:
            big, small = store_key("renew", "conc", "api", "all"), store_key("renew", "conc", "api", "few")
            grouped = [(big, f"lease-{i}") for i in range(1200)] + [(small, "x"), (small, "y"), (small, "z")]
            single = [(store_key("renew", "conc", "user", str(i)), "only") for i in range(1000)]
            calls_before = await _eval_calls(client)
            await store.renew(grouped, 30.0)
            # 1,200 leases of one key: three calls of at most RENEW_BATCH (500); the other key: one.
            assert await _eval_calls(client) - calls_before == 4
            await store.renew(single, 30.0)
            now_ms = time.time() * 1000
            for key, count in ((big, 1200), (small, 3)):
                scores = [score for _, score in await client.zrange(key, 0, -1, withscores=True)]
                assert len(scores) == count
                assert all(now_ms + 25_000 < score < now_ms + 35_000 for score in scores)
                assert 25_000 < await client.pttl(key) <= 30_000
            assert all([await client.zscore(key, "only") for key, _ in single])
        finally:
            await client.aclose()
            await store.aclose()


async def _eval_calls(client: Any) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


async def test_keys_are_namespaced_hash_tagged_and_hold_no_user_text(store: RedisState) -> None:
    policy = build({"rate-limit-by-key": {"key": "{client.ip}", "limit": 5, "window": 60}}, store)
    await policy.apply(context(client=("198.51.100.23", 1)))
    client = Redis.from_url(SHARED_REDIS, decode_responses=True)
    keys = [k async for k in client.scan_iter(match=f"{store.prefix}:*")]
    await client.aclose()
    assert len(keys) == 1
    assert keys[0].startswith(f"{store.prefix}:rate:{{test.rate-limit-by-key.0:") and keys[0].endswith("}")
    assert "198.51.100.23" not in keys[0]


async def test_redis_stopped_mid_test_fails_open_or_closed_then_recovers() -> None:
    with RedisServer() as server:
        store = RedisState(server.url, prefix=unique_prefix(), retry_interval=0.2)
        rate = {"key": "{client.ip}", "limit": 100, "window": 60}
        open_policy = build({"rate-limit-by-key": {**rate, "on_store_error": "open"}}, store)
        closed_policy = build({"rate-limit-by-key": {**rate, "on_store_error": "closed"}}, store)
        await closed_policy.apply(context())  # Redis up: counted
        server.stop()
        await open_policy.apply(context())  # admitted unchecked
        denial = await denied(closed_policy.apply(context()))
        assert (denial.status, denial.reason) == (503, "store_unavailable")
        with pytest.raises(StoreUnavailable):
            await store.hit("k", 1, 1, "m")  # within retry_interval: no new connection attempt
        server.start()
        # Refused until retry_interval (0.2 s) has passed since the failure; then back to normal.
        async with asyncio.timeout(10):
            while True:
                try:
                    await closed_policy.apply(context())
                    break
                except HandshakeDenied as denial:
                    assert denial.reason == "store_unavailable"
                    await asyncio.sleep(0.05)
        await store.aclose()


# -- answers later than the store's timeout: Redis ran the script all the same ----------------------


@pytest.fixture
async def late() -> AsyncIterator[tuple[DelayingProxy, RedisState, Redis]]:
    """A store through a proxy that can make Redis's answers late (timeout 0.2 s), and a direct client."""
    with DelayingProxy() as proxy:
        store = RedisState(proxy.url, prefix=unique_prefix(), timeout=0.2, retry_interval=0.1)
        client = Redis.from_url(SHARED_REDIS)
        await store.hit(store_key(store.prefix, "rate", "t", "warm-up"), 1, 60, "warm-up")  # connected while fast
        yield proxy, store, client
        keys = [k async for k in client.scan_iter(match=f"{store.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.aclose()


async def test_an_acquire_cancelled_mid_call_leaves_no_lease(late: tuple[DelayingProxy, RedisState, Redis]) -> None:
    """A handshake cancelled while Redis takes its lease (the server cancelling its task, a shutdown)."""
    proxy, store, client = late
    keeper = LeaseKeeper(store, 3600)
    key = store_key(store.prefix, "conc", "t", "alice")
    proxy.delay = 1.0
    call = asyncio.create_task(keeper.acquire(key, "lease-1", 1))
    async with asyncio.timeout(10):
        while not await client.zcard(key):  # noqa: ASYNC110 - Redis took the lease; its answer is on the way
            await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    proxy.delay = 0
    async with asyncio.timeout(10):
        while await client.zcard(key):  # noqa: ASYNC110 - Redis's state
            await asyncio.sleep(0.05)
    assert (await keeper.acquire(key, "lease-2", 1)).allowed
    await keeper.release("lease-2")
    assert await client.zcard(key) == 0
    await keeper.aclose()


async def test_a_lease_held_when_its_keeper_is_closed_is_renewed_until_released(store: RedisState) -> None:
    """A reload closes the replaced policies while their connections stay open. Before, aclose()
    stopped the renewals: the lease expired ``ttl`` later and a second connection was admitted."""
    key = store_key(store.prefix, "conc", "t", "alice")
    keeper = LeaseKeeper(store, 1.0)  # renewed every third of a second
    assert (await keeper.acquire(key, "open", 1)).allowed
    await keeper.aclose()
    await asyncio.sleep(2.5)  # well past the lease's TTL
    assert not (await store.acquire(key, "second", 1, 1.0)).allowed  # the cap still holds
    await keeper.release("open")  # the connection ends, through the closed keeper
    assert (await store.acquire(key, "second", 1, 1.0)).allowed
    await store.release(key, "second")
    async with asyncio.timeout(5):  # the renewals stopped with the last release: no task left
        while asyncio.all_tasks() - {asyncio.current_task()}:  # noqa: ASYNC110 - tasks ending
            await asyncio.sleep(0.01)


async def test_a_burst_after_redis_recovered_is_counted_not_unchecked(
    late: tuple[DelayingProxy, RedisState, Redis],
) -> None:
    """An outage seen, then Redis healthy again before the next burst: the store tried Redis in the background
    meanwhile, so the burst is counted. Before, the burst's first call was the one to try, and the others
    answered "unavailable" at once while it ran: a worker idle through the recovery admitted 17 to 30
    handshakes on a quota of 5 (fail-open) or refused 37 of 40 (fail-closed) against a healthy Redis (a
    hunter, two workers on a paused redis-server)."""
    proxy, store, _ = late
    proxy.delay = 1.0  # later than the store's timeout (0.2 s): an outage
    with pytest.raises(StoreUnavailable):
        await store.hit(store_key(store.prefix, "rate", "t", "outage"), 5, 60, "m")
    proxy.delay = 0.0  # Redis answers again; nothing asks for a while
    await asyncio.sleep(store.retry_interval * 2)
    key = store_key(store.prefix, "quota", "t:0", "burst")
    outcomes = await asyncio.gather(*(store.consume(key, 5, "hour") for _ in range(40)), return_exceptions=True)
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert sum(o.allowed for o in outcomes if not isinstance(o, BaseException)) == 5


async def test_a_probe_cut_short_counts_as_a_failure(late: tuple[DelayingProxy, RedisState, Redis]) -> None:
    """The call trying whether a failed Redis is back, cancelled (the handshake's policy_timeout, a shutdown):
    the calls after it answer "unavailable" at once for ``retry_interval``. Before (a re-attack), each of
    them became the next probe in turn and waited on the hung Redis: 92 of 198 handshakes were a 504
    where the store answered "unavailable" to all but 11 before."""
    proxy, store, _ = late
    store.retry_interval = 60.0  # no second try, by a call or the background, during the test
    proxy.delay = 5.0  # hung
    key = store_key(store.prefix, "rate", "t", "hung")
    with pytest.raises(StoreUnavailable):
        await store.hit(key, 5, 60, "first")  # the outage seen
    store._down_until = 0.0  # the retry interval over: the next call probes
    probe = asyncio.create_task(store.hit(key, 5, 60, "probe"))
    await asyncio.sleep(0.05)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    with pytest.raises(StoreUnavailable, match="retrying shortly"):  # at once, not after a timeout of its own
        await store.hit(key, 5, 60, "after")


@pytest.mark.parametrize("cut_by", ["policy_timeout", "shutdown"])
async def test_a_call_cut_short_by_policy_timeout_counts_as_a_timeout_and_by_a_shutdown_not(cut_by: str) -> None:
    """A Redis that answers nothing, behind a store timeout longer than the wait: the handshake's deadline
    cancelling the call is a store that did not answer in time (``ws_gateway.store.failures``); a task
    cancelled for any other reason (a shutdown, the client gone) is not the store's failure."""
    with DelayingProxy() as proxy:
        store = RedisState(proxy.url, prefix=unique_prefix(), timeout=30)
        key = store_key(store.prefix, "rate", "t", "k")
        await store.hit(key, 10, 60, "warm-up")  # connected while Redis answers
        before = STORE_FAILURES.copy()
        proxy.delay = 3600
        call = asyncio.create_task(store.hit(key, 10, 60, "cut"))
        await asyncio.sleep(0.1)  # the call is waiting for its answer
        call.cancel(POLICY_DEADLINE if cut_by == "policy_timeout" else None)
        with pytest.raises(asyncio.CancelledError):
            await call
        counted = STORE_FAILURES - before
        await store.aclose()
    assert counted == (Counter({("redis", "hit", "timeout"): 1}) if cut_by == "policy_timeout" else Counter())
