"""A management change to a large configuration does not stop the open connections of the worker: what it
validates and builds runs off the event loop, and what did not change is not checked or built again."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import httpx2

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.management import GatewayManagement, MemoryStore
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import UNUSED_UPSTREAM
from support.management import TOKEN
from support.servers import UvicornServer
from support.upstream import UpstreamServer

LARGE = 400
"""APIs in the configuration, each with the four policies of the hunt that found the stall: before,
one change at 400 held the worker's event loop for seconds (every connection's echo waited)."""
MAX_GAP = 1.5
"""Seconds between two echoes a client pinging every 50 ms may wait while the change is made: before,
the gap was the whole change (a full validation five times over, on the event loop)."""


def _api(i: int) -> dict[str, Any]:
    return {
        "name": f"m{i}",
        "path": f"/ws/m{i}/{{room}}",
        "upstreams": [UNUSED_UPSTREAM],
        "policies": [
            {"check-header": {"header": "X-Tenant", "pattern": "^[a-z]{1,20}(-[a-z0-9]{1,10}){0,5}$"}},
            {"set-header": {"header": "X-Room", "value": "{path.room}-{client.ip}-{header.x-tenant|none}"}},
            {"limit-concurrency": {"key": "{client.network}-{path.room}", "max": 100}},
            {"rate-limit-by-key": {"key": "{client.network}", "limit": 1000, "window": 60}},
        ],
    }


async def test_a_change_to_a_large_configuration_keeps_an_open_connection_answering(
    upstream: UpstreamServer,
) -> None:
    """A client pinging every 50 ms through the gateway gets every echo within MAX_GAP while APIs change."""
    config = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}]}
    config["apis"] += [_api(i) for i in range(LARGE - 1)]
    gateway = WebSocketGateway(not_found, config=config)
    management = GatewayManagement(gateway, admin_token=TOKEN, store=MemoryStore())
    with UvicornServer(management, lifespan="on", proxy_headers=False) as server:
        base = server.url("/_gateway", scheme="http")
        echoes: list[float] = []
        async with await connect(server.url("/ws/echo")) as ws:

            async def ping() -> None:
                for i in range(10_000):
                    await ws.send(f"m{i}")
                    await ws.recv()
                    echoes.append(time.monotonic())
                    await asyncio.sleep(0.05)

            pinger = asyncio.create_task(ping())
            try:
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with httpx2.AsyncClient(
                    base_url=base + "/", headers=headers, trust_env=False, timeout=120
                ) as http:
                    await asyncio.sleep(0.3)
                    started = time.monotonic()
                    for k in range(2):
                        answer = await http.put("apis/m1", json={**_api(1), "idle_timeout": 100 + k})
                        assert answer.status_code == 200, answer.text
                    ended = time.monotonic()
                    await asyncio.sleep(0.3)
                    assert (await http.get("apis/m1")).json()["idle_timeout"] == 101
            finally:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
        during = [started, *(t for t in echoes if started <= t <= ended), ended]
        gaps = [later - earlier for earlier, later in itertools.pairwise(during)]
        assert max(gaps) < MAX_GAP, f"the echoes stopped for {max(gaps):.2f} s during the change"


async def test_changes_build_only_the_apis_they_change(upstream: UpstreamServer) -> None:
    """Ten PUTs at once: the APIs they changed are built again; every other API's admission object and
    pipeline are the very ones it had (a wss:// API's too are made again: its trust store is read), and a
    connection open on an unchanged API goes on echoing."""
    config = {
        "apis": [
            {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]},
            {"name": "tls", "path": "/ws/tls", "upstreams": ["wss://127.0.0.1:9/"]},
            *(_api(i) for i in range(30)),
        ]
    }
    gateway = WebSocketGateway(not_found, config=config)
    management = GatewayManagement(gateway, admin_token=TOKEN, store=MemoryStore())
    with UvicornServer(management, lifespan="on", proxy_headers=False) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx2.AsyncClient(
                base_url=server.url("/_gateway", scheme="http") + "/", headers=headers, trust_env=False, timeout=120
            ) as http:
                assert (await http.get("apis")).status_code == 200  # started: the stored changes applied
                apis, pipelines = dict(gateway._apis), dict(gateway._policies.pipelines)
                changed = {f"m{i}" for i in range(10)}
                answers = await asyncio.gather(
                    *(http.put(f"apis/{name}", json={**_api(int(name[1:])), "idle_timeout": 50}) for name in changed)
                )
                assert [a.status_code for a in answers] == [200] * 10
            await ws.send("still here")
            assert await ws.recv() == "still here"
        kept = {name for name, api in gateway._apis.items() if api is apis[name]}
        assert kept == set(apis) - changed - {"tls"}
        kept = {name for name, pipeline in gateway._policies.pipelines.items() if pipeline is pipelines[name]}
        assert kept == set(pipelines) - changed
