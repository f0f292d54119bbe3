"""Changing a running gateway: new configuration, live connections listed, messaged and closed."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway import ConfigError
from support.clients import connect, expect_close, expect_status
from support.configs import api_entry
from support.gateway import ProbedGateway
from support.servers import UvicornServer
from support.upstream import UpstreamServer


def _config(upstream: UpstreamServer, *paths: str, **api: Any) -> dict[str, Any]:
    return {"apis": [api_entry(upstream, name=path.strip("/").replace("/", "-"), path=path, **api) for path in paths]}


async def test_new_config_applies_to_new_handshakes_and_open_connections_keep_theirs(upstream: UpstreamServer) -> None:
    gateway = ProbedGateway(_config(upstream, "/ws/a"))
    with UvicornServer(gateway) as server:
        async with await connect(server.url("/ws/a")) as old:
            changed = await gateway.on_server(lambda: gateway.gateway.apply_config(_config(upstream, "/ws/b")))
            assert changed == ["ws-a", "ws-b"]
            status, _, _ = await expect_status(server.url("/ws/a"))
            assert status == 404  # the standalone app answers what no API owns
            async with await connect(server.url("/ws/b")) as new:
                await new.send("b")
                assert await new.recv() == "b"
            await old.send("still here")  # removed from the config, but open connections keep going
            assert await old.recv() == "still here"


async def test_apply_config_with_drain_closes_connections_of_changed_apis_only(upstream: UpstreamServer) -> None:
    gateway = ProbedGateway(_config(upstream, "/ws/a", "/ws/b"))
    with UvicornServer(gateway) as server:
        async with await connect(server.url("/ws/a")) as a, await connect(server.url("/ws/b")) as b:
            new = _config(upstream, "/ws/a", "/ws/b")
            new["apis"][0]["idle_timeout"] = 60
            changed = await gateway.on_server(lambda: gateway.gateway.apply_config(new, drain=True))
            assert changed == ["ws-a"]
            assert await expect_close(a) == (1001, "API configuration changed")
            await b.send("unaffected")
            assert await b.recv() == "unaffected"


async def test_invalid_new_config_leaves_the_running_one(upstream: UpstreamServer) -> None:
    gateway = ProbedGateway(_config(upstream, "/ws/a"))
    with UvicornServer(gateway) as server:
        await _echo(server.url("/ws/a"))
        with pytest.raises(ConfigError, match=r"apis\[0\].upstreams\[0\]"):
            await gateway.on_server(
                lambda: gateway.gateway.apply_config({"apis": [{"name": "x", "path": "/x", "upstreams": ["htp://"]}]})
            )
        await _echo(server.url("/ws/a"))


async def test_live_connections_are_listed_messaged_and_closed(upstream: UpstreamServer) -> None:
    gateway = ProbedGateway(_config(upstream, "/ws/a"))
    with UvicornServer(gateway) as server:
        async with await connect(server.url("/ws/a")) as ws:
            await ws.send("hello")
            await ws.recv()
            (live,) = gateway.gateway.connections()
            assert live.api == "ws-a"
            assert live.client.startswith("127.0.0.1:")
            assert (live.stats.messages_in, live.stats.messages_out) == (1, 1)
            assert await gateway.on_server(lambda: gateway.gateway.send_to_connection(live.id, "from management"))
            assert await ws.recv() == "from management"
            assert not await gateway.on_server(lambda: gateway.gateway.send_to_connection("nope", "x"))
            assert await gateway.on_server(lambda: gateway.gateway.close_connection(live.id, 4008, "kicked"))
            assert await expect_close(ws) == (4008, "kicked")
        assert await upstream.wait_for_closes_async(1) == [(4008, "kicked")]
        await gateway.settle()
        assert gateway.gateway.connections() == []


async def _echo(url: str) -> None:
    async with await connect(url) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
