"""Three gateway hosts on one Redis Cluster: one cap across hosts, changes and commands reach every host.

Each host is its own ``asgi-ws-gateway run --management /_gateway --redis redis+cluster://...``
process (installed entry point, own port) in front of the same upstream; the cluster is the real
3+3 one from the ``redis_cluster`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway.management.answers import an_object
from support.clients import connect, expect_close
from support.configs import build_config, write_config
from support.processes import Standalone, standalone
from support.redis_ha import RedisClusterSet
from support.upstream import UpstreamServer

logger = logging.getLogger(__name__)
HOSTS = 3
CAP = 5


async def _open(url: str, stack: contextlib.AsyncExitStack) -> ClientConnection | None:
    """A held, echoing connection, or None when refused with 429."""
    try:
        ws = await connect(url)
    except InvalidStatus as exc:
        assert exc.response.status_code == 429
        return None
    await stack.enter_async_context(ws)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    return ws


async def _until_connects(url: str) -> float:
    """Seconds until a handshake to ``url`` succeeds (404 until the change arrives)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        try:
            async with await connect(url) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                return loop.time() - start
        except InvalidStatus as exc:
            assert exc.response.status_code == 404
            await asyncio.sleep(0.05)


async def test_three_hosts_share_one_cap_changes_and_connection_commands(
    tmp_path: Path, upstream: UpstreamServer, redis_cluster: RedisClusterSet
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    limit = {"limit-concurrency": {"key": "everyone", "max": CAP, "on_store_error": "closed"}}
    store = {"type": "redis", "url": redis_cluster.url, "prefix": prefix, "timeout": 2.0}
    config = write_config(tmp_path, build_config(upstream, api={"policies": [limit]}, store=store))
    async with contextlib.AsyncExitStack() as hosts_stack:
        hosts: list[Standalone] = [
            await hosts_stack.enter_async_context(
                standalone(config, "--redis", redis_cluster.url, "--redis-prefix", prefix)
            )
            for _ in range(HOSTS)
        ]
        async with asyncio.timeout(30):
            while (await hosts[0].client._call("GET", "connections", an_object))["workers"]["expected"] < HOSTS:  # noqa: ASYNC110
                await asyncio.sleep(0.1)

        async with contextlib.AsyncExitStack() as stack:
            # A cap of CAP admits exactly CAP, whichever hosts the handshakes race to.
            held = [ws for host in hosts if (ws := await _open(host.ws("/ws/echo"), stack)) is not None]
            assert len(held) == HOSTS  # one held by each host, then the rest race
            attempts = [_open(hosts[i % HOSTS].ws("/ws/echo"), stack) for i in range(4 * HOSTS)]
            held += [ws for ws in await asyncio.gather(*attempts) if ws is not None]
            assert len(held) == CAP
            assert await _open(hosts[2].ws("/ws/echo"), stack) is None

            # Every host lists every connection; send and kick reach a connection held by another host.
            for host in hosts:
                assert len(await host.client.list_connections(api="echo")) == CAP
            live = await hosts[0].client.list_connections(api="echo")
            assert len({c["worker"] for c in live}) == HOSTS
            by_port = {ws.local_address[1]: ws for ws in held}
            for i, connection in enumerate(live):
                ws = by_port[int(connection["client"].rsplit(":", 1)[1])]
                caller = hosts[(i + 1) % HOSTS].client
                sent = await caller._call("POST", f"connections/{connection['id']}/messages", an_object,
                                          json={"text": f"to {connection['id']}"})  # fmt: skip
                assert await ws.recv() == f"to {connection['id']}"
                assert sent["worker"] == connection["worker"]
            kicked = live[0]
            ws = by_port[int(kicked["client"].rsplit(":", 1)[1])]
            other = next(h for h in hosts if h.client is not hosts[0].client)
            await other.client._call(
                "POST", f"connections/{kicked['id']}/close", an_object, json={"code": 4002, "reason": "kicked"}
            )
            assert await expect_close(ws) == (4002, "kicked")

            # The kicked connection's lease is released: exactly one more is admitted, on any host.
            async with asyncio.timeout(10):
                while (again := await _open(hosts[1].ws("/ws/echo"), stack)) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert again is not None
            assert await _open(hosts[0].ws("/ws/echo"), stack) is None

        # A change made on one host reaches new handshakes on every host.
        await hosts[1].client.create_api({"name": "late", "path": "/ws/late", "upstreams": [upstream.url("/echo")]})
        async with asyncio.timeout(15):  # generous: measured well under 1 s (docs/performance.md)
            delays = await asyncio.gather(*(_until_connects(host.ws("/ws/late")) for host in hosts))
        logger.info("change reached every host in %.3f s (max)", max(delays))
