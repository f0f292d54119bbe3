"""The management bus through a failover behind its address, and through its subscription lost.

A master demoted to a replica keeps its clients. A worker subscribed there still heard what the new
master published (a replica gets ``PUBLISH`` by replication), but the new master's count left it
out, so no answer of its was awaited (``gather``: the open connections of that worker went
unlisted); a worker whose pooled connection reached it published there alone and had ``READONLY``
for every reply list (each listing a 503, for good). Now each worker checks that its pool's server
takes writes and counts its subscription, and subscribes again on the new master. A subscription
redis-py renewed by itself (a connection cut while Redis stayed up) now runs a ``resync`` too:
what was published meanwhile was lost. Two private Redis servers behind a proxy whose target moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.management.bus import Command, Handler, RedisBus
from asgi_ws_gateway.management.errors import Unavailable
from asgi_ws_gateway.redis_client import connect
from support.redis import DelayingProxy, RedisServer, fail_over, failover_pair, redis_available, unique_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs redis-server")


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, DelayingProxy]]:
    with failover_pair(tmp_path) as servers:
        yield servers


def _bus(url: str, prefix: str) -> RedisBus:
    client = connect(url, decode_responses=True, encoding_errors="replace")
    return RedisBus(client, prefix=prefix, check_interval=0.2)


def _answering(name: str, heard: list[str] | None = None) -> Handler:
    async def handle(command: Command) -> Command | None:
        if heard is not None:
            heard.append(str(command.get("op")))
        return {"name": name}

    return handle


async def _answered_by(bus: RedisBus, names: set[str], attempts: int = 40) -> None:
    """``bus.gather`` until every one of ``names`` answers (and is counted): 10 s at most."""
    got: set[str] = set()
    for _ in range(attempts):
        try:
            answers = await bus.gather({"op": "who"}, wait=0.5)
        except Unavailable:
            answers = None
        if answers is not None:
            got = {str(reply["name"]) for reply in answers.replies}
            if got == names and answers.expected == len(names):
                return
        await asyncio.sleep(0.25)
    raise AssertionError(f"only {sorted(got)} answered, not {sorted(names)}")


async def test_workers_subscribed_on_the_demoted_master_are_counted_by_the_new_one(
    failover: tuple[RedisServer, RedisServer, DelayingProxy],
) -> None:
    """A worker joining after the failover hears the answers of those subscribed before it."""
    old, new, proxy = failover
    prefix = unique_prefix()
    a, b, c = _bus(proxy.url, prefix), _bus(proxy.url, prefix), _bus(proxy.url, prefix)
    try:
        await a.start(_answering("a"))
        await b.start(_answering("b"))
        await _answered_by(a, {"a", "b"})
        await fail_over(old, new, proxy)
        await c.start(_answering("c"))  # on the new master
        await _answered_by(c, {"a", "b", "c"})
    finally:
        for bus in (a, b, c):
            await bus.aclose()


async def test_a_worker_that_published_on_the_demoted_master_reaches_the_new_one(
    failover: tuple[RedisServer, RedisServer, DelayingProxy],
) -> None:
    """Its commands reach the workers on the new master, and its reply lists are written, not READONLY."""
    old, new, proxy = failover
    prefix = unique_prefix()
    a, c = _bus(proxy.url, prefix), _bus(proxy.url, prefix)
    try:
        await a.start(_answering("a"))
        await _answered_by(a, {"a"})  # its pool's connection: to the old master
        await fail_over(old, new, proxy)
        await c.start(_answering("c"))
        await _answered_by(a, {"a", "c"})
    finally:
        for bus in (a, c):
            await bus.aclose()


async def test_the_resync_after_a_lost_subscription_runs_once_subscribed_again() -> None:
    """A change published while the worker catches up (its resync) is heard, not lost in between.

    The resync ran before the worker subscribed again: a change saved after it read the store and
    published before the new subscription reached no one (caught only by the store's poll)."""
    with RedisServer() as server:
        heard: list[str] = []
        bus = _bus(server.url, unique_prefix())
        admin = Redis.from_url(server.url)

        async def handle(command: Command) -> Command | None:
            heard.append(str(command.get("op")))
            if command.get("op") == "resync":  # another worker's change, saved as this one catches up
                await admin.publish(bus.channel, '{"op": "reload"}')
            return None

        try:
            await bus.start(handle)
            assert await admin.client_kill_filter(_type="pubsub") == 1  # the subscription lost, Redis up
            for _ in range(40):
                if "reload" in heard:
                    break
                await asyncio.sleep(0.25)
            else:
                raise AssertionError(f"the change published during the resync was lost: heard {heard}")
        finally:
            await bus.aclose()
            await admin.aclose()
