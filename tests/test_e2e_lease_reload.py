"""End to end: a reload leaves the concurrency leases of open connections counting.

A reload (``apply_config``: the management API, a changed configuration file) closes the policies
it replaces, and the connections admitted under them stay open. Closing used to stop renewing their
``limit-concurrency`` leases: ``lease_ttl`` later they expired, and the cap admitted one more
connection per open one. Real uvicorn, a real upstream, each store.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from support.clients import connect, expect_status
from support.configs import build_config
from support.gateway import ProbedGateway
from support.redis import STORES, unique_prefix
from support.servers import UvicornServer
from support.upstream import UpstreamServer

TENANT = {"X-Tenant": "acme"}
LEASE_TTL = 1
"""Seconds: the shortest ``lease_ttl`` the configuration takes."""


def _config(upstream: UpstreamServer, store: dict[str, Any]) -> dict[str, Any]:
    policy = {"limit-concurrency": {"key": "{header.x-tenant}", "max": 1, "lease_ttl": LEASE_TTL}}
    return build_config(upstream, api={"policies": [policy]}, store=store)


async def _lease_tasks(gateway: ProbedGateway) -> list[str]:
    """Names of the lease keepers' tasks alive on the server's loop."""

    async def collect() -> list[str]:
        names = (getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks())
        return [name for name in names if name.startswith("LeaseKeeper.")]

    return await gateway.on_server(collect)


@pytest.mark.parametrize("store", STORES)
async def test_a_connection_open_across_a_reload_keeps_its_place_past_the_lease_ttl(
    upstream: UpstreamServer, store: dict[str, Any]
) -> None:
    config = _config(upstream, {**store, "prefix": unique_prefix()})
    gateway = ProbedGateway(config)
    with UvicornServer(gateway) as server:
        url = server.url("/ws/echo")
        async with await connect(url, additional_headers=TENANT) as first:
            await first.send("admitted")
            assert await first.recv() == "admitted"
            await gateway.on_server(lambda: gateway.gateway.apply_config(config))  # a reload, same store
            await asyncio.sleep(2.5 * LEASE_TTL)  # past the TTL: only renewals keep the lease
            status, _, _ = await expect_status(url, additional_headers=TENANT)
            assert status == 429
            await first.send("still open")
            assert await first.recv() == "still open"
        async with asyncio.timeout(10):  # the lease is released as the connection's handler ends
            while True:
                try:
                    second = await connect(url, additional_headers=TENANT)
                except InvalidStatus as refused:  # 429 until then
                    assert refused.response.status_code == 429
                    await asyncio.sleep(0.05)
                else:
                    break
        async with second:
            await second.send("admitted after")
            assert await second.recv() == "admitted after"
        await gateway.settle()
        async with asyncio.timeout(5):  # the replaced policies' renewals stopped with their last lease
            while await _lease_tasks(gateway):  # noqa: ASYNC110 - the server's loop
                await asyncio.sleep(0.05)
