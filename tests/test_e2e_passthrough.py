"""End to end through passthrough: what only the splice does.

The server is uvicorn with :class:`~asgi_ws_gateway.server.PassthroughWebSocketProtocol` and every
API has ``passthrough: true``. The behaviour the relay and the splice share is tested in every mode
in ``test_e2e_relay.py`` (the ``gateway_mode`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asgi_ws_gateway.relay.pumps import Relay
from support.clients import connect, expect_close
from support.gateway import MIB, PASSTHROUGH, GatewayMode, ProbedGateway, Stack, gateway_config, serve
from support.servers import UvicornServer
from support.upstream import UpstreamServer

SPLICED = GatewayMode("passthrough")


@pytest.fixture
def stack(upstream: UpstreamServer) -> Iterator[Stack]:
    """Gateway (passthrough on every API) under the passthrough server, in front of ``upstream``."""
    with serve(upstream, SPLICED) as stack:
        yield stack


async def test_connections_are_spliced_and_counted(stack: Stack) -> None:
    """The connection is a splice, and its messages and close are counted from frame headers."""
    async with await connect(stack.url("/ws/echo")) as ws:
        for message in ("a", b"bb", "c" * 70000):
            await ws.send(message)
            await ws.recv()
        (live,) = stack.gateway.gateway.connections()
        assert type(live.relay).__name__ == "Splice"
        assert await stack.gateway.gateway.send_to_connection(live.id, "from the gateway")
        assert await ws.recv() == "from the gateway"
        await ws.close(4001, "bye")
    await stack.gateway.settle()
    stats = live.stats
    assert (stats.messages_in, stats.messages_out) == (3, 3)
    assert stats.binary_in == 1
    assert (stats.closed_by, stats.close_code, stats.close_reason) == ("client", 4001, "bye")


@pytest.mark.parametrize("upstream_deflate", [True, False])
async def test_compression_is_negotiated_end_to_end(
    upstream: UpstreamServer, upstream_nodeflate: UpstreamServer, upstream_deflate: bool
) -> None:
    """The client's offer goes upstream and the upstream's answer comes back: one negotiation."""
    target = upstream if upstream_deflate else upstream_nodeflate
    with serve(target, SPLICED) as spliced:
        async with await connect(spliced.url("/ws/echo"), compression="deflate") as ws:
            assert ws.response is not None
            answer = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            for message in ("compress me " * 1000, b"\x01" * 70000, ""):
                await ws.send(message)
                assert await ws.recv() == message
        assert ("permessage-deflate" in answer) is upstream_deflate
        assert "permessage-deflate" in (target.handshakes[-1].header("sec-websocket-extensions") or "")
        await spliced.gateway.settle()


async def test_message_policies_keep_the_relay(upstream: UpstreamServer) -> None:
    """An API with message policies is relayed message by message even with passthrough on."""
    policies = {"inbound": [{"limit-message-size": {"max": 10}}]}
    with serve(upstream, SPLICED, message_policies=policies) as relayed:
        async with await connect(relayed.url("/ws/echo")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            (live,) = relayed.gateway.gateway.connections()
            assert isinstance(live.relay, Relay)
            assert live.relay.connection is not None  # its message policies are attached
            await ws.close()
        await relayed.gateway.settle()


async def test_management_close_sends_each_side_its_code(stack: Stack) -> None:
    """A close from management reaches the client unmasked and the upstream masked."""
    async with await connect(stack.url("/ws/echo")) as ws:
        await ws.send("hi")
        await ws.recv()
        (live,) = stack.gateway.gateway.connections()
        await stack.gateway.on_server(lambda: stack.gateway.gateway.close_connection(live.id, 4400, "kicked"))
        assert await expect_close(ws) == (4400, "kicked")
    assert await stack.upstream.wait_for_closes_async(1) == [(4400, "kicked")]
    await stack.gateway.settle()


async def test_message_over_the_limit_closes_sender_1009_and_upstream_1001(stack: Stack) -> None:
    """Uncompressed: the limit is read from frame headers (compressed, it applies to wire bytes)."""
    async with await connect(stack.url("/ws/echo"), compression=None) as ws:
        await ws.send(b"x" * (MIB + 1))
        assert await expect_close(ws) == (1009, "message too big")
    assert await stack.upstream.wait_for_closes_async(1) == [(1001, "client message too big")]
    await stack.gateway.settle()


async def test_failover_to_second_backend(upstream: UpstreamServer) -> None:
    """An unreachable backend is skipped for the next one, as in the relay."""
    from support.servers import free_port

    dead = f"ws://127.0.0.1:{free_port()}/echo"
    api = {"name": "echo", "path": "/ws/echo", "upstreams": [dead, upstream.url("/echo")], "passthrough": True}
    gateway = ProbedGateway({"apis": [api]})
    with UvicornServer(gateway, ws=PASSTHROUGH) as server:
        for _ in range(2):
            async with await connect(server.url("/ws/echo")) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
                (live,) = gateway.gateway.connections()
                assert type(live.relay).__name__ == "Splice"
        await gateway.settle()
    dead_backend, live_backend = gateway.gateway._apis["echo"].pool.backends
    assert dead_backend.failures >= 1
    assert live_backend.failures == 0
    assert len(upstream.handshakes) == 2


async def test_plain_uvicorn_relays_even_with_passthrough_on(upstream: UpstreamServer) -> None:
    """Without the package's protocol class the flag does nothing: the relay serves the connection."""
    gateway = ProbedGateway(gateway_config(upstream, passthrough=True))
    with UvicornServer(gateway, ws="websockets-sansio") as server:
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            (live,) = gateway.gateway.connections()
            assert type(live.relay).__name__ == "Relay"
        await gateway.settle()
