"""End to end: a ``limit-concurrency`` lease whose acquire has no known outcome is given back.

Redis runs the acquire script as soon as it is sent; when its answer comes after ``store.timeout``
(admitted unchecked), or the call is cancelled (``policy_timeout``), or the client leaves while it
is in flight, the lease exists in Redis and the gateway never learnt it. It used to stay there,
neither renewed nor released, for the whole ``lease_ttl``: the tenant's one slot was gone. Real
uvicorn, a real upstream, the shared Redis behind a proxy that makes its answers late; the sorted
set is read directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as redis

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import build_config
from support.rawhttp import handshake
from support.redis import SHARED_REDIS, DelayingProxy, redis_available
from support.servers import UvicornServer
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379")

VICTIM = {"X-Tenant": "victim"}
LATE = 1.0
"""Seconds Redis's answers take while "slow": well past the store timeouts below that are meant to expire."""
WAIT = 15.0
"""Seconds to wait for the gateway's background release: generous, the tests poll for it."""


@pytest.fixture
def proxy() -> Iterator[DelayingProxy]:
    with DelayingProxy() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[redis.Redis]:
    connection = redis.Redis.from_url(SHARED_REDIS)
    yield connection
    await connection.aclose()


def _gateway(upstream: UpstreamServer, proxy: DelayingProxy, prefix: str, timeout: float, **top: Any) -> UvicornServer:
    policy = {"limit-concurrency": {"key": "{header.x-tenant}", "max": 1, "lease_ttl": 3600}}
    store = {"type": "redis", "url": proxy.url, "prefix": prefix, "timeout": timeout}
    config = build_config(upstream, api={"policies": [policy]}, store=store, **top)
    return UvicornServer(WebSocketGateway(not_found, config=config))


async def _leases(client: redis.Redis, prefix: str) -> int:
    """Leases in Redis under ``prefix``, whoever holds them."""
    return sum([await client.zcard(key) async for key in client.scan_iter(match=f"{prefix}:conc:*")])


async def _until_no_leases(client: redis.Redis, prefix: str) -> None:
    async with asyncio.timeout(WAIT):
        while await _leases(client, prefix):  # noqa: ASYNC110 - Redis's state
            await asyncio.sleep(0.05)


async def _until_a_lease(client: redis.Redis, prefix: str) -> None:
    async with asyncio.timeout(WAIT):
        while not await _leases(client, prefix):  # noqa: ASYNC110 - Redis's state
            await asyncio.sleep(0.02)


async def _warm_up(url: str, client: redis.Redis, prefix: str, proxy: DelayingProxy) -> None:
    """One connection while Redis is fast: the store is connected and its scripts loaded.

    The connection's release must have had its answer before a test makes Redis slow: late, it
    would time out and make the store stop calling Redis for a moment (the acquire under test with it).
    """
    async with await connect(url, additional_headers={"X-Tenant": "warm-up"}) as ws:
        await ws.send("warm")
        assert await ws.recv() == "warm"
    await _until_no_leases(client, prefix)
    await proxy.settle()


async def _the_tenant_has_its_one_slot(url: str) -> None:
    async with await connect(url, additional_headers=VICTIM) as ws:
        await ws.send("admitted")
        assert await ws.recv() == "admitted"
        assert (await expect_status(url, additional_headers=VICTIM))[0] == 429  # the limit still holds


async def test_an_answer_later_than_the_store_timeout_leaves_no_lease(
    upstream: UpstreamServer, proxy: DelayingProxy, client: redis.Redis, redis_prefix: str
) -> None:
    """Admitted unchecked (fail-open): the lease Redis made anyway is released, during and after."""
    with _gateway(upstream, proxy, redis_prefix, timeout=0.2) as server:
        url = server.url("/ws/echo")
        await _warm_up(url, client, redis_prefix, proxy)
        proxy.delay = LATE
        async with await connect(url, additional_headers=VICTIM, open_timeout=WAIT) as ws:
            await ws.send("unchecked")
            assert await ws.recv() == "unchecked"
            proxy.delay = 0
            await _until_no_leases(client, redis_prefix)  # released while the connection is open
        await _the_tenant_has_its_one_slot(url)
        await _until_no_leases(client, redis_prefix)


async def test_an_acquire_cancelled_by_the_policy_timeout_leaves_no_lease(
    upstream: UpstreamServer, proxy: DelayingProxy, client: redis.Redis, redis_prefix: str
) -> None:
    """A 504 ``policy_timeout`` mid-acquire: the lease Redis made is released without delaying the 504."""
    limits = {"policy_timeout": 0.3}
    with _gateway(upstream, proxy, redis_prefix, timeout=5, handshake_limits=limits) as server:
        url = server.url("/ws/echo")
        await _warm_up(url, client, redis_prefix, proxy)
        proxy.delay = LATE
        assert (await expect_status(url, additional_headers=VICTIM, open_timeout=WAIT))[0] == 504
        proxy.delay = 0
        await _until_no_leases(client, redis_prefix)
        # The answers still held back (up to LATE) would hold back the next call on the store's one
        # connection (its calls are pipelined) past the policy_timeout: a 504 of its own.
        await proxy.settle(quiet=LATE + 0.2)
        await _the_tenant_has_its_one_slot(url)
        await _until_no_leases(client, redis_prefix)


async def test_a_client_gone_while_its_acquire_is_in_flight_leaves_no_lease(
    upstream: UpstreamServer,
    proxy: DelayingProxy,
    client: redis.Redis,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client leaves after Redis made the lease and before the store gave up on the answer."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    with _gateway(upstream, proxy, redis_prefix, timeout=0.5) as server:
        url = server.url("/ws/echo")
        await _warm_up(url, client, redis_prefix, proxy)
        proxy.delay = 10 * LATE  # past the store's timeout, and its one retry's
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(handshake(extra=b"X-Tenant: victim\r\n"))
            await writer.drain()
            await _until_a_lease(client, redis_prefix)  # Redis ran the acquire; its answer is on the way
        finally:
            writer.close()
            await writer.wait_closed()
        async with asyncio.timeout(WAIT):  # the gateway gave up on the answer, then on the client
            while not any("abandoned (client went away)" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        proxy.delay = 0
        await _until_no_leases(client, redis_prefix)
        await _the_tenant_has_its_one_slot(url)
        await _until_no_leases(client, redis_prefix)
