"""Message policies end to end: real uvicorn, a real ``websockets`` upstream, real Redis for shared keys."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jwt
import pytest
from redis.asyncio import Redis

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.access import access_line
from support.clients import connect, expect_close
from support.gateway import PASSTHROUGH
from support.jwts import HS_SECRET, token
from support.redis import SHARED_REDIS, redis_available, unique_prefix
from support.servers import UvicornFactory, UvicornServer, WSImpl
from support.upstream import UpstreamServer

JWT = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}
needs_redis = pytest.mark.skipif(not redis_available(), reason="Redis is not running on 127.0.0.1:6379")


@pytest.fixture(params=["relay", "framed"])
def uvicorn_server(uvicorn_server: UvicornFactory, request: pytest.FixtureRequest) -> UvicornFactory:
    """Every test twice: relayed under uvicorn's websockets-sansio, and through the frame relay under the
    gateway's protocol (what ``asgi-ws-gateway run`` serves with)."""
    if request.param == "relay":
        return uvicorn_server

    def start(app: Any, *, ws: WSImpl = "websockets-sansio", **config: Any) -> UvicornServer:
        if ws != "websockets-sansio":
            pytest.skip("the frame relay replaces websockets-sansio; the other implementations relay as before")
        return uvicorn_server(app, ws=PASSTHROUGH, **config)

    return start


def _serve(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    inbound: list[Any] = (),  # type: ignore[assignment]
    outbound: list[Any] = (),  # type: ignore[assignment]
    *,
    policies: list[Any] | None = None,
    error_reply: dict[str, Any] | None = None,
    ws: WSImpl = "websockets-sansio",
    **top: Any,
) -> tuple[WebSocketGateway, str]:
    """One API at /ws/echo in front of the upstream's echo; returns the gateway and its URL."""
    api = {
        "name": "echo",
        "path": "/ws/echo",
        "upstreams": [upstream.url("/echo")],
        "policies": policies or [],
        "message_policies": {"inbound": list(inbound), "outbound": list(outbound), "error_reply": error_reply},
    }
    gateway = WebSocketGateway(not_found, config={"apis": [api], **top})
    server = uvicorn_server(gateway, ws=ws)
    return gateway, server.url("/ws/echo")


def _auth(**claims: Any) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {token(**claims)}"}}


def _actions(gateway: WebSocketGateway) -> dict[tuple[str, str, str, str], int]:
    """The policy action counts of the gateway's (one) open connection."""
    (connection,) = gateway.connections()
    return dict(connection.stats.policy_actions)


def _error(text: str | bytes) -> str:
    reply = json.loads(text)
    assert reply["type"] == "error"
    return str(reply["error"])


async def test_oversize_client_message_closes_client_1009_and_upstream_1001(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, ws_impl: WSImpl
) -> None:
    _, url = _serve(uvicorn_server, upstream_server, [{"limit-message-size": {"max": 100}}], ws=ws_impl)
    before = len(upstream_server.closes)
    async with await connect(url) as ws:
        await ws.send("x" * 100)
        assert await ws.recv() == "x" * 100
        await ws.send("x" * 101)
        assert await expect_close(ws) == (1009, "message too big")
    closes = await upstream_server.wait_for_closes_async(before + 1)
    assert closes[-1] == (1001, "client message too big")


async def test_oversize_upstream_message_closes_upstream_1009_and_client_1001(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, ws_impl: WSImpl
) -> None:
    """The echo of a message the inbound limit admits is too big for the outbound one."""
    _, url = _serve(uvicorn_server, upstream_server, [{"limit-message-size": {"max": 1000}}],
                    [{"limit-message-size": {"max": 100}}], ws=ws_impl)  # fmt: skip
    before = len(upstream_server.closes)
    async with await connect(url) as ws:
        await ws.send(b"y" * 150)
        assert await expect_close(ws) == (1001, "upstream message too big")
    closes = await upstream_server.wait_for_closes_async(before + 1)
    assert closes[-1] == (1009, "message too big")


async def test_oversize_message_dropped_with_an_error_when_configured(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    gateway, url = _serve(uvicorn_server, upstream_server, [{"limit-message-size": {"max": 10, "action": "drop"}}])
    async with await connect(url) as ws:
        await ws.send("z" * 11)
        assert _error(await ws.recv()) == "message_too_big"
        await ws.send("small")
        assert await ws.recv() == "small"
        assert _actions(gateway) == {("limit-message-size", "drop", "inbound", "message_too_big"): 1}


@pytest.mark.parametrize("action", ["delay", "drop", "close"])
async def test_flood_hits_the_per_connection_limit(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, action: str
) -> None:
    window = 0.5 if action == "delay" else 60
    limit = {"rate-limit-messages": {"messages": 3, "window": window, "action": action, "close_code": 1008}}
    gateway, url = _serve(uvicorn_server, upstream_server, [limit])
    async with await connect(url) as ws:
        if action == "close":  # the echoes first: the close would overtake them
            for i in range(3):
                await ws.send(f"m{i}")
                assert await ws.recv() == f"m{i}"
            await ws.send("m3")
            assert await expect_close(ws) == (1008, "message rate exceeded")
            return
        for i in range(6):
            await ws.send(f"m{i}")
        if action == "delay":  # held back, then all delivered in order
            assert [await ws.recv() for _ in range(6)] == [f"m{i}" for i in range(6)]
            assert _actions(gateway)[("rate-limit-messages", "delay", "inbound", "rate_limited")] >= 1
        elif action == "drop":
            replies = [str(await ws.recv()) for _ in range(6)]  # errors come straight back, echoes via the upstream
            assert [r for r in replies if r.startswith("m")] == ["m0", "m1", "m2"]
            assert [_error(r) for r in replies if not r.startswith("m")] == ["rate_limited"] * 3
            assert _actions(gateway) == {("rate-limit-messages", "drop", "inbound", "rate_limited"): 3}
        else:
            raise AssertionError(action)


async def test_byte_budget_drops_what_exceeds_it(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    limit = {"rate-limit-messages": {"bytes": 10, "window": 60, "action": "drop"}}
    _, url = _serve(uvicorn_server, upstream_server, [limit])
    async with await connect(url) as ws:
        await ws.send("123456")
        assert await ws.recv() == "123456"
        await ws.send("12345")  # 11 bytes in the window
        assert _error(await ws.recv()) == "rate_limited"
        await ws.send("1234")
        assert await ws.recv() == "1234"


@needs_redis
@pytest.mark.parametrize("action", ["delay", "drop", "close"])
async def test_two_connections_on_two_workers_share_a_key_through_redis(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, action: str
) -> None:
    """Two gateways (as two workers would) with one Redis: alice's connections share one budget."""
    window = 3.0 if action == "delay" else 60
    limit = {"rate-limit-messages": {"key": "{jwt.sub}", "messages": 4, "window": window, "action": action}}
    store = {"type": "redis", "url": SHARED_REDIS, "prefix": unique_prefix()}
    (gw_a, url_a), (gw_b, url_b) = (
        _serve(uvicorn_server, upstream_server, [limit], policies=[JWT], store=store) for _ in range(2)
    )
    async with await connect(url_a, **_auth()) as a, await connect(url_b, **_auth()) as b:
        await _early_in_a_window(window, margin=2.5 if action == "delay" else 10)
        for i in range(3):
            await a.send(f"a{i}")
            assert await a.recv() == f"a{i}"
        await b.send("b0")
        assert await b.recv() == "b0"  # the fourth message of the window
        if action == "close":
            await b.send("b1")
            assert await expect_close(b) == (1013, "message rate exceeded")
            return
        for i in (1, 2):
            await b.send(f"b{i}")
        if action == "delay":  # the rest wait for the next window
            assert [await b.recv() for _ in range(2)] == ["b1", "b2"]
            assert _actions(gw_b)[("rate-limit-messages", "delay", "inbound", "rate_limited")] >= 1
        elif action == "drop":
            replies = [await b.recv() for _ in range(2)]
            assert [_error(r) for r in replies] == ["rate_limited"] * 2
            async with await connect(url_b, **_auth(sub="bob")) as other:  # another key is not affected
                await other.send("bob")
                assert await other.recv() == "bob"
        else:
            raise AssertionError(action)
    assert gw_a is not gw_b


@needs_redis
@pytest.mark.parametrize("leaves", ["closes", "vanishes"])
async def test_a_closed_connection_gives_back_what_its_worker_reserved_and_did_not_use(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, caplog: pytest.LogCaptureFixture, leaves: str
) -> None:
    """Alice sends one message on worker A and leaves (a close, or her TCP connection dropped); on worker B
    she then gets the other 99 of the window.

    A's batch (10 of 100) stayed counted in Redis until the window ended: c1 read 10 after one message, and
    another worker was admitted 90 of 100 (measured), 9 refused with the window's budget unused."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    limit = {"rate-limit-messages": {"key": "{jwt.sub}", "messages": 100, "window": 3600, "action": "drop"}}
    prefix = unique_prefix()
    store = {"type": "redis", "url": SHARED_REDIS, "prefix": prefix}
    (_, url_a), (_, url_b) = (
        _serve(uvicorn_server, upstream_server, [limit], policies=[JWT], store=store) for _ in range(2)
    )
    await _early_in_a_window(3600, margin=60)
    async with await connect(url_a, **_auth()) as a:
        await a.send("a0")
        assert await a.recv() == "a0"
        if leaves == "vanishes":
            a.transport.abort()
    await access_line(caplog)  # A's connection is over (its policy tasks too)
    async with Redis.from_url(SHARED_REDIS, decode_responses=True) as client:
        (key,) = [k async for k in client.scan_iter(match=f"{prefix}:msgrate:*")]
        assert await client.hget(key, "c1") == "1"
        async with await connect(url_b, **_auth()) as b:
            for i in range(99):
                await b.send(f"b{i}")
            replies = [await b.recv() for _ in range(99)]
        assert replies == [f"b{i}" for i in range(99)]
        await client.delete(key)


async def _early_in_a_window(window: float, *, margin: float) -> None:
    """Wait, if need be, until `margin` seconds remain of Redis's current window: the shared budget's windows
    are aligned on Redis's clock, and messages sent across a boundary would count in two windows."""
    async with Redis.from_url(SHARED_REDIS) as client:
        seconds, micros = await client.time()
    left = window - (seconds + micros / 1e6) % window
    if left < margin:
        await asyncio.sleep(left + 0.05)


async def test_well_behaved_connection_unaffected_by_a_flooding_one(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """A connection flooding past its limit (and not reading its error replies) does not hold up another."""
    limit = {"rate-limit-messages": {"messages": 50, "window": 1, "action": "drop"}}
    gateway, url = _serve(uvicorn_server, upstream_server, [limit])
    flooder = await connect(url)
    polite = await connect(url)

    async def flood() -> None:
        for i in range(20_000):
            await flooder.send(f"flood {i:05} " + "x" * 100)

    flooding = asyncio.create_task(flood())
    try:
        while not any(c.stats.policy_actions for c in gateway.connections()):  # noqa: ASYNC110 - another thread's state
            await asyncio.sleep(0.01)
        async with asyncio.timeout(10):
            for i in range(20):
                await polite.send(f"hello {i}")
                assert await polite.recv() == f"hello {i}"
        drops = sum(n for c in gateway.connections() for n in c.stats.policy_actions.values())
        assert drops > 0
    finally:
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)
        flooder.transport.abort()
        await polite.close()


SCHEMA = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "say"}, "text": {"type": "string", "maxLength": 20}},
}


async def test_schema_valid_message_passes_and_invalid_ones_are_dropped_with_errors(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    gateway, url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": SCHEMA}}])
    async with await connect(url) as ws:
        await ws.send('{"type": "say", "text": "hi"}')
        assert json.loads(await ws.recv()) == {"type": "say", "text": "hi"}
        await ws.send('{"type": "say", "text": "this is a secret and far too long"}')
        reply = json.loads(await ws.recv())
        assert reply["error"] == "schema_mismatch" and reply["detail"].endswith("at /text (maxLength)")
        assert "secret" not in reply["detail"]  # never the content
        await ws.send("not json")
        assert _error(await ws.recv()) == "invalid_json"
        await ws.send(b"\x00")
        assert _error(await ws.recv()) == "binary_message"
        assert sum(_actions(gateway).values()) == 3


AMBIGUOUS = [
    '{"type": "shout", "type": "say", "text": "hi"}',  # the schema sees "say"; a first-wins reader "shout"
    '{"type": "say", "text": "hi", "meta": {"admin": false, "admin": true}}',
    '[{"type": "say", "text": "hi", "text": "far too long for the schema to take it"}]',
]


async def test_a_message_readers_disagree_on_never_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """A name twice in one object: checked as the last value, read by some upstreams as the first."""
    schema = {"anyOf": [SCHEMA, {"type": "array"}]}
    gateway, url = _serve(uvicorn_server, upstream_server, [{"validate-message": {"schema": schema}}],
                          [{"validate-message": {"schema": schema}}])  # fmt: skip
    async with await connect(url) as ws:
        for message in AMBIGUOUS:
            await ws.send(message)
            reply = json.loads(await ws.recv())
            assert reply["error"] == "ambiguous_json" and "appears twice in one object" in reply["detail"]
        await ws.send('{"type": "say", "text": "hi"}')  # the connection goes on
        assert json.loads(await ws.recv()) == {"type": "say", "text": "hi"}
        assert _actions(gateway) == {("validate-message", "drop", "inbound", "ambiguous_json"): 3}


async def test_transform_never_passes_an_ambiguous_message_on_untransformed(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """``non_object: pass`` lets through what is not a JSON object, but not an object it cannot read
    as every reader would: ``remove: [admin]`` must not be skipped by sending ``admin`` twice."""
    transform = {"transform-message": {"remove": ["admin"], "non_object": "pass"}}
    _, url = _serve(uvicorn_server, upstream_server, [transform])
    async with await connect(url) as ws:
        await ws.send('{"text": "hi", "admin": true, "admin": true}')
        assert _error(await ws.recv()) == "ambiguous_json"
        await ws.send("[1, 2]")  # not an object: passes as configured
        assert await ws.recv() == "[1, 2]"
        await ws.send('{"text": "hi", "admin": true}')
        assert json.loads(await ws.recv()) == {"text": "hi"}


async def test_an_ambiguous_message_read_by_a_users_function_is_dropped_not_a_policy_failure(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``message.json()`` raises in a user's transform: the client's message is dropped with a reply
    (no ERROR, no traceback, no 1011), and the connection goes on."""
    _, url = _serve(uvicorn_server, upstream_server, [add_seen])
    async with await connect(url) as ws:
        await ws.send('{"a": 1, "a": 2}')
        assert _error(await ws.recv()) == "ambiguous_json"
        await ws.send('{"a": 1}')
        assert json.loads(await ws.recv())["a"] == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("code", [1007, 1008])
async def test_invalid_message_closes_with_the_configured_code(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, code: int
) -> None:
    policy = {"validate-message": {"schema": SCHEMA, "action": "close", "close_code": code}}
    _, url = _serve(uvicorn_server, upstream_server, [policy])
    before = len(upstream_server.closes)
    async with await connect(url) as ws:
        await ws.send('{"type": "shout"}')
        assert await expect_close(ws) == (code, "invalid message")
    closes = await upstream_server.wait_for_closes_async(before + 1)
    assert closes[-1] == (1001, "client sent an invalid message")


async def test_transform_stamps_a_claim_on_every_client_message(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    transform = {"transform-message": {"set": {"user": "{jwt.sub}", "meta.room": "lobby"}, "remove": ["debug"]}}
    _, url = _serve(uvicorn_server, upstream_server, [transform], policies=[JWT])
    async with await connect(url, **_auth(sub="alice")) as ws:
        await ws.send('{"user": "mallory", "debug": true, "text": "hi"}')
        assert json.loads(await ws.recv()) == {"user": "alice", "text": "hi", "meta": {"room": "lobby"}}


async def add_seen(message: Any) -> dict[str, Any]:
    """A user transform (the extension point): counts messages per connection in its state."""
    state = message.connection.state
    state["seen"] = state.get("seen", 0) + 1
    return {**message.json(), "seen": state["seen"], "direction": message.direction}


async def test_user_transform_function_in_code(uvicorn_server: UvicornFactory, upstream_server: UpstreamServer) -> None:
    outbound = [{"transform-message": {"call": f"{__name__}:add_seen"}}]
    _, url = _serve(uvicorn_server, upstream_server, [add_seen], outbound)
    async with await connect(url) as ws:
        for n in (1, 2):
            await ws.send("{}")
            # one state per connection, shared by both directions: the inbound call counted too
            assert json.loads(await ws.recv()) == {"seen": 2 * n, "direction": "outbound"}


def _expiry(**settings: Any) -> dict[str, Any]:
    return {"credential-expiry": settings}


async def test_token_expiring_mid_connection_closes_it_with_1008(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, ws_impl: WSImpl
) -> None:
    _, url = _serve(uvicorn_server, upstream_server, [_expiry()], policies=[JWT], ws=ws_impl)
    before = len(upstream_server.closes)
    # exp is in whole seconds: minted just after a second starts, the token lives ~1 s, not 0-1 s
    await asyncio.sleep(1 - time.time() % 1)
    async with await connect(url, **_auth(ttl=1)) as ws:
        await ws.send("still valid")
        assert await ws.recv() == "still valid"
        assert await expect_close(ws) == (1008, "token expired")
    closes = await upstream_server.wait_for_closes_async(before + 1)
    assert closes[-1] == (1001, "client token expired")


async def test_token_refreshed_in_band_keeps_the_connection_open(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    gateway, url = _serve(uvicorn_server, upstream_server, [_expiry()], policies=[JWT])
    first = token(ttl=2)
    async with await connect(url, additional_headers={"Authorization": f"Bearer {first}"}) as ws:
        await ws.send(json.dumps({"type": "auth.refresh", "token": token(sub="mallory", ttl=300)}))
        assert _error(await ws.recv()) == "refresh_other_subject"
        await ws.send(json.dumps({"type": "auth.refresh", "token": "not-a-jwt"}))
        assert _error(await ws.recv()) == "refresh_token_invalid"
        fresh = token(ttl=300)
        await ws.send(json.dumps({"type": "auth.refresh", "token": fresh}))
        ack = json.loads(await ws.recv())
        assert ack["type"] == "auth.refresh.ok" and ack["expires_at"] > time.time() + 200
        old_exp = jwt.decode(first, options={"verify_signature": False})["exp"]
        await asyncio.sleep(max(0.0, old_exp + 0.5 - time.time()))  # past the first token's expiry
        await ws.send("after the first token expired")
        assert await ws.recv() == "after the first token expired"  # the refresh never reached the upstream
        assert _actions(gateway)[("credential-expiry", "refresh", "inbound", "token_refreshed")] == 1


async def test_custom_error_reply_format(uvicorn_server: UvicornFactory, upstream_server: UpstreamServer) -> None:
    reply = {"format": "text", "template": "ERR {error.reason} by {error.policy} for {jwt.sub}"}
    limit = {"limit-message-size": {"max": 1, "action": "drop"}}
    _, url = _serve(uvicorn_server, upstream_server, [limit], policies=[JWT], error_reply=reply)
    async with await connect(url, **_auth(sub="carol")) as ws:
        await ws.send("too long")
        assert await ws.recv() == "ERR message_too_big by limit-message-size for carol"
