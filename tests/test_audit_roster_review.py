"""Review of the management bus's roster (``bus_roster.py``): a dead worker must lapse, however the bus flaps.

A worker back on the bus (:meth:`Roster.rejoined`) gave every worker it knew ``ttl`` more seconds from
then. A worker killed with SIGKILL (its entry no longer renewed) was so kept as long as the bus was lost
and back more often than once per ``ttl`` (30 s by default): for ever, and every ``close`` or ``send``
that found nothing was a 503 naming the dead worker. Measured on the code before: a roster entry of
6 s, the bus's subscription killed every 2.5 s, the dead worker still missing 20 s on. Now the time
off the bus is added instead: what each entry had left when the bus was lost stays left.

And a stopping worker removes its entry (``aclose``) with a Redis call that was bounded only by the
client's socket timeout: a client without one (``RedisBus`` takes any) and a Redis that does not answer
(paused, a host gone) held the shutdown for ever. Now 2 s at most; the entry then lapses.

Real Redis: the shared one with a prefix of the test's own, and a private ``redis-server`` where the
subscriptions are killed (``CLIENT KILL TYPE pubsub`` would end other tests' on the shared one).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.management.bus import Command, RedisBus
from asgi_ws_gateway.management.bus_roster import Roster
from asgi_ws_gateway.redis_client import connect as connect_redis
from support.redis import RedisServer, redis_available, shared_prefix, unique_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")

GHOST = "ghost-host:4242:0a0b0c"
"""A worker that renewed its entry once and died (no process has this id)."""


@pytest.fixture
async def shared() -> AsyncIterator[tuple[Redis, str]]:
    """A client of the shared Redis and a prefix of this test's own; its keys deleted after."""
    async with shared_prefix() as pair:
        yield pair


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def redis_now(client: Redis) -> float:
    seconds, microseconds = await client.time()
    return seconds + microseconds / 1_000_000


async def test_a_dead_workers_entry_lapses_though_the_bus_is_lost_and_back_again_and_again(
    shared: tuple[Redis, str],
) -> None:
    """Lost and back at every renewal (each outage short): the ghost's entry lapses when it would have."""
    client, prefix = shared
    ghost = Roster(client, prefix=prefix, worker=GHOST, ttl=1.0)
    me = Roster(client, prefix=prefix, worker="w-me", ttl=1.0)
    await ghost.renew()
    lapses = await client.zscore(me.key, GHOST)
    assert lapses is not None
    assert await me.renew() == {GHOST, "w-me"}
    async with asyncio.timeout(10):
        while await redis_now(client) <= lapses + 2 * me.ttl:  # well past its lapse, by Redis's clock
            me.lost()
            me.rejoined()  # was: the ghost given 1 s more each time
            await me.renew()
            await asyncio.sleep(0.1)
    assert await me.renew() == {"w-me"}
    assert await me.workers() == {"w-me"}


async def test_the_time_off_the_bus_does_not_count_against_the_workers_known(shared: tuple[Redis, str]) -> None:
    """What the rule is for: an outage longer than an entry lasts lapsed every entry in Redis; the workers
    known then are still waited for, as long as they had left when the bus was lost."""
    client, prefix = shared
    other = Roster(client, prefix=prefix, worker="w-other", ttl=1.0)
    me = Roster(client, prefix=prefix, worker="w-me", ttl=1.0)
    await other.renew()
    assert await me.renew() == {"w-me", "w-other"}
    me.lost()
    lapses = await client.zscore(me.key, "w-other")
    assert lapses is not None
    async with asyncio.timeout(10):
        while await redis_now(client) <= lapses + me.ttl:  # noqa: ASYNC110 - off the bus longer than an entry lasts
            await asyncio.sleep(0.05)
    me.rejoined()
    assert "w-other" in await me.renew()  # not renewed since, but a moment behind: waited for
    async with asyncio.timeout(10):  # and for no longer than it had left
        while "w-other" in await me.workers():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_killed_worker_is_not_missing_for_ever_while_the_bus_flaps(private_redis: RedisServer) -> None:
    """A real bus whose subscription is killed every 2 s (entries of 3 s: ``check_interval`` 0.5) and a
    worker that died: a close or send finding nothing was a 503 naming it as long as the flapping went on."""
    prefix = unique_prefix()
    admin = Redis.from_url(private_redis.url, decode_responses=True)
    bus = RedisBus(connect_redis(private_redis.url, decode_responses=True, encoding_errors="replace"),
                   prefix=prefix, check_interval=0.5)  # fmt: skip

    async def handle(command: Command) -> Command | None:
        return {"found": False}

    try:
        await bus.start(handle)
        await Roster(admin, prefix=prefix, worker=GHOST, ttl=bus.roster.ttl).renew()  # renewed once, then killed
        missing = [GHOST]
        async with asyncio.timeout(40):  # on the code before: missing as long as the bus flaps
            while GHOST in missing:
                await admin.client_kill_filter(_type="pubsub")
                await asyncio.sleep(2)
                missing = (await bus.gather({"op": "close", "id": "none"}, wait=0.5)).missing
    finally:
        await bus.aclose()
        await admin.aclose()


async def test_a_stopping_worker_does_not_wait_for_ever_on_a_redis_that_does_not_answer(
    private_redis: RedisServer,
) -> None:
    """Redis paused (SIGSTOP: the connection open, nothing answered) and a client without socket timeouts:
    ``aclose`` returns (was: never); once Redis resumes the entry no longer counts: removed (the removal was
    written before Redis paused answering), or lapsing at its deadline (a renewal in flight at the pause was
    cancelled with its connection, and the removal's new connection waited on a greeting Redis never answered:
    1 CI run in 3 under load, 2026-12-07)."""
    process = private_redis._process
    assert process is not None
    client = connect_redis(private_redis.url, decode_responses=True, socket_timeout=None, socket_connect_timeout=None)
    bus = RedisBus(client, prefix=unique_prefix(), check_interval=0.2)

    async def handle(command: Command) -> Command | None:
        return None

    admin = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await bus.start(handle)
        async with asyncio.timeout(10):
            while await admin.zscore(bus.roster.key, bus.worker) is None:  # noqa: ASYNC110 - on the roster
                await asyncio.sleep(0.02)
        os.kill(process.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(30):  # was: a shutdown that never ended
                await bus.aclose()
        finally:
            os.kill(process.pid, signal.SIGCONT)
        async with asyncio.timeout(10):
            while not await _gone_or_lapsed(admin, bus.roster.key, bus.worker):  # noqa: ASYNC110 - in Redis
                await asyncio.sleep(0.02)
    finally:
        await admin.aclose()


async def _gone_or_lapsed(admin: Redis, key: str, worker: str) -> bool:
    """The roster no longer counts ``worker``: its entry removed, or its deadline (the score) past by Redis's clock."""
    deadline = await admin.zscore(key, worker)
    if deadline is None:
        return True
    seconds, micros = await admin.time()
    return deadline < seconds + micros / 1e6
