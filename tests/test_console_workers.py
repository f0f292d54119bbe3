"""The console's series and refusals added up over three uvicorn workers sharing the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from asgi_ws_gateway.management import ManagementClient
from asgi_ws_gateway.management.answers import an_object
from support.clients import connect, expect_status
from support.processes import standalone
from support.upstream import UpstreamServer

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _get(client: ManagementClient, path: str) -> dict[str, Any]:
    document: dict[str, Any] = await client._call("GET", path, an_object)  # a 200 with an object, or raises
    return document


def _last(document: dict[str, Any], name: str, api: str, label: str) -> int | None:
    found = [s["values"][-1] for s in document["series"] if (s["name"], s["api"], s["label"]) == (name, api, label)]
    return found[0] if found else 0


async def test_series_and_refusals_add_up_over_every_worker(
    tmp_path: Path, upstream_nodeflate: UpstreamServer, redis_prefix: str
) -> None:
    # `run` splices by default, and a spliced connection counts bytes as they go on the wire: an
    # upstream without compression makes that the message size, as the relay counts it.
    upstream = upstream_nodeflate
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: [{upstream.url('/echo')}]\n"
        "  - name: dead\n    path: /ws/dead\n    upstreams: ['ws://127.0.0.1:1/']\n"
    )
    async with standalone(config, "--redis", REDIS_URL, "--redis-prefix", redis_prefix, workers=3) as gateway:
        client = gateway.client
        async with asyncio.timeout(30):
            while (await _get(client, "metrics/series"))["workers"]["expected"] < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        base = gateway.ws("")
        sockets: list[ClientConnection] = []
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(10):  # until at least two workers hold connections
                for ws in await asyncio.gather(*(connect(f"{base}/ws/echo") for _ in range(4))):
                    await stack.enter_async_context(ws)
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                    sockets.append(ws)
                holders = {c["worker"] for c in await client.list_connections(api="echo")}
                if len(holders) >= 2:
                    break
            assert len(holders) >= 2, "the kernel gave every connection to one worker"
            refused = 0
            for _ in range(6):
                assert (await expect_status(f"{base}/ws/dead?key=qs3cretq"))[0] == 502
                refused += 1

            # Each worker samples as it answers; a request that straddles a slot boundary splits
            # the workers over two slots, so read until one slot has every worker's numbers.
            async with asyncio.timeout(20):
                while True:
                    document = await _get(client, "metrics/series")
                    if _last(document, "active", "echo", "") == len(sockets):
                        break
                    await asyncio.sleep(0.2)
            assert document["workers"] == {"answered": 3, "expected": 3}
            assert _last(document, "messages", "echo", "in") == len(sockets)
            assert _last(document, "bytes", "echo", "out") == 2 * len(sockets)
            assert _last(document, "handshakes", "echo", "accepted") == len(sockets)
            assert _last(document, "handshakes", "dead", "502") == refused
            assert _last(document, "upstream_failures", "dead", "ws://127.0.0.1:1/") == refused

            listed = await _get(client, "refusals?api=dead")
            assert listed["workers"] == {"answered": 3, "expected": 3}
            assert [r["status"] for r in listed["refusals"]] == [502] * refused
            assert len({r["worker"] for r in listed["refusals"]}) >= 1
            assert "qs3cretq" not in str(listed)
