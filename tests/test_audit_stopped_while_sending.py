"""Background work that loops over Redis calls stops when stopped as one of its commands is sent.

Such a task was cancelled once and awaited: on Python 3.11 a cancellation that came as a Redis command's
send completed was lost (``asyncio.wait_for``, in redis-py's send, returns the finished send and drops
it), the task looped on, and what awaited it never returned (a worker's shutdown held for ever). Each
test stops its object after each number of loop turns from the start, with Redis calls sent without a
pause: some of the turns land on a send. The cancellations that follow are lost as often (7 in a row
seen): they come every 10 ms here, not every second, to keep the tests short. Real Redis, own prefix.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import RedisStore
from asgi_ws_gateway.management.store_sync import StoreSync
from asgi_ws_gateway.redis_client import task_stop
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.state.base import StoreUnavailable
from asgi_ws_gateway.state.leases import LeaseKeeper
from asgi_ws_gateway.state.redis import RedisState
from support.redis import SHARED_REDIS, redis_available, shared_prefix, unique_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis at 127.0.0.1:6379")

TURNS = 24


@pytest.fixture(autouse=True)
def _cancel_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_stop, "CANCEL_AGAIN_AFTER", 0.01)


async def _returns(stop: Callable[[], Awaitable[None]]) -> bool:
    """Whether ``stop()`` returns (within 10 s: at once when it does). Not ``asyncio.timeout``: the code
    before swallowed the cancellation that would have cut it short, and returned."""
    stopping = asyncio.ensure_future(stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)
    for _ in range(50):  # the code before: each cancellation goes on to the task, which may lose it too
        if stopping.done():
            break
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=0.2)
    return bool(done)


async def test_a_sync_stopped_as_a_poll_is_sent_stops() -> None:
    """``StoreSync.stop`` and its poller of the stored state (no pause between polls)."""
    async with shared_prefix() as (_, prefix):
        for turns in range(TURNS):
            store = RedisStore.from_url(SHARED_REDIS, prefix=prefix)
            sync = StoreSync(WebSocketGateway(not_found, config={"apis": []}), store=store, poll_interval=0)
            await sync.start()  # the poller's first poll is on its way
            for _ in range(turns):
                await asyncio.sleep(0)
            assert await _returns(sync.stop), f"stop did not return, stopped {turns} loop turn(s) after start"


async def test_a_lease_keeper_closed_as_a_renewal_is_sent_closes() -> None:
    """``LeaseKeeper.aclose`` (shutting down) and its renewals of a lease held (every microsecond)."""
    async with shared_prefix() as (_, prefix):
        store = RedisState(SHARED_REDIS, prefix=prefix)
        try:
            for turns in range(TURNS):
                keeper = LeaseKeeper(store, ttl=3e-6)
                assert (await keeper.acquire(f"{prefix}:leases", uuid.uuid4().hex, 1_000)).allowed
                for _ in range(turns):
                    await asyncio.sleep(0)
                closed = await _returns(lambda: keeper.aclose(keep_held=False))  # noqa: B023 - awaited here
                assert closed, f"aclose did not return, closed {turns} loop turn(s) after the renewals began"
        finally:
            await store.aclose()


async def test_a_redis_state_closed_as_a_probe_is_sent_stops_probing() -> None:
    """``RedisState.aclose`` and its watch for Redis's recovery, probing without a pause a database Redis
    refuses (each probe's ``SELECT`` fails): it did not wait for the watch, which probed on after it."""
    for turns in range(TURNS):
        store = RedisState("redis://127.0.0.1:6379/99", prefix=unique_prefix(), retry_interval=0)
        with pytest.raises(StoreUnavailable):
            await store.acquire("leases", uuid.uuid4().hex, 1, 1.0)  # refused: the watch starts
        watch = store._watch
        assert watch is not None
        for _ in range(turns):
            await asyncio.sleep(0)
        assert await _returns(store.aclose)
        done, _ = await asyncio.wait({watch}, timeout=1)  # the code before: its one cancellation, if not lost
        assert await _returns(lambda: task_stop.stop_task(watch))  # noqa: B023 - awaited here
        assert done, f"the watch probed on after aclose, closed {turns} loop turn(s) after it started"
