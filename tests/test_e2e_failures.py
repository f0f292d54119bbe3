"""End to end, failures injected: what each side gets when something breaks (issue 11, items 1, 2, 4, 5).

Real uvicorn (each WebSocket implementation, and the passthrough protocol with ``passthrough: true``)
in front of the real scripted upstream. The close timeout is set far above the bounds the tests
wait, so a close that only happens when a timer fires fails the test instead of passing slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from asgi_ws_gateway._types import Data, Receive, Scope, Send
from asgi_ws_gateway.upstream import websockets_client as upstream_module
from support.clients import connect, expect_close
from support.gateway import PASSTHROUGH, GatewayMode, ProbedGateway, gateway_config
from support.servers import WS_IMPLS, UvicornServer, WSImpl
from support.upstream import UpstreamServer

CLOSE_TIMEOUT = 30.0  # seconds: no test waits this long, so no test passes on a timer
MIB = 1024 * 1024


class Stack:
    def __init__(self, gateway: ProbedGateway, server: UvicornServer, mode: str) -> None:
        self.gateway, self.server, self.mode = gateway, server, mode

    def url(self, path: str) -> str:
        return self.server.url(path)


def _serve(upstream: UpstreamServer, mode: str, **api: Any) -> Iterator[Stack]:
    passthrough = mode == "passthrough"
    config = gateway_config(upstream, passthrough=passthrough, close_timeout=CLOSE_TIMEOUT, **api)
    for name, target in (("stall", "/stall"), ("flood", "/flood/65536")):
        config["apis"].append({"name": name, "path": f"/ws/{name}", "upstreams": [upstream.url(target)],
                               "passthrough": passthrough, "close_timeout": CLOSE_TIMEOUT, **api})  # fmt: skip
    gateway = ProbedGateway(config)
    ws: WSImpl = PASSTHROUGH if passthrough else cast("WSImpl", mode)
    with UvicornServer(gateway, ws=ws) as server:
        yield Stack(gateway, server, mode)


@pytest.fixture
def stack(gateway_mode: GatewayMode, upstream: UpstreamServer) -> Iterator[Stack]:
    """The gateway in each mode: relay under each uvicorn implementation, and passthrough."""
    yield from _serve(upstream, gateway_mode.name)


@pytest.fixture(params=WS_IMPLS)
def relay_stack(request: pytest.FixtureRequest, upstream: UpstreamServer) -> Iterator[Stack]:
    """The relay only (no passthrough), under each uvicorn implementation."""
    yield from _serve(upstream, request.param)


async def _until(condition: Callable[[], bool], *, checks: int = 5) -> None:
    """Wait until ``condition()`` held for ``checks`` polls in a row (fails after 10 s)."""
    held = 0
    async with asyncio.timeout(10):
        while held < checks:
            held = held + 1 if condition() else 0
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _sending(ws: ClientConnection, message: bytes) -> AsyncIterator[None]:
    """Send ``message`` over and over in the background until the connection closes."""

    async def send_forever() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(message)

    task = asyncio.create_task(send_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- item 4: a client that vanishes ---------------------------------------------------------------


async def test_client_dropping_tcp_gives_the_upstream_1001(stack: Stack, upstream: UpstreamServer) -> None:
    """No close frame from the client: the upstream gets 1001 "client went away", in every mode."""
    ws = await connect(stack.url("/ws/echo"))
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.transport.abort()
    assert await upstream.wait_for_closes_async(1) == [(1001, "client went away")]
    await stack.gateway.settle()


async def test_client_closing_without_a_code_gives_the_upstream_1000(stack: Stack, upstream: UpstreamServer) -> None:
    """A close frame without a status code (1005) is a normal close, not a vanished client."""
    ws = await connect(stack.url("/ws/echo"))
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.protocol.send_frame(Frame(Opcode.CLOSE, b""))  # a close frame without a status code
    ws.send_data()
    with contextlib.suppress(ConnectionClosed):
        await ws.recv()
    ((code, _),) = await upstream.wait_for_closes_async(1)
    # The relay sends 1005 on as 1000; passthrough forwards the frame itself (no code: 1005).
    assert code == (1005 if stack.mode == "passthrough" else 1000)
    await stack.gateway.settle()


async def test_client_dropping_tcp_gives_an_in_process_upstream_1001(ws_impl: WSImpl) -> None:
    """The in-process connector hands its app the same disconnect code and reason."""
    seen: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                item = (message["code"], message.get("reason") or "")
                loop.call_soon_threadsafe(seen.put_nowait, item)
                return
            await send({"type": "websocket.send", "text": message.get("text")})

    config = {"apis": [{"name": "app", "path": "/ws/app", "upstreams": [{"app": app}]}]}
    gateway = ProbedGateway(config)
    with UvicornServer(gateway, ws=ws_impl) as server:
        ws = await connect(server.url("/ws/app"))
        await ws.send("hi")
        assert await ws.recv() == "hi"
        ws.transport.abort()
        async with asyncio.timeout(5):
            assert await seen.get() == (1001, "client went away")
        await gateway.settle()


# -- item 5: a malformed frame, and a slow consumer that vanishes -----------------------------------

BAD_FRAMES = [
    pytest.param(b"\x81\x02hi", id="unmasked"),
    pytest.param(b"\xa1\x80abcd", id="reserved-bit"),
    pytest.param(b"\x83\x80abcd", id="reserved-opcode"),
    pytest.param(b"\x09\x80abcd", id="fragmented-ping"),
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
async def test_malformed_client_frame_closes_both_sides_1002(
    stack: Stack, upstream: UpstreamServer, frame: bytes
) -> None:
    """The client gets 1002 and the upstream a 1002 close frame with the same reason, in every mode."""
    ws = await connect(stack.url("/ws/echo"), compression=None)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.transport.write(frame)
    client_code, client_reason = await expect_close(ws)
    ((code, reason),) = await upstream.wait_for_closes_async(1)
    assert code == 1002 and reason
    if stack.mode == "wsproto":
        # uvicorn's wsproto implementation closes the TCP connection without a close frame.
        assert (client_code, client_reason) == (1006, "")
    else:
        assert (client_code, client_reason) == (1002, reason)
    await stack.gateway.settle()


async def test_slow_consumer_vanishing_closes_the_upstream_at_once(stack: Stack, upstream: UpstreamServer) -> None:
    """A client that stopped reading, then dropped: the upstream gets 1001 and is closed well before the timeout."""
    ws = await connect(stack.url("/ws/flood"), max_queue=1)
    await ws.recv()  # flowing; from now on the client reads nothing
    await _until(upstream.writes_blocked)  # the gateway stopped reading the upstream: backpressure
    ws.transport.abort()
    assert await upstream.wait_for_closes_async(1) == [(1001, "client went away")]
    await stack.gateway.settle()  # 5 s, while the close timeout is 30 s


# -- item 1: the upstream resets while the gateway waits to send --------------------------------------


async def test_upstream_reset_while_paused_gives_the_client_1011(stack: Stack, upstream: UpstreamServer) -> None:
    """The upstream stops reading, the gateway's sends back up, then the upstream RSTs: a clean 1011."""
    ws = await connect(stack.url("/ws/stall"))
    async with _sending(ws, os.urandom(MIB // 2)):  # incompressible
        await _until(lambda: ws.paused)  # the gateway stopped reading the client: it waits on the upstream
        assert upstream.kill_connections() == 1
        assert await expect_close(ws) == (1011, "upstream connection failed")
    await stack.gateway.settle()


# -- item 2: a pump that fails ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["send", "recv"])
@pytest.mark.parametrize("policies", [False, True], ids=["relay", "policy-relay"])
async def test_failing_pump_closes_both_sides_1011_and_logs_once(
    upstream: UpstreamServer,
    ws_impl: WSImpl,
    where: str,
    policies: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in either pump (injected into the upstream leg): both sides get 1011 at once, one ERROR line."""
    connection = upstream_module.WebSocketsConnection
    if where == "send":
        real_send = connection.send

        async def send(self: Any, data: Data) -> None:
            if data == "boom":
                raise RuntimeError("injected send failure")
            await real_send(self, data)

        monkeypatch.setattr(connection, "send", send)
    else:
        real_recv = connection.recv

        async def recv(self: Any) -> Data:
            data = await real_recv(self)
            if data == "boom":
                raise RuntimeError("injected recv failure")
            return data

        monkeypatch.setattr(connection, "recv", recv)
    size_limit = [{"limit-message-size": {"max": 1000}}]
    api: dict[str, Any] = {"message_policies": {"inbound": size_limit, "outbound": size_limit}} if policies else {}
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    for stack in _serve(upstream, ws_impl, **api):
        async with await connect(stack.url("/ws/echo")) as ws:
            await ws.send("fine")
            assert await ws.recv() == "fine"
            await ws.send("boom")
            assert await expect_close(ws) == (1011, "gateway error")
        assert await upstream.wait_for_closes_async(1) == [(1011, "gateway error")]
        await stack.gateway.settle()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.getMessage()) for r in errors] == [
        ("asgi_ws_gateway.relay.pumps", "relay pump failed; closing both sides with 1011")
    ]
    assert errors[0].exc_info is not None and f"injected {where} failure" in str(errors[0].exc_info[1])
