"""Concurrency leases a store lost while their connections stayed open: a Redis restarted empty
(no persistence) or evicting keys answers every call, so nothing failed; each lease is put back at
its next renewal, and the keeper says that until then the cap counted fewer connections than were
open."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.state.base import store_key
from asgi_ws_gateway.state.leases import LeaseKeeper
from asgi_ws_gateway.state.memory import MemoryState
from asgi_ws_gateway.state.redis import RedisState
from support.redis import SHARED_REDIS, RedisServer, redis_available, unique_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")


async def test_a_redis_renewal_counts_the_leases_that_were_gone() -> None:
    store = RedisState(SHARED_REDIS, prefix=unique_prefix())
    client = Redis.from_url(SHARED_REDIS)
    key = store_key(store.prefix, "conc", "t", "alice")
    try:
        for lease in ("a", "b", "c"):
            assert (await store.acquire(key, lease, 5, 30.0)).allowed
        assert await store.renew([(key, "a"), (key, "b"), (key, "c")], 30.0) == 0
        await client.zrem(key, "b")  # one evicted, or never replicated
        assert await store.renew([(key, "a"), (key, "b"), (key, "c")], 30.0) == 1
        await client.delete(key)  # the whole key: a restart without persistence
        assert await store.renew([(key, "a"), (key, "b"), (key, "c")], 30.0) == 3
        assert await client.zcard(key) == 3
        assert await store.renew([(key, "a"), (key, "b"), (key, "c")], 30.0) == 0
    finally:
        await client.delete(key)
        await client.aclose()
        await store.aclose()


async def test_a_memory_renewal_counts_the_leases_that_expired() -> None:
    now = [1000.0]
    store = MemoryState(monotonic=lambda: now[0])
    for lease in ("a", "b"):
        assert (await store.acquire("k", lease, 5, 10.0)).allowed
    assert await store.renew([("k", "a"), ("k", "b")], 10.0) == 0
    now[0] += 11  # both expired: acquires count neither
    assert await store.renew([("k", "a"), ("k", "b")], 10.0) == 2
    assert store.leases("k") == 2


async def test_leases_lost_in_a_redis_restart_come_back_and_the_keeper_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_ws_gateway.state.leases")
    with RedisServer() as server:
        store = RedisState(server.url, prefix=unique_prefix())
        keeper = LeaseKeeper(store, 0.6)  # renewed every 0.2 s
        key = store_key(store.prefix, "conc", "t", "alice")
        try:
            for lease in ("a", "b"):
                assert (await keeper.acquire(key, lease, 2)).allowed
            assert not (await store.acquire(key, "intruder", 2, 30.0)).allowed  # the cap holds
            server.stop()
            server.start()  # empty: nothing saved
            # Until the next renewal, the cap counts none of the open connections (documented); then
            # both are back, and a third is refused again.
            async with asyncio.timeout(10):
                while "were gone from the store" not in caplog.text:  # noqa: ASYNC110 - a log line
                    await asyncio.sleep(0.05)
            client = Redis.from_url(server.url)
            try:
                async with asyncio.timeout(5):
                    while await client.zcard(key) < 2:  # noqa: ASYNC110 - Redis's state
                        await asyncio.sleep(0.05)
            finally:
                await client.aclose()
            assert not (await store.acquire(key, "late", 2, 30.0)).allowed
            lines = [r.getMessage() for r in caplog.records if "were gone from the store" in r.getMessage()]
            assert lines[0].startswith("2 concurrency lease(s)")
        finally:
            await keeper.aclose(keep_held=False)
            await store.aclose()
