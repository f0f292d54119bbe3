"""What one limit check costs the gateway's process on Redis: redis-py's client against the store's pipe.

In one process on uvloop, ``RedisState.hit`` (``rate-limit-by-key``'s call) against the Redis at
127.0.0.1:6379, by ``--concurrency`` callers at once (as concurrent handshakes call it), through
the store's pipelined connection (``redis://...``) and through redis-py's asyncio client (the same
URL with ``?protocol=3``, redis-py's default: a URL with options is left to redis-py). Rounds
alternate the two; prints the medians of CPU time (user + system, this process only: not Redis's)
and wall time per call.

    python -m bench.store_calls [--concurrency 1 4 16 64] [--calls 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
import uuid

import uvloop

from asgi_ws_gateway.state.base import store_key
from asgi_ws_gateway.state.redis import RedisState

from .paths import REDIS_URL

CLIENTS = {"pipe": REDIS_URL, "redis-py": f"{REDIS_URL}?protocol=3"}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _round(url: str, concurrency: int, calls: int) -> tuple[float, float]:
    """CPU and wall microseconds per call, ``calls`` made by ``concurrency`` callers after as many to warm up."""
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    store = RedisState(url, prefix=prefix)
    keys = [store_key(prefix, "rate", "bench", str(i)) for i in range(concurrency)]
    share = calls // concurrency

    async def caller(key: str) -> None:
        for _ in range(share):
            await store.hit(key, 10**9, 60, os.urandom(16).hex())

    try:
        await asyncio.gather(*(caller(key) for key in keys))
        started, cpu = time.perf_counter(), _cpu()
        await asyncio.gather(*(caller(key) for key in keys))
        wall, cpu = time.perf_counter() - started, _cpu() - cpu
    finally:
        await store._redis.delete(*keys)
        await store.aclose()
    return cpu / (share * concurrency) * 1e6, wall / (share * concurrency) * 1e6


async def run(concurrency: list[int], calls: int, rounds: int) -> dict[tuple[int, str], list[tuple[float, float]]]:
    samples: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for index in range(rounds):
        for level in concurrency:
            names = list(CLIENTS) if index % 2 == 0 else list(CLIENTS)[::-1]
            for name in names:
                samples.setdefault((level, name), []).append(await _round(CLIENTS[name], level, calls))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round and client (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples = uvloop.run(run(args.concurrency, args.calls, args.rounds))
    print(f"RedisState.hit, {args.calls} calls a round, medians of {args.rounds} rounds (µs per call)")
    for level in args.concurrency:
        cells = []
        for name in CLIENTS:
            cpu = statistics.median(s[0] for s in samples[level, name])
            wall = statistics.median(s[1] for s in samples[level, name])
            cells.append(f"{name} CPU {cpu:6.1f} wall {wall:6.1f}")
        print(f"{level:3} at once: " + "   ".join(cells))


if __name__ == "__main__":
    main()
