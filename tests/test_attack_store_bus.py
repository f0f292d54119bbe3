"""The management bus when something else publishes on its channel: every worker keeps listening.

Anyone who can write to the shared Redis can ``PUBLISH`` on ``<prefix>:{mgmt}:bus``. A message that
was not a command (not JSON, not UTF-8, a JSON array or string, nesting deeper than the parser
goes) raised out of each worker's listener, which ended without a line in the log: from then on
``PUBLISH`` reached 0 workers, connection commands found nothing and changes reached the other
workers only through the revision poll. Real ``asgi-ws-gateway run --workers 2 --redis``, the shared
Redis under a unique prefix.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as redis

from asgi_ws_gateway.management.answers import an_object
from support.processes import standalone
from support.redis import SHARED_REDIS
from support.upstream import UpstreamServer

NOT_COMMANDS = [
    b"garbage{",  # not JSON
    b"\xff\xfe",  # not UTF-8: redis-py failed decoding it, and dropped the subscription with what followed
    b"[1, 2]",
    b'"reload"',
    b'{"op": 3}',
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError, not ValueError
]


async def test_messages_that_are_not_commands_leave_every_worker_listening(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: [{upstream.url('/echo')}]\n")
    channel = f"{redis_prefix}:{{mgmt}}:bus"
    writer = redis.Redis.from_url(SHARED_REDIS)
    try:
        async with standalone(config, "--redis", SHARED_REDIS, "--redis-prefix", redis_prefix, workers=2) as gw:
            async with asyncio.timeout(30):
                while await writer.publish(channel, b'{"op": "noop"}') < 2:  # noqa: ASYNC110 - both workers subscribed
                    await asyncio.sleep(0.1)
            for message in NOT_COMMANDS:
                assert await writer.publish(channel, message) == 2, message[:20]
            # A worker whose listener ended is missing from PUBLISH's count and from the answers.
            assert await writer.publish(channel, b'{"op": "noop"}') == 2
            answered = (await gw.client._call("GET", "connections", an_object))["workers"]
            assert answered == {"answered": 2, "expected": 2}
    finally:
        await writer.aclose()
