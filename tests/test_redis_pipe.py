"""The limits store's scripts on one pipelined connection (``state/redis_pipe.py``), against real Redis.

Concurrent calls share one connection and are answered in the order they were sent: each caller
must get its own reply or its own error, whatever the others get (an error, a cancellation, a
timeout), Redis losing its scripts must not fail a call, and a Redis that fails must fail each
call as one call through redis-py did (so ``on_store_error`` works as before). The shared Redis
under a unique prefix, private servers where a test changes the server (a flush, a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, NoScriptError, ResponseError, TimeoutError

from asgi_ws_gateway.state.base import StoreUnavailable, store_key
from asgi_ws_gateway.state.redis import RedisState
from asgi_ws_gateway.state.redis_pipe import Script, ScriptPipe, pipe_for
from support.redis import SHARED_REDIS, DelayingProxy, RedisServer, redis_available, unique_prefix

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379")

ECHO = Script("if ARGV[1] == 'fail' then return redis.error_reply('ERR asked to fail') end\nreturn {KEYS[1], ARGV[1]}")
CALLS = 200


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    connection = Redis.from_url(SHARED_REDIS)
    yield connection
    await connection.aclose()


@contextlib.asynccontextmanager
async def _opened(url: str, reply_timeout: float) -> AsyncIterator[ScriptPipe]:
    """The pipe for ``url`` (one it serves), closed at the end."""
    pipe = pipe_for(url, reply_timeout)
    assert pipe is not None
    try:
        yield pipe
    finally:
        await pipe.aclose()


async def _clean(client: Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


def test_only_plain_urls_without_options_get_a_pipe() -> None:
    assert pipe_for("redis://127.0.0.1:6379/0", 0.5) is not None
    assert pipe_for("redis://:secret@10.0.0.5/3", 0.5) is not None
    assert pipe_for("unix:///run/redis.sock", 0.5) is not None
    for url in (
        "rediss://127.0.0.1:6379/0",  # TLS: redis-py's context options
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        "redis+sentinel://127.0.0.1:26379/gateway",
        "redis://127.0.0.1:6379/0?protocol=3",  # options redis-py reads
    ):
        assert pipe_for(url, 0.5) is None, url


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply() -> None:
    pipe = ScriptPipe(timeout=5)
    try:
        replies = await asyncio.gather(*(pipe.run(ECHO, [f"k{i}"], [f"v{i}"]) for i in range(CALLS)))
        assert replies == [[f"k{i}".encode(), f"v{i}".encode()] for i in range(CALLS)]
        first = pipe._connection
        await asyncio.gather(*(pipe.run(ECHO, ["k"], [str(i)]) for i in range(CALLS)))
        assert pipe._connection is first  # one connection, opened once
    finally:
        await pipe.aclose()


async def test_one_callers_error_reply_is_its_own() -> None:
    pipe = ScriptPipe(timeout=5)
    try:
        results = await asyncio.gather(
            *(pipe.run(ECHO, ["k"], ["fail" if i % 7 == 3 else str(i)]) for i in range(CALLS)), return_exceptions=True
        )
        for i, result in enumerate(results):
            if i % 7 == 3:
                assert isinstance(result, ResponseError) and "asked to fail" in str(result), result
            else:
                assert result == [b"k", str(i).encode()], (i, result)
        assert await pipe.run(ECHO, ["k"], ["after"]) == [b"k", b"after"]  # the connection is still in step
    finally:
        await pipe.aclose()


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others() -> None:
    """The cancelled call's reply still arrives: it is read and dropped, not given to the next caller."""
    with DelayingProxy() as proxy:
        async with _opened(proxy.url, 5) as pipe:
            assert await pipe.run(ECHO, ["k"], ["warm"]) == [b"k", b"warm"]
            proxy.delay = 0.3
            calls = [asyncio.create_task(pipe.run(ECHO, ["k"], [str(i)])) for i in range(20)]
            await asyncio.sleep(0.1)  # all sent, none answered
            for task in calls[::3]:
                task.cancel()
            for i, task in enumerate(calls):
                if i % 3 == 0:
                    with pytest.raises(asyncio.CancelledError):
                        await task
                else:
                    assert await task == [b"k", str(i).encode()]
            proxy.delay = 0
            assert await pipe.run(ECHO, ["k"], ["next"]) == [b"k", b"next"]


async def test_scripts_flushed_from_redis_are_sent_again_whole() -> None:
    """A Redis restarted or ``SCRIPT FLUSH``ed answers NOSCRIPT to every call in flight: each is sent as EVAL."""
    with RedisServer() as server:
        pipe = pipe_for(server.url, 5)
        assert pipe is not None
        admin = Redis.from_url(server.url)
        try:
            assert await pipe.run(ECHO, ["k"], ["one"]) == [b"k", b"one"]
            await admin.script_flush()
            replies = await asyncio.gather(*(pipe.run(ECHO, ["k"], [str(i)]) for i in range(50)))
            assert replies == [[b"k", str(i).encode()] for i in range(50)]
            assert await admin.script_exists(ECHO.sha) == [True]  # cached again: later calls are EVALSHA
            with pytest.raises(NoScriptError):
                await admin.evalsha("0" * 40, 0)  # (the error the pipe recognises, as redis-py maps it)
        finally:
            await admin.aclose()
            await pipe.aclose()


async def test_a_late_reply_fails_each_call_in_flight_then_a_fresh_connection_serves() -> None:
    with DelayingProxy() as proxy:
        async with _opened(proxy.url, 0.2) as pipe:
            assert await pipe.run(ECHO, ["k"], ["warm"]) == [b"k", b"warm"]
            await proxy.settle()
            proxy.delay = 3600
            started = time.monotonic()
            results = await asyncio.gather(
                *(pipe.run(ECHO, ["k"], [str(i)]) for i in range(20)), return_exceptions=True
            )
            assert all(isinstance(r, TimeoutError) for r in results), results
            assert len({id(r) for r in results}) == len(
                results
            )  # each its own: one raised in 20 tasks gathers 20 tracebacks
            assert time.monotonic() - started < 5  # two timeouts of 0.2 s (a retry), not a queue of them
            proxy.delay = 0
            assert await pipe.run(ECHO, ["k"], ["back"]) == [b"k", b"back"]


async def test_a_stopped_redis_fails_each_call_and_a_restarted_one_serves_again() -> None:
    server = RedisServer()
    server.start()
    async with _opened(server.url, 0.5) as pipe:
        assert await pipe.run(ECHO, ["k"], ["up"]) == [b"k", b"up"]
        server.stop()
        results = await asyncio.gather(*(pipe.run(ECHO, ["k"], [str(i)]) for i in range(10)), return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results), results
        server.start()  # empty: no scripts cached
        assert await pipe.run(ECHO, ["k"], ["again"]) == [b"k", b"again"]
        server.stop()


async def test_a_password_and_a_database_are_used() -> None:
    with RedisServer("--requirepass", "s3cret") as server:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/5"
        state = RedisState(url, prefix="p")
        admin = Redis.from_url(url)
        try:
            assert state._pipe is not None
            key = store_key("p", "rate", "c", "alice")
            assert (await state.hit(key, 10, 60, "m1")).remaining == 9
            assert await admin.zcount(key, 0, "+inf") == 1  # in database 5 (events: the window scores < 0)
            wrong = pipe_for(f"redis://:wrong@127.0.0.1:{server.port}/0", 1)
            assert wrong is not None
            with pytest.raises(AuthenticationError):
                await wrong.run(ECHO, ["k"], ["v"])
            await wrong.aclose()
        finally:
            await admin.aclose()
            await state.aclose()


@pytest.mark.parametrize(("secret", "credentials"), [(">pw", "gateway:pw"), ("nopass", "gateway")])
async def test_an_acl_user_is_used(secret: str, credentials: str) -> None:
    """A user name without a password is sent as redis-py sends it (``AUTH gateway ""``), not left out."""
    with RedisServer("--user", "default", "off", "--user", "gateway", "on", secret, "~*", "&*", "+@all") as server:
        async with _opened(f"redis://{credentials}@127.0.0.1:{server.port}/0", 1) as pipe:
            assert await pipe.run(ECHO, ["k"], ["acl"]) == [b"k", b"acl"]


async def test_a_unix_socket_is_served(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with RedisServer("--unixsocket", str(socket_path), "--unixsocketperm", "700"):
        async with _opened(f"unix://{socket_path}", 1) as pipe:
            assert await pipe.run(ECHO, ["k"], ["unix"]) == [b"k", b"unix"]


# -- through the store: what policies see ------------------------------------------------------


async def test_concurrent_limit_checks_each_get_their_own_decision(client: Redis, redis_prefix: str) -> None:
    store = RedisState(SHARED_REDIS, prefix=redis_prefix)
    assert store._pipe is not None
    try:
        keys = [store_key(redis_prefix, "rate", "c", f"user-{i}") for i in range(50)]
        # user-i has a limit of i + 1 and makes i + 2 attempts at once: each is admitted until its limit.
        attempts = [(i, key) for i, key in enumerate(keys) for _ in range(i + 2)]
        decisions = await asyncio.gather(*(store.hit(key, i + 1, 60, os.urandom(8).hex()) for i, key in attempts))
        for i, key in enumerate(keys):
            mine = [d for (j, _), d in zip(attempts, decisions, strict=True) if j == i]
            assert sorted(d.remaining for d in mine if d.allowed) == list(range(i + 1)), i
            assert [d.allowed for d in mine].count(False) == 1
            assert await client.zcount(key, 0, "+inf") == i + 1  # its events (the log's window scores below 0)
    finally:
        await _clean(client, redis_prefix)
        await store.aclose()


async def test_one_keys_refusal_does_not_fail_the_calls_beside_it(client: Redis, redis_prefix: str) -> None:
    """A call Redis refuses because of its key alone fails (its policy fails open or closed); the others are counted."""
    store = RedisState(SHARED_REDIS, prefix=redis_prefix)
    try:
        good = [store_key(redis_prefix, "rate", "c", f"u{i}") for i in range(20)]
        # A script's runtime error on one call (what a value in its key could cause): a limit Lua cannot compare.
        bad = store.hit(store_key(redis_prefix, "rate", "c", "bad"), "many", 60, "m")  # type: ignore[arg-type]
        results = await asyncio.gather(bad, *(store.hit(k, 5, 60, "m") for k in good), return_exceptions=True)
        assert isinstance(results[0], StoreUnavailable) and "refused" in str(results[0]), results[0]
        assert [r.remaining for r in results[1:]] == [4] * 20  # type: ignore[union-attr]
        assert (await store.hit(good[0], 5, 60, "m2")).remaining == 3  # not taken for an outage
    finally:
        await _clean(client, redis_prefix)
        await store.aclose()


async def test_an_outage_fails_every_call_in_flight_once_then_recovers() -> None:
    with DelayingProxy() as proxy:
        store = RedisState(proxy.url, prefix=unique_prefix(), timeout=0.2, retry_interval=0.2)
        try:
            key = store_key(store.prefix, "rate", "c", "k")
            await store.hit(key, 1000, 60, "warm")
            await proxy.settle()
            proxy.delay = 3600
            results = await asyncio.gather(
                *(store.hit(key, 1000, 60, f"m{i}") for i in range(20)), return_exceptions=True
            )
            assert all(isinstance(r, StoreUnavailable) for r in results), results
            with pytest.raises(StoreUnavailable, match="retrying shortly"):
                await store.hit(key, 1000, 60, "m")  # answered at once within retry_interval
            proxy.delay = 0
            await proxy.settle(quiet=0.3)
            async with asyncio.timeout(10):
                while True:
                    try:
                        decision = await store.hit(key, 1000, 60, "after")
                        break
                    except StoreUnavailable:
                        await asyncio.sleep(0.05)
            assert decision.allowed
        finally:
            admin = Redis.from_url(SHARED_REDIS)
            await _clean(admin, store.prefix)
            await admin.aclose()
            await store.aclose()


async def test_a_server_that_never_answers_the_connects_handshake_times_out() -> None:
    """``AUTH`` unanswered: the connect fails after ``timeout``, as redis-py's did, and the call with it."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with _opened(f"redis://:pw@127.0.0.1:{port}/0", 0.2) as pipe:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="connecting"):
            await pipe.run(ECHO, ["k"], ["v"])
        assert time.monotonic() - started < 5  # two connects of 0.2 s, well before anything else
        assert len(accepted) == 2  # tried once more, on a fresh connection
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
