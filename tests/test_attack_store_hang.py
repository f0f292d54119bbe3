"""End to end: a Redis that takes connections and never answers holds each handshake one timeout, not a queue of them.

A burst of handshakes waits for the store's connections (``store.max_connections``) or for its first
connect. The calls that waited used to go to Redis after the first had failed, each for a timeout of
its own: 300 handshakes against a Redis that never answered took 4.4 s (6.7 s at worst) through six
rounds of timeouts, and against one never answered since start-up they queued one by one behind the
first connect (291 of 300 answered 504 ``policy_timeout`` after 10 s). Each call also wrote its own
"Redis store failed" line (305 for 300 handshakes). Now a call that waited answers "unavailable" at
once when the failure came meanwhile: the policy fails open (or closed) within one timeout.

A real ``asgi-ws-gateway run``, the shared Redis behind a proxy that holds its answers back, real clients.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from support.clients import count_handshake
from support.configs import build_config, write_config
from support.processes import GatewayProcess
from support.redis import DelayingProxy
from support.upstream import UpstreamServer

BURST = 40
SLOTS = 4  # store.max_connections: the burst waits through ten rounds of them
TIMEOUT = 0.3  # store.timeout: redis-py tries twice, so a call that hangs fails after about 0.6 s
POLICY_TIMEOUT = 4  # more than a few timeouts, much less than a queue of them (ten rounds, or 40 connects)


@pytest.mark.parametrize(
    ("on_store_error", "connected"), [("open", True), ("closed", False)], ids=["after-answers", "never-answered"]
)
async def test_a_burst_against_a_redis_that_never_answers_is_answered_within_one_timeout(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str, on_store_error: str, connected: bool
) -> None:
    with DelayingProxy() as proxy:
        policy = {"rate-limit-by-key": {"key": "{client.ip}", "limit": 10_000, "window": 60,
                                        "on_store_error": on_store_error}}  # fmt: skip
        store = {"type": "redis", "url": proxy.url, "prefix": redis_prefix, "timeout": TIMEOUT,
                 "max_connections": SLOTS}  # fmt: skip
        document = build_config(
            upstream, api={"policies": [policy]}, store=store, handshake_limits={"policy_timeout": POLICY_TIMEOUT}
        )
        config = write_config(tmp_path, document)
        log = tmp_path / "gateway.log"
        async with GatewayProcess([str(config)], cwd=tmp_path, workers=1, log=log) as gateway:
            url = gateway.url("/ws/echo")
            outcomes: Counter[int] = Counter()
            if connected:
                await count_handshake(url, outcomes)  # the store connects and loads its script while Redis answers
                assert outcomes == Counter({101: 1})
                outcomes.clear()
                await proxy.settle()
            proxy.delay = 3600  # Redis takes every command and answers none
            await asyncio.gather(*(count_handshake(url, outcomes) for _ in range(BURST)))
    # Every handshake answered as the policy says, none by the policy_timeout's 504.
    assert outcomes == Counter({101 if on_store_error == "open" else 503: BURST})
    text = log.read_text()
    assert text.count("Redis store failed") == 1, text  # one line for the outage, not one per call
