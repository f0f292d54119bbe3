"""SIGTERM to ``asgi-ws-gateway run`` with connections open under a ``limit-concurrency`` cap on Redis: every
lease is given back when Redis answers, also when the store failed just before.

After a failure the store answers "unavailable" at once for its ``retry_interval`` (1 s); a shutdown in
that second released nothing (each release, and the one try on closing, answered at once), and the
leases of every connection the shutdown closed stayed counted until ``lease_ttl``: a cap of 3 refused
every user's connection elsewhere for that long. Now the try on closing waits for the store's retry,
bounded.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.state.base import StoreUnavailable
from asgi_ws_gateway.state.leases import LeaseKeeper
from support.clients import connect
from support.configs import build_config, write_config
from support.processes import ready_server
from support.redis import DelayingProxy, RedisServer, redis_available, unique_prefix
from support.upstream import UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]
OPEN = 3


def _wait_for_line(output: Callable[[], str], text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in output():
        assert time.monotonic() < deadline, output()
        time.sleep(0.05)


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
@pytest.mark.parametrize("failed_before", [False, True], ids=["redis-up", "store-failed-just-before"])
async def test_sigterm_releases_every_lease_when_redis_answers(tmp_path: Path, failed_before: bool) -> None:
    prefix = unique_prefix()
    policy = {"limit-concurrency": {"key": "{header.x-user}", "max": 10, "lease_ttl": 60, "on_store_error": "open"}}
    with RedisServer() as redis_server, DelayingProxy(port=redis_server.port) as proxy, UpstreamServer() as upstream:
        config = build_config(
            upstream, path="/ws", api={"policies": [policy]},
            store={"type": "redis", "url": proxy.url, "prefix": prefix, "timeout": 0.2},
        )  # fmt: skip
        path = write_config(tmp_path, config)
        client = Redis.from_url(redis_server.url)
        try:
            cmd = lambda port: [*RUN, str(path), "--port", str(port), "--log-level", "info"]  # noqa: E731
            with ready_server(cmd) as server:
                url = f"ws://127.0.0.1:{server.port}/ws"
                sockets = [await connect(url, additional_headers={"x-user": "alice"}) for _ in range(OPEN)]
                keys = [k async for k in client.scan_iter(match=f"{prefix}:conc:*")]
                assert len(keys) == 1 and await client.zcard(keys[0]) == OPEN, keys
                if failed_before:
                    proxy.delay = 1.0  # the next call times out (0.2 s): the store fails, for 1 s
                    # admitted unchecked (fail-open); its lease, taken late, is released in the background
                    sockets.append(await connect(url, additional_headers={"x-user": "bob"}))
                    _wait_for_line(server.output, "Redis store failed")
                    proxy.delay = 0.0
                server.process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(server.wait_exit, 30) == 0, server.output()
                output = server.output()
                for ws in sockets:
                    await ws.close()
            held = {k: await client.zcard(k) async for k in client.scan_iter(match=f"{prefix}:conc:*")}
            assert held == {}, output  # a key is gone with its last lease
        finally:
            await client.aclose()


class _Down:
    """A store that answers every release "unavailable" (Redis down), counting the calls."""

    prefix = "down"

    def __init__(self) -> None:
        self.releases = 0

    async def release(self, key: str, lease: str) -> None:
        self.releases += 1
        raise StoreUnavailable("Redis is unavailable (retrying shortly)")


async def test_closing_keepers_of_a_store_that_stays_down_wait_for_it_once() -> None:
    """The first keeper tries again (bounded); the next, on the same store, tries once and gives up."""
    store = _Down()
    first, second = LeaseKeeper(store, 60.0), LeaseKeeper(store, 60.0)  # type: ignore[arg-type]
    for keeper in (first, second):
        keeper._orphan("key", "lease")
        await asyncio.sleep(0)  # its background release tries once
    store.releases = 0
    await first.aclose(keep_held=False)
    tried_by_first, store.releases = store.releases, 0
    await second.aclose(keep_held=False)
    assert tried_by_first > 1
    assert store.releases == 1
