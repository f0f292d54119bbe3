"""A master demoted to a replica behind the address the store connects to (a DNS name or a virtual
IP moved to the promoted replica, as managed Redis services fail over): the store's open connections
still reach the old master, which answers every write ``READONLY``.

Both the store's pipe (every limit's script) and redis-py's pool (the lease renewals) kept their
connection: every call failed for good, though a new connection reached the new master (every limit
fail-open or fail-closed, every renewal failing, until the process restarted). Now a ``READONLY``
answer closes the connection it came on, as redis-py's Sentinel client does, and the next call
reaches the new master. Two private Redis servers, behind a proxy whose target moves (its
``target`` is read for each new connection). The management state's store kept its
connections too; now it empties redis-py's pool on ``READONLY`` and sends the call once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.management.errors import Unavailable
from asgi_ws_gateway.management.redis_store import RedisStore
from asgi_ws_gateway.state.base import StoreUnavailable, store_key
from asgi_ws_gateway.state.leases import LeaseKeeper
from asgi_ws_gateway.state.redis import RedisState
from support.redis import DelayingProxy, RedisServer, fail_over, failover_pair, redis_available, unique_prefix

T = TypeVar("T")
pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, DelayingProxy]]:
    with failover_pair(tmp_path) as servers:
        yield servers


async def _until_answered(call: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
    """``call()`` until the store answers (it answers 'unavailable' for ``retry_interval`` after a failure)."""
    for _ in range(attempts):
        try:
            return await call()
        except StoreUnavailable:
            await asyncio.sleep(0.25)
    raise AssertionError(f"the store never answered in {attempts} attempts")


async def test_the_limits_scripts_reach_the_new_master(
    failover: tuple[RedisServer, RedisServer, DelayingProxy],
) -> None:
    """A lease taken after the failover is taken on the new master, not refused for good."""
    old, new, proxy = failover
    store = RedisState(proxy.url, prefix=unique_prefix(), retry_interval=0.2)
    key = store_key(store.prefix, "conc", "t", "alice")
    try:
        assert (await store.acquire(key, "before", 5, 30.0)).allowed  # the pipe's connection: to the old master
        await fail_over(old, new, proxy)
        decision = await _until_answered(lambda: store.acquire(key, "after", 5, 30.0))
        assert decision.allowed
        client = Redis.from_url(new.url)
        try:
            assert await client.zscore(key, "after") is not None
        finally:
            await client.aclose()
    finally:
        await store.aclose()


async def test_the_lease_renewals_reach_the_new_master(
    failover: tuple[RedisServer, RedisServer, DelayingProxy],
) -> None:
    """Renewals (redis-py's pool) put the held leases back on the new master, which lacked them."""
    old, new, proxy = failover
    store = RedisState(proxy.url, prefix=unique_prefix(), retry_interval=0.2)
    key = store_key(store.prefix, "conc", "t", "alice")
    try:
        assert (await store.acquire(key, "held", 5, 30.0)).allowed
        assert await store.renew([(key, "held")], 30.0) == 0  # the pool's connection: to the old master
        await fail_over(old, new, proxy)
        gone = await _until_answered(lambda: store.renew([(key, "held")], 30.0))
        assert gone == 1  # the new master never had it: re-created
        client = Redis.from_url(new.url)
        try:
            assert await client.zscore(key, "held") is not None
        finally:
            await client.aclose()
    finally:
        await store.aclose()


async def test_a_keeper_through_the_failover_warns_once_and_renews_again(
    failover: tuple[RedisServer, RedisServer, DelayingProxy], caplog: pytest.LogCaptureFixture
) -> None:
    """The keeper's own loop: at most one 'could not renew' line, then 'renewed again', the lease on the new master."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.state")
    old, new, proxy = failover
    store = RedisState(proxy.url, prefix=unique_prefix(), retry_interval=0.1)
    keeper = LeaseKeeper(store, 0.9, retry=0.1)  # renewed every 0.3 s
    key = store_key(store.prefix, "conc", "t", "alice")
    client = Redis.from_url(new.url)
    try:
        assert (await keeper.acquire(key, "held", 5)).allowed
        await asyncio.sleep(0.4)  # one renewal on the old master
        await fail_over(old, new, proxy)
        for _ in range(100):  # 5 s
            if await client.zscore(key, "held") is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the keeper never renewed the lease on the new master")
        await keeper.release("held")
        for _ in range(40):  # a renewal in flight may put it back: released again after it (2 s)
            if await client.zcard(key) == 0:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the lease was never given back")
    finally:
        await keeper.aclose(keep_held=False)
        await store.aclose()
        await client.aclose()
    renew_lines = [r for r in caplog.records if r.getMessage().startswith("could not renew")]
    assert len(renew_lines) <= 1


async def test_the_management_state_is_written_on_the_new_master(
    failover: tuple[RedisServer, RedisServer, DelayingProxy],
) -> None:
    """A management change after the failover is saved on the new master, not refused (503) for good."""
    old, new, proxy = failover
    store = RedisStore.from_url(proxy.url, prefix=unique_prefix())
    try:
        await store.update(lambda overlay: overlay.next())  # the pool's connection: to the old master
        await fail_over(old, new, proxy)
        for _ in range(8):
            try:
                saved = await store.update(lambda overlay: overlay.next())
                break
            except Unavailable:
                await asyncio.sleep(0.25)
        else:
            raise AssertionError("every change was refused after the failover")
        assert saved.revision >= 1
    finally:
        await store.aclose()


async def test_answers_again_is_logged_only_when_the_master_takes_writes(
    failover: tuple[RedisServer, RedisServer, DelayingProxy], caplog: pytest.LogCaptureFixture
) -> None:
    """While the address still names the demoted master (it answers PING, refuses writes), the log does not
    say "answers again"; once it names the new master, it says so once."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.state")
    old, new, proxy = failover
    store = RedisState(proxy.url, prefix=unique_prefix(), retry_interval=0.05)
    key = store_key(store.prefix, "conc", "t", "alice")
    client = Redis.from_url(old.url)
    try:
        assert (await store.acquire(key, "before", 5, 30.0)).allowed
        await client.replicaof("127.0.0.1", new.port)  # the address still reaches it: a replica now
        with pytest.raises(StoreUnavailable):
            await store.acquire(key, "during", 5, 30.0)
        await asyncio.sleep(1.0)  # the store's probe tries it every 0.05 s meanwhile
        assert store.failing
        assert not [r for r in caplog.records if r.getMessage() == "Redis store answers again"]
        proxy.target = ("127.0.0.1", new.port)
        assert (await _until_answered(lambda: store.acquire(key, "after", 5, 30.0))).allowed
    finally:
        await store.aclose()
        await client.aclose()
    assert len([r for r in caplog.records if r.getMessage() == "Redis store answers again"]) == 1
