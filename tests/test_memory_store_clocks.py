"""The in-memory store's clocks: windows, reservations and leases are intervals (the monotonic clock),
quotas are calendar periods (the wall clock). The wall clock set back or forward (NTP, an operator)
changes no interval."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway.state.memory import MemoryState
from support.clock import Clock

WINDOW = 10.0
_LEASES = itertools.count()


async def _hit(store: MemoryState) -> bool:
    return (await store.hit("k", 1, WINDOW, "m")).allowed


async def _reserve(store: MemoryState) -> bool:
    return (await store.reserve("k", WINDOW, [(1, 1)])).granted == (1,)


async def _acquire(store: MemoryState) -> bool:
    # A new lease each time: the one before was never released (a connection lost without its release).
    return (await store.acquire("k", f"lease-{next(_LEASES)}", 1, WINDOW)).allowed


TAKES: dict[str, Callable[[MemoryState], Awaitable[bool]]] = {"hit": _hit, "reserve": _reserve, "acquire": _acquire}


@pytest.mark.parametrize("wall_step", [-3600.0, 3600.0])
@pytest.mark.parametrize("operation", sorted(TAKES))
async def test_a_wall_clock_step_neither_frees_nor_holds_an_interval(operation: str, wall_step: float) -> None:
    """Set forward, the wall clock emptied every window and lease at once (a fresh budget for every
    client); set back, it kept them full for the hour (a limit refusing everyone, dead leases counted)."""
    take = TAKES[operation]
    wall, monotonic = Clock(1_767_225_600.0), Clock()
    store = MemoryState(clock=wall, monotonic=monotonic)
    assert await take(store)
    wall.now += wall_step
    assert not await take(store)  # the same instant, by the monotonic clock: the limit of 1 is taken
    monotonic.now += WINDOW + 0.5
    assert await take(store)  # the window or ttl is over, whatever the wall clock says


async def test_a_quota_period_follows_the_wall_clock() -> None:
    """A quota's period is a calendar one: the wall clock, not the monotonic clock, ends it."""
    wall, monotonic = Clock(1_767_225_600.0), Clock()  # 2026-01-01T00:00:00Z
    store = MemoryState(clock=wall, monotonic=monotonic)
    assert (await store.consume("q", 1, "hour")).allowed
    monotonic.now += 7200
    refused = await store.consume("q", 1, "hour")
    assert not refused.allowed and refused.resets_at == 1_767_225_600.0 + 3600
    wall.now += 3600
    assert (await store.consume("q", 1, "hour")).allowed
