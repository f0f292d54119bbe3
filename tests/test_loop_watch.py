"""Something that blocks the event loop is named in a WARNING: a policy calling ``time.sleep`` held
every connection of the worker (``/healthz`` waited 2.7 s behind a 3 s sleep) and nothing said so."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from asgi_ws_gateway.loop_watch import LoopWatch
from asgi_ws_gateway.policies import PolicySettings, register_policy
from asgi_ws_gateway.standalone import create_app
from support.clients import connect
from support.servers import UvicornServer
from support.upstream import UpstreamServer

BLOCKED = "the event loop was blocked for"


class _Settings(PolicySettings):
    seconds: float = 1.5


@register_policy("test-loop-watch-sleep")
class _Sleeps:
    """A plugin policy written wrong: a synchronous sleep inside its ``async def apply``."""

    Settings = _Settings

    def __init__(self, settings: _Settings, env: Any) -> None:
        self.name, self.seconds = "sleeps", settings.seconds

    async def apply(self, context: Any) -> None:
        time.sleep(self.seconds)  # noqa: ASYNC251 - the bug this test is about


def _blocked(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asgi_ws_gateway.loop_watch" and BLOCKED in r.getMessage()]


async def test_a_policy_that_blocks_the_loop_is_a_warning(
    upstream: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = {"name": "slow", "path": "/ws/slow", "upstreams": [upstream.url("/echo")],
           "policies": [{"test-loop-watch-sleep": {"seconds": 1.5}}]}  # fmt: skip
    with caplog.at_level(logging.WARNING), UvicornServer(create_app({"apis": [api]}), lifespan="on") as server:  # type: ignore[arg-type]
        async with await connect(server.url("/ws/slow")) as ws:  # admitted: nothing else said it blocked
            await ws.send("hi")
            assert await ws.recv() == "hi"
        await asyncio.sleep(0.5)  # the probe runs once the loop is free: at most an interval later
        (record,) = _blocked(caplog)
    assert record.levelno == logging.WARNING
    assert float(record.getMessage().split(BLOCKED)[1].split()[0]) >= 1.0


async def test_stalls_close_together_are_one_line_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    """A loop blocked again and again is counted, not logged each time (a line per stall would flood)."""
    watch = LoopWatch(interval=0.02, threshold=0.05, quiet=60)
    with caplog.at_level(logging.WARNING):
        watch.start()
        try:
            for _ in range(3):
                time.sleep(0.1)  # noqa: ASYNC251 - blocking on purpose
                await asyncio.sleep(0.05)  # the probe runs, late
        finally:
            watch.stop()
    assert watch.stalls == 3
    assert len(_blocked(caplog)) == 1
