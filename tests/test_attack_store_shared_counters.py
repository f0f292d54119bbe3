"""Policies sharing a counter (``counter:``) never cut each other's counts short.

Found by an attack pass: on Redis a ``limit-concurrency`` with ``lease_ttl: 3`` sharing a counter
with one of ``lease_ttl: 600`` set the whole key's TTL to 3 s on each acquire, and Redis dropped the
other API's live leases with it (its cap of 2 admitted 2 more while 2 connections were open); a
``rate-limit-by-key`` with a 2-s window did the same to an hourly one's log (the memory store too:
each hit set the key's expiry to its own window). A key's expiry now only ever extends, and a rate
log keeps its events for the longest window counting in it, each policy counting its own window.
A day and a month quota sharing a counter were one key on the 1st of a month: the day's expiry
ended the month's count.
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from asgi_ws_gateway.state.base import Store, store_key
from asgi_ws_gateway.state.memory import MemoryState
from support.clock import Clock
from support.policies import build, context, denied
from support.redis import redis_available, redis_state

Wait = Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, Wait]]:
    """A store, and how to let time pass for it (a fake clock in memory; Redis's own, waited for)."""
    if request.param == "memory":
        clock = Clock()

        async def later(seconds: float) -> None:
            clock.now += seconds

        yield MemoryState(clock=clock, monotonic=clock), later
        return
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    async with redis_state() as store:
        yield store, asyncio.sleep


async def test_a_shorter_lease_ttl_leaves_the_others_leases(shared: tuple[Store, Wait]) -> None:
    """Before (Redis): both connections of the 600-s policy stopped counting 1 s after the other's acquire."""
    store, later = shared
    key = store_key(store.prefix, "conc", "shared", "tenant")
    assert [(await store.acquire(key, f"feeds-{i}", 2, 600)).allowed for i in range(2)] == [True, True]
    assert (await store.acquire(key, "chat", 3, 1)).allowed  # the other policy's cap is 3
    await store.release(key, "chat")
    await later(1.5)
    assert [(await store.acquire(key, f"more-{i}", 2, 600)).allowed for i in range(2)] == [False, False]


async def test_a_shorter_window_leaves_the_longer_ones_log(shared: tuple[Store, Wait]) -> None:
    """Before: 1 s after one hit of the 1-s policy the hourly limit of 3 admitted 3 more."""
    store, later = shared
    key = store_key(store.prefix, "rate", "shared", "alice")
    assert [(await store.hit(key, 3, 3600, f"hour-{i}")).allowed for i in range(3)] == [True, True, True]
    assert (await store.hit(key, 100, 1, "second-0")).allowed
    await later(1.5)
    assert (await store.hit(key, 1, 1, "second-1")).allowed  # its own window: nothing in the last second
    assert (await store.hit(key, 1, 1, "second-2")).retry_after > 0  # and now one
    refused = await store.hit(key, 3, 3600, "hour-3")
    assert not refused.allowed
    assert 3600 - 10 < refused.retry_after <= 3600  # when the oldest 3 of its 5 events have left the hour


async def test_a_day_and_a_month_quota_sharing_a_counter_count_apart_on_the_first() -> None:
    """Before: on the 1st both counted on one key; the next day the month's count had expired with
    the day's, and its quota of 2 admitted again."""
    clock = Clock(calendar.timegm((2026, 3, 1, 12, 0, 0)))
    store = MemoryState(clock=clock, monotonic=clock)
    month = build({"quota-by-key": {"key": "k", "limit": 2, "period": "month", "counter": "shared"}}, store, clock)
    day = build({"quota-by-key": {"key": "k", "limit": 5, "period": "day", "counter": "shared"}}, store, clock)
    for _ in range(2):
        await month.apply(context())
    await denied(month.apply(context()))
    for _ in range(5):  # the day's own count: the month's two are not in it
        await day.apply(context())
    clock.now += 86_400
    denial = await denied(month.apply(context()))
    assert denial.detail.endswith("it renews at 2026-04-01T00:00:00Z")
