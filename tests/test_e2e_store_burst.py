"""End to end: a burst of handshakes cannot make the Redis store look down and slip past its limits.

redis-py's asyncio pool opens at most 100 connections and refuses the 101st with an error, which
the store counted as a Redis outage: for a second after a burst of more than 100 handshakes at once,
every limit admitted unchecked (``on_store_error: open``, the default) or refused with 503
(``closed``). The store now has ``store.max_connections`` calls in flight (default 50) and the rest
wait their turn. A real ``asgi-ws-gateway run``, a private ``redis-server`` that a script keeps busy
for 0.8 s while the burst arrives (so the calls pile up whatever this machine's speed), real clients.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from asgi_ws_gateway import load_config
from asgi_ws_gateway.errors import ConfigError
from support.clients import count_handshake
from support.configs import api_entry, build_config, write_config
from support.processes import GatewayProcess
from support.redis import RedisServer
from support.upstream import UpstreamServer

BURST = 300
LIMIT = 10
BUSY = """local t = redis.call('TIME') local start = t[1] * 1e6 + t[2]
repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - start > tonumber(ARGV[1])"""


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _keep_busy(url: str, microseconds: int, started: threading.Event) -> threading.Thread:
    """Run a script that holds Redis for ``microseconds``; ``started`` is set as it is sent."""

    def run() -> None:
        client = redis.Redis.from_url(url)
        started.set()
        client.eval(BUSY, 0, microseconds)
        client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("on_store_error", ["open", "closed"])
async def test_a_burst_of_handshakes_is_counted_whole(
    tmp_path: Path, upstream: UpstreamServer, private_redis: RedisServer, on_store_error: str
) -> None:
    policy = {"rate-limit-by-key": {"key": "{client.ip}", "limit": LIMIT, "window": 60,
                                    "on_store_error": on_store_error}}  # fmt: skip
    store = {"type": "redis", "url": private_redis.url, "timeout": 3}  # a wait, not a failure
    config = write_config(tmp_path, build_config(upstream, api={"policies": [policy]}, store=store))
    log = tmp_path / "gateway.log"
    async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log) as gateway:
        outcomes: Counter[int] = Counter()
        url = gateway.url("/ws/echo")
        await count_handshake(url, outcomes)  # the store's first call connects it and loads its scripts
        started = threading.Event()
        busy = _keep_busy(private_redis.url, 800_000, started)
        await asyncio.to_thread(started.wait, 5)
        await asyncio.gather(*(count_handshake(url, outcomes) for _ in range(BURST - 1)))
        await asyncio.to_thread(busy.join, 10)
    # Exactly the limit admitted, every other handshake told to slow down: none unchecked, none a 503.
    assert outcomes == Counter({101: LIMIT, 429: BURST - LIMIT})
    text = log.read_text()
    assert "Redis store failed" not in text and "unchecked" not in text


@pytest.mark.parametrize("value", [0, -1, 101, "many", 2.5, None])
def test_an_invalid_store_max_connections_is_refused_by_field_path(value: object) -> None:
    store = {"type": "redis", "url": "redis://127.0.0.1:6379/0", "max_connections": value}
    with pytest.raises(ConfigError) as refused:
        load_config({"apis": [api_entry()], "store": store})
    assert "store.max_connections" in str(refused.value)
