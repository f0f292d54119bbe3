"""A worker leaving the management bus leaves its roster entry while still subscribed.

``RedisBus.aclose`` unsubscribed first and removed its roster entry after: for that moment, another
worker's command found it on the roster and not on the channel, and named it missing (a ``503`` for a
close or send of a connection it never held). Now the entry goes first. A real bus on the shared Redis;
the roster's ``leave`` is wrapped to read, at the moment it runs, the channel's subscribers as Redis
counts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway.management.bus import Command, RedisBus
from asgi_ws_gateway.redis_client import connect as connect_redis
from asgi_ws_gateway.redis_client import task_stop
from support.redis import SHARED_REDIS, redis_available, shared_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis at 127.0.0.1:6379")


async def _ignore(command: Command) -> Command | None:
    return None


async def test_the_roster_entry_goes_before_the_subscription() -> None:
    async with shared_prefix() as (admin, prefix):
        bus = RedisBus(connect_redis(SHARED_REDIS, decode_responses=True, encoding_errors="replace"), prefix=prefix,
                       check_interval=0.2)  # fmt: skip
        subscribed_at_leave: list[int] = []
        leave: Callable[[], Awaitable[None]] = bus.roster.leave

        async def counted_leave() -> None:
            ((_, count),) = await admin.pubsub_numsub(bus.channel)
            subscribed_at_leave.append(int(count))
            await leave()

        bus.roster.leave = counted_leave  # type: ignore[method-assign]
        await bus.start(_ignore)
        async with asyncio.timeout(10):
            while await admin.zscore(bus.roster.key, bus.worker) is None:  # noqa: ASYNC110 - on the roster
                await asyncio.sleep(0.02)
        await bus.aclose()
        assert subscribed_at_leave == [1]  # was [0]: off the channel while still on the roster
        assert await admin.zscore(bus.roster.key, bus.worker) is None
        await asyncio.sleep(0.5)  # two renewal intervals: nothing writes the entry back
        assert await admin.zscore(bus.roster.key, bus.worker) is None


async def test_a_bus_closed_as_a_renewal_is_sent_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``aclose`` cancelled the roster's renewal once and waited for it: a cancellation that came as the
    renewal's command was sent was lost (Python 3.11's ``wait_for``, in redis-py), the renewal looped on,
    and ``aclose`` never returned (a worker's shutdown held for ever; 1 of 30 runs of the bus's flapping
    test under load). Closed after each number of loop turns from the start, whose first renewal is sent
    then: one of them lands on the send. The cancellation that follows a lost one comes after 10 ms here, not
    1 s (most of the turns lose the first: as test_audit_stopped_while_sending does)."""
    monkeypatch.setattr(task_stop, "CANCEL_AGAIN_AFTER", 0.01)
    async with shared_prefix() as (_, prefix):
        for turns in range(24):
            bus = RedisBus(connect_redis(SHARED_REDIS, decode_responses=True, encoding_errors="replace"),
                           prefix=prefix, check_interval=5)  # fmt: skip
            await bus.start(_ignore)  # subscribed: the first renewal is on its way
            for _ in range(turns):
                await asyncio.sleep(0)
            closing = asyncio.create_task(bus.aclose())
            done, _ = await asyncio.wait({closing}, timeout=10)  # a hang guard: it closes at once
            if not done:
                closing.cancel()  # was: the renewal, cancelled again through it, ends; then aclose
                await asyncio.wait({closing}, timeout=10)
            assert done, f"aclose did not return, closed {turns} loop turn(s) after start"
