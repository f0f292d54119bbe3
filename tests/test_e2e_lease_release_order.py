"""End to end: a concurrency lease whose release fails at its connection's end is told of before the
connection's access line, the connection's last line (docs/telemetry.md), on every connector.

Real uvicorn under the gateway's protocol, the real upstream, the shared Redis behind a proxy that
makes its answers later than the store's ``timeout`` once the connection is open: the release at the
connection's end times out. The store's line ("Redis store failed") and the lease keeper's ("could not
release") came after the access line: the release ran after it, the keeper's line from a task later still.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from support.access import ACCESS_LOGGER
from support.clients import connect
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.redis import DelayingProxy, redis_available
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

pytestmark = pytest.mark.skipif(not redis_available(), reason="needs Redis on 127.0.0.1:6379")

LATE = 2.0
"""Seconds Redis's answers take once the connection is open: well past the store's timeout below."""


@pytest.fixture
def proxy() -> Iterator[DelayingProxy]:
    with DelayingProxy() as running:
        yield running


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(record.name, record.getMessage()) for record in caplog.records]


async def _until(caplog: pytest.LogCaptureFixture, text: str, logger: str = "asgi_ws_gateway") -> None:
    async with asyncio.timeout(15):
        while not any(name.startswith(logger) and text in message for name, message in _lines(caplog)):  # noqa: ASYNC110 - the server's thread logs
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_a_failed_lease_release_is_logged_before_the_access_line(
    upstream: UpstreamServer,
    uvicorn_server: UvicornFactory,
    proxy: DelayingProxy,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
    connector: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    policy = {"limit-concurrency": {"key": "everyone", "max": 5, "lease_ttl": 60}}
    entry = api_entry(upstream, name="h", path="/h", policies=[policy], **CONNECTORS[connector])
    store = {"type": "redis", "url": proxy.url, "prefix": redis_prefix, "timeout": 0.3}
    gateway = ProbedGateway({"apis": [entry], "store": store})
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/h")
    async with await connect(url) as ws:
        await ws.send("admitted")
        assert await ws.recv() == "admitted"
        await proxy.settle()
        proxy.delay = LATE  # the release at the connection's end times out
    await _until(caplog, "could not release")
    await _until(caplog, "", logger=ACCESS_LOGGER)
    lines = _lines(caplog)
    access = [index for index, (name, _) in enumerate(lines) if name == ACCESS_LOGGER]
    assert len(access) == 1
    failures = [index for index, (_, message) in enumerate(lines) if "could not release" in message]
    store_failed = [index for index, (_, message) in enumerate(lines) if "Redis store failed" in message]
    assert failures and store_failed
    assert max(failures[0], store_failed[0]) < access[0], lines  # the access line is the connection's last
