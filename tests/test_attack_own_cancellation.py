"""A ``CancelledError`` that user code raises while its task is not being cancelled.

A policy, a message policy or a cleanup that awaits a future or a task someone else cancelled (a
closed client session's call, a shared task cancelled elsewhere) raises ``CancelledError`` without
its handshake or connection being cancelled. It propagated as the task's own cancellation (an attack
pass, 2026-12-06): a handshake policy's was a traceback and a bare 500 under uvicorn's protocols, and
under ``run`` the client was dropped unanswered while the access line said it had left; a message
policy's ended one direction's pump and left the other waiting, the connection open and silent
until shutdown; a cleanup's skipped the cleanups after it (a ``limit-concurrency`` lease held until
its expiry: the key's next handshake a 429). Each is now the code's failure, as another exception is:
a 500 naming the policy, a 1011 close, the next cleanup run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies import HandshakeContext, WsMessage
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_close, expect_status
from support.gateway import PASSTHROUGH
from support.redis import STORES, unique_prefix
from support.servers import WS_IMPLS, UvicornServer, WSImpl
from support.upstream import UpstreamServer

SERVERS = [*WS_IMPLS, PASSTHROUGH]
"""uvicorn's own WebSocket protocols (``uvicorn app:app``) and the gateway's (``run``)."""


async def _cancelled_elsewhere() -> None:
    """Await a future that another party cancelled: ``CancelledError``, the task not cancelled."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


async def awaits_a_cancelled_future(context: HandshakeContext) -> None:
    await _cancelled_elsewhere()


async def cancelled_on_c(message: WsMessage) -> None:
    if message.data == "c":
        await _cancelled_elsewhere()


def _api(upstream: UpstreamServer, **fields: Any) -> dict[str, Any]:
    return {"name": "a", "path": "/a", "upstreams": [upstream.url("/echo")], "connect_timeout": 2, **fields}


@pytest.mark.parametrize("ws", SERVERS)
async def test_a_handshake_policys_own_cancelled_error_is_a_500_naming_it(
    upstream: UpstreamServer, ws: WSImpl, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = WebSocketGateway(not_found, config={"apis": [_api(upstream, policies=[awaits_a_cancelled_future])]})
    with UvicornServer(gateway, ws=ws) as server, caplog.at_level(logging.INFO):
        status, headers, body = await expect_status(server.url("/a"))
    assert status == 500
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 500
    assert any("awaits_a_cancelled_future" in str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert not any("abandoned" in r.getMessage() for r in caplog.records)
    assert not upstream.handshakes


@pytest.mark.parametrize("ws", SERVERS)
@pytest.mark.parametrize("passthrough", [True, False], ids=["frame relay", "relay"])
async def test_a_message_policys_own_cancelled_error_closes_both_sides_with_1011(
    upstream: UpstreamServer, ws: WSImpl, passthrough: bool
) -> None:
    """Not one side's pump ending in silence, the other waiting for ever."""
    api = _api(upstream, passthrough=passthrough, message_policies={"inbound": [cancelled_on_c]})
    gateway = WebSocketGateway(not_found, config={"apis": [api]})
    with UvicornServer(gateway, ws=ws) as server:
        async with await connect(server.url("/a")) as client:
            await client.send("x")
            assert await client.recv() == "x"
            await client.send("c")
            assert await asyncio.wait_for(expect_close(client), 5) == (1011, "a message policy failed")
        assert (await upstream.wait_for_closes_async(1))[0][0] == 1001


@pytest.mark.parametrize("store", STORES)
async def test_a_cleanups_own_cancelled_error_is_logged_and_the_other_cleanups_run(
    upstream: UpstreamServer, store: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The concurrency lease taken before it is released (the key's next handshake is admitted), and
    the failure is an ERROR as any other cleanup's (it passed without a word)."""

    async def adds_a_failing_cleanup(context: HandshakeContext) -> None:
        context.add_cleanup(_cancelled_elsewhere)  # runs first: cleanups run last registered first

    limit = {"limit-concurrency": {"key": "{query.u}", "max": 1, "lease_ttl": 300}}
    config: dict[str, Any] = {"apis": [_api(upstream, policies=[limit, adds_a_failing_cleanup])]}
    if store["type"] == "redis":
        config["store"] = {**store, "prefix": unique_prefix()}
    with UvicornServer(WebSocketGateway(not_found, config=config)) as server, caplog.at_level(logging.INFO):
        for _ in range(3):
            async with await connect(server.url("/a?u=alice")) as client:
                await client.send("x")
                assert await client.recv() == "x"
            await asyncio.sleep(0.2)  # the server's side of the close, and the cleanups, run after it
    failed = [r for r in caplog.records if r.getMessage() == "API a: a handshake cleanup failed"]
    assert len(failed) == 3


async def test_the_handshakes_own_cancellation_still_ends_it_as_before(upstream: UpstreamServer) -> None:
    """A policy cancelled by its deadline is the 504 it was: only cancellations of the policy's making change."""

    async def hangs(context: HandshakeContext) -> None:
        await asyncio.sleep(30)

    config = {"apis": [_api(upstream, policies=[hangs])], "handshake_limits": {"policy_timeout": 0.5}}
    with UvicornServer(WebSocketGateway(not_found, config=config), ws=PASSTHROUGH) as server:
        status, _, _ = await expect_status(server.url("/a"))
    assert status == 504
