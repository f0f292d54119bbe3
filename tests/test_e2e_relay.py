"""End to end: real uvicorn, the gateway, a real websockets upstream.

Tests taking ``gateway_mode`` (or ``stack``) run in every mode: relayed under each uvicorn WebSocket
implementation, and spliced (passthrough); those taking ``ws_impl`` cover the relay only.
Passthrough-only behaviour is in ``test_e2e_passthrough.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from support.clients import connect, expect_close, expect_status
from support.gateway import MIB, GatewayMode, ProbedGateway, Stack, serve
from support.servers import UvicornServer, WSImpl
from support.upstream import UpstreamServer


@pytest.fixture
def stack(upstream: UpstreamServer, gateway_mode: GatewayMode) -> Iterator[Stack]:
    with serve(upstream, gateway_mode) as stack:
        yield stack


@pytest.fixture
def relay_stack(upstream: UpstreamServer, ws_impl: WSImpl) -> Iterator[Stack]:
    with serve(upstream, GatewayMode(ws_impl)) as stack:
        yield stack


async def test_text_binary_empty_and_1mib_messages_keep_their_type(stack: Stack) -> None:
    async with await connect(stack.url("/ws/echo")) as ws:
        messages: list[str | bytes] = ["hello", b"\x00\xff", "", b"", "é" * 1000, b"x" * MIB, "y" * MIB]
        for message in messages:
            await ws.send(message)
            echoed = await ws.recv()
            assert type(echoed) is type(message)
            assert echoed == message


async def test_message_over_the_limit_closes_sender_1009_and_upstream_1001(relay_stack: Stack) -> None:
    # Compressed on the client hop: the limit applies to the message, not its wire bytes (passthrough
    # reads frame headers only: its version of this test is in test_e2e_passthrough.py).
    async with await connect(relay_stack.url("/ws/echo")) as ws:
        await ws.send(b"x" * (MIB + 1))
        assert await expect_close(ws) == (1009, "message too big")
    assert await relay_stack.upstream.wait_for_closes_async(1) == [(1001, "client message too big")]


async def test_upstream_message_over_the_limit_closes_client_1001_and_upstream_1009(
    upstream: UpstreamServer, gateway_mode: GatewayMode
) -> None:
    with serve(upstream, gateway_mode, max_message_size=200) as stack:
        # /headers sends a JSON document of the request headers first: well over 200 bytes.
        async with await connect(stack.url("/ws/headers/x")) as ws:
            assert await expect_close(ws) == (1001, "upstream message too big")
        ((code, _reason),) = await upstream.wait_for_closes_async(1)
        assert code == 1009
        await stack.gateway.settle()


async def test_subprotocol_offered_upstream_and_its_choice_accepted(stack: Stack) -> None:
    async with await connect(stack.url("/ws/subprotocol"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert await ws.recv() == "chat.v2"
    offered = stack.upstream.handshakes[-1].header("sec-websocket-protocol")
    assert offered is not None and [p.strip() for p in offered.split(",")] == ["chat.v1", "chat.v2"]


async def test_no_subprotocol_when_upstream_picks_none(stack: Stack) -> None:
    async with await connect(stack.url("/ws/subprotocol"), subprotocols=["other"]) as ws:
        assert ws.subprotocol is None
        assert await ws.recv() == ""


@pytest.mark.parametrize("upstream_deflate", [True, False])
async def test_compression_is_negotiated_per_hop(
    upstream: UpstreamServer, upstream_nodeflate: UpstreamServer, ws_impl: WSImpl, upstream_deflate: bool
) -> None:
    target = upstream if upstream_deflate else upstream_nodeflate
    with serve(target, GatewayMode(ws_impl)) as stack:
        async with await connect(stack.url("/ws/echo"), compression="deflate") as ws:
            assert ws.response is not None
            assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
            messages: list[str | bytes] = ["compress me " * 1000, b"\x01" * 70000, ""]
            for message in messages:
                await ws.send(message)
                assert await ws.recv() == message
        upstream_ext = target.handshakes[-1].extensions
        assert ("permessage-deflate" in (upstream_ext or "")) is upstream_deflate


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (1001, "leaving"), (4000, "app 4000"), (4999, "")])
async def test_client_close_code_and_reason_reach_the_upstream(stack: Stack, code: int, reason: str) -> None:
    async with await connect(stack.url("/ws/echo")) as ws:
        await ws.send("hi")
        await ws.recv()
        await ws.close(code, reason)
    assert await stack.upstream.wait_for_closes_async(1) == [(code, reason)]
    await stack.gateway.settle()


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (1001, "going"), (4000, "app 4000"), (4999, "x" * 123)])
async def test_upstream_close_code_and_reason_reach_the_client(stack: Stack, code: int, reason: str) -> None:
    async with await connect(stack.url(f"/ws/close/{code}")) as ws:
        await ws.send(reason)
        assert await expect_close(ws) == (code, reason)
    await stack.gateway.settle()


async def test_upstream_killed_mid_connection_gives_client_1011(stack: Stack) -> None:
    async with await connect(stack.url("/ws/echo")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        assert stack.upstream.kill_connections() == 1
        code, _ = await expect_close(ws)
        assert code == 1011
    await stack.gateway.settle()


async def test_client_vanishing_closes_upstream_and_leaks_nothing(stack: Stack) -> None:
    ws = await connect(stack.url("/ws/echo"))
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.transport.abort()  # no close frame: the TCP connection just drops
    # uvicorn reports 1005 or 1006 depending on the implementation: either way the client went away.
    assert await stack.upstream.wait_for_closes_async(1) == [(1001, "client went away")]
    await stack.gateway.settle()


async def test_client_close_while_upstream_streams_drains_cleanly(stack: Stack) -> None:
    # max_queue=None: in passthrough the pushes after the client's close still reach it (as RFC 6455
    # allows), and a full queue would pause the client's reading until its own 10 s close timeout.
    async with await connect(stack.url("/ws/push/500"), max_queue=None) as ws:
        await ws.send("go")
        assert await ws.recv() == "push 0"
        await ws.close(4002, "enough")
    assert await stack.upstream.wait_for_closes_async(1) == [(4002, "enough")]
    await stack.gateway.settle()


async def test_forwarded_headers_query_and_path_parameters(stack: Stack) -> None:
    headers = {"X-Custom": "kept", "Cookie": "a=b", "TE": "trailers", "User-Agent": "test-agent/1"}
    async with await connect(stack.url("/ws/headers/lobby%20one?x=1&y=2"), additional_headers=headers) as ws:
        seen = json.loads(await ws.recv())
    assert seen["path"] == "/headers/lobby%20one?x=1&y=2"
    got = seen["headers"]
    assert got["x-custom"] == ["kept"]
    assert got["cookie"] == ["a=b"]
    assert got["user-agent"] == ["test-agent/1"]
    assert got["x-forwarded-for"] == ["127.0.0.1"]
    assert got["x-forwarded-proto"] == ["http"]
    assert got["x-forwarded-host"] == [f"127.0.0.1:{stack.server.port}"]
    assert got["host"] == [f"127.0.0.1:{stack.upstream.port}"]
    assert "te" not in got
    assert "sec-websocket-extensions" not in got or got["sec-websocket-extensions"] != ["client offered"]


async def test_upstream_down_is_502(gateway_mode: GatewayMode) -> None:
    from support.servers import free_port

    gateway = ProbedGateway(gateway_mode.config(f"ws://127.0.0.1:{free_port()}"))
    with UvicornServer(gateway, ws=gateway_mode.ws) as server:
        status, headers, body = await expect_status(server.url("/ws/echo"))
    assert status == 502
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 502


async def test_upstream_slow_to_answer_is_504(upstream: UpstreamServer, gateway_mode: GatewayMode) -> None:
    with serve(upstream, gateway_mode, connect_timeout=0.5) as stack:
        status, _headers, body = await expect_status(stack.url("/ws/slow?delay=3"))
        assert status == 504
        assert json.loads(body)["status"] == 504


async def test_upstream_401_reaches_the_client_with_its_headers_and_body(stack: Stack) -> None:
    status, headers, body = await expect_status(stack.url("/ws/reject/401"))
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "rejected"}


async def test_upstream_redirect_is_not_followed(stack: Stack) -> None:
    status, _headers, _body = await expect_status(stack.url("/ws/redirect"))
    assert status == 502
    assert [h.path for h in stack.upstream.handshakes] == ["/redirect"]


async def test_failover_to_second_backend_and_passive_health(upstream: UpstreamServer, ws_impl: WSImpl) -> None:
    from support.servers import free_port

    dead = f"ws://127.0.0.1:{free_port()}/echo"
    config = {
        "apis": [
            {"name": "echo", "path": "/ws/echo", "upstreams": [dead, upstream.url("/echo")],
             "unhealthy_after": 2, "cooldown": 60},
        ]
    }  # fmt: skip
    gateway = ProbedGateway(config)
    with UvicornServer(gateway, ws=ws_impl) as server:
        for _ in range(4):
            async with await connect(server.url("/ws/echo")) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
    dead_backend, live_backend = gateway.gateway._apis["echo"].pool.backends
    assert dead_backend.failures == 2  # tried twice, then skipped while cooling down
    assert dead_backend.cooling_until > 0
    assert live_backend.failures == 0
    assert len(upstream.handshakes) == 4


async def test_idle_timeout_closes_both_sides_1001(upstream: UpstreamServer, gateway_mode: GatewayMode) -> None:
    with serve(upstream, gateway_mode, idle_timeout=0.3) as stack:
        async with await connect(stack.url("/ws/echo")) as ws:
            await ws.send("hi")
            await ws.recv()
            assert await expect_close(ws) == (1001, "idle timeout")
        assert await upstream.wait_for_closes_async(1) == [(1001, "idle timeout")]
        await stack.gateway.settle()


async def test_busy_connection_is_not_idle_but_hits_max_lifetime(
    upstream: UpstreamServer, gateway_mode: GatewayMode
) -> None:
    with serve(upstream, gateway_mode, idle_timeout=0.4, max_lifetime=1.2) as stack:
        async with await connect(stack.url("/ws/echo")) as ws:
            sent = 0
            with pytest.raises(ConnectionClosed) as info:
                while True:  # a message every 0.1 s keeps it from going idle
                    await ws.send("tick")
                    await ws.recv()
                    sent += 1
                    await asyncio.sleep(0.1)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "maximum connection lifetime reached")
        assert sent >= 5  # it outlived several idle periods
        await stack.gateway.settle()


async def test_drain_closes_open_connections_and_refuses_new_ones(stack: Stack) -> None:
    async with await connect(stack.url("/ws/echo")) as ws:
        await ws.send("hi")
        await ws.recv()
        await stack.gateway.on_server(lambda: stack.gateway.gateway.drain(grace=2))
        assert await expect_close(ws) == (1001, "gateway shutting down")
    assert await stack.upstream.wait_for_closes_async(1) == [(1001, "gateway shutting down")]
    status, headers, _ = await expect_status(stack.url("/ws/echo"))
    assert status == 503
    assert headers["retry-after"] == "5"
    await stack.gateway.settle()


async def test_server_shutdown_closes_client_and_upstream(upstream: UpstreamServer, gateway_mode: GatewayMode) -> None:
    gateway = ProbedGateway(gateway_mode.config(upstream))
    server = UvicornServer(gateway, ws=gateway_mode.ws, lifespan="on")
    server.start()
    ws = await connect(server.url("/ws/echo"))
    await ws.send("hi")
    await ws.recv()
    await asyncio.get_running_loop().run_in_executor(None, server.stop)
    code, _ = await expect_close(ws)
    assert code in (1001, 1012)
    ((upstream_code, _),) = await upstream.wait_for_closes_async(1)
    assert upstream_code in (1001, 1012)
    assert gateway.gateway.open_connections == 0
