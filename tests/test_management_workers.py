"""Several uvicorn workers sharing Redis: changes reach every worker, connections are reached anywhere.

The standalone gateway runs as ``asgi-ws-gateway run --workers 3 --management /_gateway --redis``,
through the installed entry point, against the real Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from asgi_ws_gateway.management import ManagementClient
from asgi_ws_gateway.management.answers import an_object
from support.clients import connect, expect_close
from support.processes import standalone
from support.upstream import UpstreamServer

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _all_workers_listening(client: ManagementClient, workers: int) -> None:
    """Wait until every worker has joined the bus (PUBLISH reaches ``workers`` subscribers)."""
    async with asyncio.timeout(30):
        while (await client._call("GET", "connections", an_object))["workers"]["expected"] < workers:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_changes_and_connection_commands_reach_every_worker(
    tmp_path: Path, upstream: UpstreamServer, redis_prefix: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"apis:\n  - name: echo\n    path: /ws/echo\n    upstreams: [{upstream.url('/echo')}]\n")
    async with standalone(config, "--redis", REDIS_URL, "--redis-prefix", redis_prefix, workers=3) as gateway:
        client = gateway.client
        await _all_workers_listening(client, 3)
        base = gateway.ws("")

        # A new API answers at once, whichever worker takes the handshake.
        await client.create_api({"name": "late", "path": "/ws/late", "upstreams": [upstream.url("/echo")]})
        for _ in range(9):
            async with await connect(f"{base}/ws/late") as ws:
                await ws.send("here")
                assert await ws.recv() == "here"

        # Open connections until at least two workers hold some.
        sockets: dict[str, ClientConnection] = {}
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(10):
                for ws in await asyncio.gather(*(connect(f"{base}/ws/echo") for _ in range(4))):
                    await stack.enter_async_context(ws)
                    await ws.send("hi")
                    await ws.recv()
                    sockets[str(len(sockets))] = ws
                live = await client.list_connections(api="echo")
                if len({c["worker"] for c in live}) >= 2:
                    break
            assert len(live) == len(sockets)
            assert len({c["worker"] for c in live}) >= 2, "the kernel gave every connection to one worker"
            # A page: the oldest three over every worker (each sends at most three), and how many are open.
            page = await client._call("GET", "connections", an_object, params={"api": "echo", "limit": "3"})
            oldest = sorted(live, key=lambda c: c["opened_at"])[:3]
            assert [c["id"] for c in page["connections"]] == [c["id"] for c in oldest]
            assert page["total"] == len(sockets)
            by_port = {ws.local_address[1]: ws for ws in sockets.values()}
            crossed = {"send": 0, "kick": 0}
            for connection in live:
                ws = by_port[int(connection["client"].rsplit(":", 1)[1])]
                response = await client._call("POST", f"connections/{connection['id']}/messages", an_object,
                                                json={"text": f"to {connection['id']}"})  # fmt: skip
                assert await ws.recv() == f"to {connection['id']}"
                crossed["send"] += response["worker"] != response["served_by"]
                response = await client._call("POST", f"connections/{connection['id']}/close", an_object,
                                                json={"code": 4002, "reason": "kicked"})  # fmt: skip
                assert await expect_close(ws) == (4002, "kicked")
                crossed["kick"] += response["worker"] != response["served_by"]
            assert crossed["send"] >= 1 and crossed["kick"] >= 1, crossed  # held by a worker other than the caller's
        async with asyncio.timeout(10):
            while await client.list_connections():  # noqa: ASYNC110 - other processes' state
                await asyncio.sleep(0.05)
