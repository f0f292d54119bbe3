"""Limits, amounts and windows past what Redis's scripts count exactly (Lua's numbers are doubles).

A quota of 10**30 answered ``remaining`` 0, ``reserve`` of 10**29 granted -2**63, a window or ttl of
10**20 s failed in ``PEXPIRE`` (the store unavailable, for good); the in-memory store counted them
exactly, so the two stores answered apart. Now both count a limit or amount above 2**53 as 2**53 and
a window longer than 2**53 ms as that long. One test per method, each on both stores.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from asgi_ws_gateway.state.base import MAX_COUNT, Store, store_key
from asgi_ws_gateway.state.memory import MemoryState
from asgi_ws_gateway.state.redis import RedisState
from support.redis import redis_available, redis_state

HUGE = 10**30
LONG = 1e20  # seconds


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryState()
        return
    if not redis_available():
        pytest.skip("needs redis-server")
    async with redis_state() as state:
        yield state


def _key(store: Store, kind: str) -> str:
    return store_key(store.prefix, kind, "huge", "alice")


async def test_hit_counts_a_limit_above_2_53_as_2_53(store: Store) -> None:
    decision = await store.hit(_key(store, "rate"), HUGE, 60, "a")
    assert (decision.allowed, decision.remaining) == (True, MAX_COUNT - 1)


async def test_hit_keeps_a_window_longer_than_2_53_ms(store: Store) -> None:
    key = _key(store, "rate")
    assert (await store.hit(key, 1, LONG, "a")).allowed
    refused = await store.hit(key, 1, LONG, "b")
    assert (refused.allowed, refused.remaining) == (False, 0)


async def test_consume_counts_a_limit_above_2_53_as_2_53(store: Store) -> None:
    decision = await store.consume(_key(store, "quota"), HUGE, "day")
    assert (decision.allowed, decision.remaining) == (True, MAX_COUNT - 1)


async def test_reserve_grants_at_most_2_53(store: Store) -> None:
    key = _key(store, "msg")
    assert (await store.reserve(key, 60, [(10**29, HUGE)])).granted == (MAX_COUNT,)
    assert (await store.reserve(key, 60, [(1, HUGE)])).granted == (0,)  # the window's 2**53 are spent


async def test_reserve_keeps_a_window_longer_than_2_53_ms(store: Store) -> None:
    reservation = await store.reserve(_key(store, "msg"), LONG, [(3, 5)])
    assert reservation.granted == (3,)
    assert 0 < reservation.resets_in <= MAX_COUNT / 1000


async def test_acquire_counts_a_limit_above_2_53_and_keeps_a_long_ttl(store: Store) -> None:
    decision = await store.acquire(_key(store, "conc"), "lease", HUGE, LONG)
    assert (decision.allowed, decision.remaining) == (True, MAX_COUNT - 1)


async def test_renew_keeps_a_ttl_longer_than_2_53_ms(store: Store) -> None:
    key = _key(store, "conc")
    assert (await store.acquire(key, "lease", 2, 30.0)).allowed
    assert await store.renew([(key, "lease")], LONG) == 0
    assert (await store.acquire(key, "other", 2, 30.0)).remaining == 0  # still held


async def test_a_window_of_nan_seconds_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="NaN"):
        await store.hit(_key(store, "rate"), 1, math.nan, "a")


async def test_a_reserve_sent_again_answers_a_15_digit_grant_exactly() -> None:
    """The script remembers what an attempt got: a 15-digit grant came back as ``...340`` (14 digits kept)."""
    if not redis_available():
        pytest.skip("needs redis-server")
    async with redis_state() as state:
        assert isinstance(state, RedisState)
        key = _key(state, "msg")
        args = [60_000, 123456789012345, 10**15, "the-attempt"]
        first = await state._reserve([key], args)
        again = await state._reserve([key], args)  # as redis-py or the pipe sends it again
        assert int(first[0]) == int(again[0]) == 123456789012345
