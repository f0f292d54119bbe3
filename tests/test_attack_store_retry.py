"""A connection that fails after Redis ran a script, before its answer arrived: the attempt counts once.

redis-py sends a command again on a fresh connection when the first fails (the store asks it to
once: a pooled connection may predate a Redis restart). A rate-limit or quota script that Redis
had already run then ran twice: a connection cut mid-reply (a proxy or a load balancer resetting
it, Redis's ``CLIENT KILL``), or an answer later than ``store.timeout`` during a latency spike,
counted one handshake as two (a quota at 3 after two handshakes). Each attempt now carries an id,
and a script sent again for an attempt already counted answers as it did. The shared Redis under
a unique prefix, behind a proxy that cuts the connection as Redis's next answer comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.state.base import store_key
from asgi_ws_gateway.state.redis import RedisState
from support.redis import SHARED_REDIS


class CuttingProxy:
    """A TCP proxy to the shared Redis; after ``cut()``, the next answer is dropped with its client connection."""

    def __init__(self) -> None:
        self._cut = False
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    def cut(self) -> None:
        self._cut = True

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", 6379)

        async def up() -> None:
            try:
                while data := await client_reader.read(65536):
                    redis_writer.write(data)
                    await redis_writer.drain()
            except OSError:
                pass
            finally:
                redis_writer.close()

        async def down() -> None:
            try:
                while data := await redis_reader.read(65536):
                    if self._cut:  # Redis ran the command; its answer never reaches the client
                        self._cut = False
                        client_writer.transport.abort()
                        return
                    client_writer.write(data)
                    await client_writer.drain()
            except OSError:
                pass
            finally:
                client_writer.close()
                redis_writer.close()

        for pipe in (up(), down()):
            task = asyncio.create_task(pipe)
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingProxy]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            async with server:
                yield self
        finally:
            for task in list(self._pipes):
                task.cancel()
            await asyncio.gather(*self._pipes, return_exceptions=True)


@pytest.mark.parametrize("kind", ["rate", "quota"])
async def test_an_attempt_whose_answer_was_cut_counts_once(redis_prefix: str, kind: str) -> None:
    async with CuttingProxy().running() as proxy:
        store = RedisState(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix)
        redis = Redis.from_url(SHARED_REDIS)
        key = store_key(redis_prefix, kind, "c", "alice")

        async def attempt() -> int:
            if kind == "rate":
                decision = await store.hit(key, 100, 60, f"attempt-{time.monotonic_ns()}")
            else:
                decision = await store.consume(key, 100, "month")
            assert decision.allowed
            return decision.remaining

        async def counted() -> int:
            return int(await redis.zcount(key, 0, "+inf") if kind == "rate" else await redis.hget(key, "n") or 0)

        try:
            assert await attempt() == 99
            proxy.cut()
            assert await attempt() == 98  # redis-py sent it again after the cut: the same attempt
            assert await counted() == 2
        finally:
            await redis.delete(key, f"{key}:attempts")
            await redis.aclose()
            await store.aclose()


async def test_a_reservation_whose_answer_was_cut_is_granted_once(redis_prefix: str) -> None:
    """``rate-limit-messages`` on Redis reserves from a window's counters: a reservation sent again took
    its grant twice (a message budget of 100 down to 80 for two reservations of 10)."""
    async with CuttingProxy().running() as proxy:
        store = RedisState(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix)
        redis = Redis.from_url(SHARED_REDIS)
        key = store_key(redis_prefix, "msgs", "c", "alice")
        try:
            first = await store.reserve(key, 60, [(10, 100), (1, 5)])
            proxy.cut()
            again = await store.reserve(key, 60, [(10, 100), (1, 5)])  # sent again after the cut
            assert (first.granted, again.granted, again.window) == ((10, 1), (10, 1), first.window)
            assert 0 < again.resets_in <= 60
            assert await redis.hmget(key, "c1", "c2") == [b"20", b"2"]
            for _ in range(9):  # the attempts remembered are the last eight: the budget still runs out
                await store.reserve(key, 60, [(10, 100), (1, 5)])
            assert await redis.hmget(key, "c1", "c2") == [b"100", b"5"]
        finally:
            await redis.delete(key)
            await redis.aclose()
            await store.aclose()
