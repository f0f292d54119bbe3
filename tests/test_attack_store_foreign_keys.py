"""Keys of the limits' namespace holding data the gateway did not write: that key starts again, the others never notice.

Another program sharing the prefix, an older version of the gateway, a hand edit: a key of
``<prefix>:<kind>:{...}`` holding another type (or a quota count that is not an integer) failed
every script on it with WRONGTYPE (or a Lua error), and the store took that for an outage: every
other key's call answered "unavailable" for a second. One such key among a worker's leases failed
every renewal, so every limit of every API was unchecked (or 503) for as long as that connection
stayed open (4 of 8 other users' handshakes refused over 5.6 s). Real ``asgi-ws-gateway run``, the
shared Redis under a unique prefix, real clients.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway.state.base import store_key
from asgi_ws_gateway.state.redis import RedisState, _about_its_key
from support.clients import connect
from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.redis import SHARED_REDIS
from support.upstream import UpstreamServer

KEY = "{header.x-user}"
POLICIES = [
    {"limit-concurrency": {"key": KEY, "max": 5, "lease_ttl": 1.5, "on_store_error": "closed"}},  # renewed every 0.5 s
    {"rate-limit-by-key": {"key": KEY, "limit": 100, "window": 60, "on_store_error": "closed"}},
    {"quota-by-key": {"key": KEY, "limit": 100, "period": "day", "on_store_error": "closed"}},
]


async def _status(url: str, user: str) -> int:
    try:
        async with await connect(url, additional_headers={"x-user": user}):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_a_users_keys_overwritten_with_another_type_refuse_nobody(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str
) -> None:
    store = {"type": "redis", "url": SHARED_REDIS, "prefix": redis_prefix}
    config = write_config(tmp_path, build_config(upstream, api={"policies": POLICIES}, store=store))
    log = tmp_path / "gateway.log"
    redis = Redis.from_url(SHARED_REDIS)
    try:
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log) as gateway:
            url = gateway.url("/ws/echo")
            async with await connect(url, additional_headers={"x-user": "alice"}) as alice:
                keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}:*")]
                assert len(keys) == 4  # alice's lease, rate window, quota count and the attempts it counted
                for key in keys:  # something else writes there: a list, in place of each
                    await redis.delete(key)
                    await redis.rpush(key, "not the gateway's")
                statuses = []
                for number in range(10):  # through several renewals of alice's lease
                    statuses.append(await _status(url, f"bob{number}"))
                    await asyncio.sleep(0.15)
                statuses.append(await _status(url, "alice"))  # alice's own keys start again
                await alice.send("still here")
                assert await alice.recv() == "still here"
                assert {await redis.type(key) for key in keys} == {b"zset", b"hash"}  # the gateway's again
            assert statuses == [101] * 11
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    assert "Redis store failed" not in log.read_text()


@pytest.mark.parametrize("kind", ["rate", "quota", "conc", "msgrate"])
@pytest.mark.parametrize("foreign", ["list", "string", "hash", "zset", "float", "huge"])
async def test_each_script_replaces_what_is_not_its_own(redis_prefix: str, kind: str, foreign: str) -> None:
    """Every operation counts from zero on a key that held another type, or a count INCR cannot go on with."""
    store = RedisState(SHARED_REDIS, prefix=redis_prefix)
    redis = Redis.from_url(SHARED_REDIS)
    key = store_key(redis_prefix, kind, "c", "user")

    async def write() -> None:
        if foreign == "list":
            await redis.rpush(key, "x")
        elif foreign == "hash":
            await redis.hset(key, "w", "x")
        elif foreign == "zset":
            await redis.zadd(key, {"x": 1})
        else:
            await redis.set(key, {"string": "x", "float": "1.5", "huge": str(2**70)}[foreign])

    try:
        await write()
        if kind == "rate":
            assert (await store.hit(key, 5, 60, "m")).remaining == 4
        elif kind == "quota":
            assert (await store.consume(key, 5, "hour")).remaining == 4
        elif kind == "conc":
            assert (await store.acquire(key, "lease", 5, 30)).remaining == 4
            await store.renew([(key, "lease")], 30)
            await store.release(key, "lease")
        else:
            assert (await store.reserve(key, 60, [(3, 10)])).granted == (3,)
        assert await redis.pttl(key) != -1  # whatever it holds, it expires
        await redis.delete(key)
        await write()
        if kind == "conc":  # nothing to give back, and nothing to fail on
            await store.renew([(key, "lease")], 30)
            await store.release(key, "lease")
    finally:
        await redis.delete(key)
        await redis.aclose()
        await store.aclose()


def test_only_errors_about_a_keys_data_leave_the_store_up() -> None:
    """A script's error on its key is that call's; a server that cannot run commands is an outage."""
    assert _about_its_key(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert _about_its_key(ResponseError("ERR user_script:4: attempt to compare nil with number script: 9f"))
    assert not _about_its_key(ResponseError("OOM command not allowed when used memory > 'maxmemory'. script: 9f"))
    assert not _about_its_key(ResponseError("BUSY Redis is busy running a script."))
    assert not _about_its_key(ReadOnlyError("READONLY You can't write against a read only replica."))
    assert not _about_its_key(BusyLoadingError("LOADING Redis is loading the dataset in memory"))
    assert not _about_its_key(ConnectionError("closed"))
