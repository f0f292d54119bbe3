"""SIGTERM to ``asgi-ws-gateway run`` after a reload: the concurrency leases of the connections admitted
before it are given back as those admitted after are, also when the store failed just before.

A reload (here the management API's change of the API) replaces or removes the ``limit-concurrency``
policy, and its lease keeper goes on renewing the leases of the connections it admitted until each ends. The
shutdown closed only the policies serving then: the replaced keeper's releases that failed (the store
answers "unavailable" for 1 s after a failure) were never tried on closing, and those leases stayed
counted until ``lease_ttl``, refusing clients on every other host, when the current keeper's were
released. Without the reload the same shutdown released every lease.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from asgi_ws_gateway.management import ManagementClient
from support.clients import connect
from support.configs import api_entry, build_config, write_config
from support.management import TOKEN
from support.processes import cli_env, ready_server
from support.redis import DelayingProxy, RedisServer, redis_available, unique_prefix
from support.upstream import UpstreamServer

RUN = ["-m", "asgi_ws_gateway", "run"]
OPEN = 3
USER = {"x-user": "alice"}


def _limit(most: int) -> dict[str, Any]:
    return {"limit-concurrency": {"key": "{header.x-user}", "max": most, "lease_ttl": 60, "on_store_error": "open"}}


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
@pytest.mark.parametrize(
    "policies_after", [None, [_limit(20)], []], ids=["no-reload", "policy-changed-by-a-reload", "policy-removed"]
)
async def test_sigterm_releases_the_leases_of_connections_admitted_before_a_reload(
    tmp_path: Path, policies_after: list[dict[str, Any]] | None
) -> None:
    prefix = unique_prefix()
    # A rate limit on another API: a handshake there makes the store fail without taking a lease.
    rate = {"rate-limit-by-key": {"key": "{header.x-user}", "limit": 100, "window": 60, "on_store_error": "open"}}
    with RedisServer() as redis_server, DelayingProxy(port=redis_server.port) as proxy, UpstreamServer() as upstream:
        other = api_entry(upstream, name="other", path="/ws/other", policies=[rate])
        config = build_config(
            upstream, path="/ws", api={"policies": [_limit(10)]}, more_apis=[other],
            store={"type": "redis", "url": proxy.url, "prefix": prefix, "timeout": 0.2},
        )  # fmt: skip
        path = write_config(tmp_path, config)
        client = Redis.from_url(redis_server.url)
        cmd = lambda port: [*RUN, str(path), "--port", str(port), "--management", "/_gateway"]  # noqa: E731
        try:
            with ready_server(cmd, env=cli_env()) as server:
                url = f"ws://127.0.0.1:{server.port}"
                sockets = [await connect(f"{url}/ws", additional_headers=USER) for _ in range(OPEN)]
                keys = [k async for k in client.scan_iter(match=f"{prefix}:conc:*")]
                assert len(keys) == 1 and await client.zcard(keys[0]) == OPEN, keys
                if policies_after is not None:  # the API changed: its connections stay open, counting
                    async with ManagementClient(f"http://127.0.0.1:{server.port}/_gateway", token=TOKEN) as admin:
                        document = dict(await admin.get_api("echo"))
                        await admin.replace_api("echo", {**document, "policies": policies_after})
                proxy.delay = 1.0  # the next call times out (0.2 s): the store fails, and answers "unavailable" for 1 s
                sockets.append(await connect(f"{url}/ws/other", additional_headers=USER))  # admitted unchecked
                proxy.delay = 0.0
                server.process.send_signal(signal.SIGTERM)  # its connections' releases fail, at once
                assert await asyncio.to_thread(server.wait_exit, 30) == 0, server.output()
                output = server.output()
                for ws in sockets:
                    await ws.close()
            held = {k: await client.zcard(k) async for k in client.scan_iter(match=f"{prefix}:conc:*")}
            assert held == {}, output  # a key is gone with its last lease
            assert "Traceback" not in output, output
        finally:
            await client.aclose()
