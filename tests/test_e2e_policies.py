"""End to end through real uvicorn: JWTs from a JWKS over HTTP, client address, origins, subscriptions, limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies import hash_key
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.jwts import HS_SECRET, JwksServer, signing_key, token
from support.redis import RedisServer, redis_available, unique_prefix
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

ALGS = ["RS256", "ES256", "EdDSA"]


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    with JwksServer(*(signing_key(alg) for alg in ALGS)) as server:
        yield server


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, policies: list[Any], **top: Any) -> str:
    """Serve one API at /ws/{room} -> the upstream's /headers/{room}; returns the gateway's ws:// base URL."""
    api = {"name": "chat", "path": "/ws/{room}", "upstreams": [upstream.url("/headers/{room}")], "policies": policies}
    config = {"apis": [api, {**api, "name": "sub", "path": "/sub/{room}", "upstreams": [upstream.url("/subprotocol")]}]}
    server = uvicorn_server(WebSocketGateway(not_found, config={**config, **top}), proxy_headers=False)
    return server.url("")


def _jwt_policy(jwks: JwksServer, **settings: Any) -> dict[str, Any]:
    return {"validate-jwt": {"algorithms": ALGS, "jwks_url": jwks.url, "issuer": "https://issuer.test",
                             "audience": "chat", "jwks_min_refresh_interval": 0, **settings}}  # fmt: skip


async def _upstream_saw(url: str, **kw: Any) -> dict[str, Any]:
    """Connect and return what the /headers upstream reports it received (path and headers)."""
    async with await connect(url, **kw) as ws:
        seen: dict[str, Any] = json.loads(await ws.recv())
        return seen


async def _admitted_soon(url: str) -> None:
    """Connect, retrying 429s for up to 2 s: a closed connection's lease goes when its relay has ended."""
    async with asyncio.timeout(2):
        while True:
            try:
                await _upstream_saw(url)
                return
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                await asyncio.sleep(0.02)


@pytest.mark.parametrize("alg", ALGS)
async def test_jwt_from_jwks_admits_and_claims_are_forwarded(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, jwks: JwksServer, alg: str
) -> None:
    """A token signed by a JWKS key is accepted and set-header forwards its subject upstream."""
    base = _gateway(uvicorn_server, upstream_server,
                    [_jwt_policy(jwks), {"set-header": {"header": "X-User-Id", "value": "{jwt.sub}"}}])  # fmt: skip
    raw = token(signing_key(alg), sub=f"user-{alg}")
    seen = await _upstream_saw(base + "/ws/lobby", additional_headers={"Authorization": f"Bearer {raw}"})
    assert seen["headers"]["x-user-id"] == [f"user-{alg}"]


async def test_hs256_shared_secret(uvicorn_server: UvicornFactory, upstream_server: UpstreamServer) -> None:
    policy = {"validate-jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "chat"}}
    base = _gateway(uvicorn_server, upstream_server, [policy])
    await _upstream_saw(base + "/ws/lobby", additional_headers={"Authorization": f"Bearer {token()}"})
    forged = jwt.encode({"sub": "x", "aud": "chat", "exp": 4_000_000_000}, "another-secret-of-at-least-32-bytes!")
    status, headers, _ = await expect_status(
        base + "/ws/lobby", additional_headers={"Authorization": f"Bearer {forged}"}
    )
    assert (status, headers["www-authenticate"]) == (401, 'Bearer error="invalid_token"')


async def test_token_in_query_cookie_and_subprotocol(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, jwks: JwksServer
) -> None:
    """Each position works; query and subprotocol tokens are not passed upstream."""
    sources = [{"query": "access_token"}, {"cookie": "jwt"}, {"subprotocol": "bearer."}]
    base = _gateway(uvicorn_server, upstream_server, [_jwt_policy(jwks, token=sources)])
    raw = token(signing_key("ES256"))
    seen = await _upstream_saw(base + f"/ws/lobby?access_token={raw}&x=1")
    assert raw not in seen["path"] and seen["path"].endswith("x=1")
    seen = await _upstream_saw(base + "/ws/lobby", additional_headers={"Cookie": f"jwt={raw}"})
    assert seen["headers"]["cookie"] == [f"jwt={raw}"]
    async with await connect(
        base + "/sub/lobby", subprotocols=[Subprotocol("chat.v2"), Subprotocol(f"bearer.{raw}")]
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        assert await ws.recv() == "chat.v2"
    handshake = upstream_server.handshakes[-1]
    assert handshake.header("sec-websocket-protocol") == "chat.v2"


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (
            lambda: jwt.encode({"sub": "m", "aud": "chat"}, None, algorithm="none"),  # type: ignore[arg-type]
            "the token's algorithm is not accepted",
        ),
        (
            lambda: jwt.encode({"sub": "m", "aud": "chat", "exp": 4_000_000_000}, "k" * 40, algorithm="HS256"),
            "the token's algorithm is not accepted",
        ),
        (lambda: token(signing_key("RS256"), ttl=-300), "the token has expired"),
        (lambda: token(signing_key("RS256"), nbf=4_000_000_000), "the token is not valid yet"),
        (lambda: token(signing_key("RS256"), aud="billing"), "the token is for another audience"),
        (lambda: token(signing_key("RS256", "unknown-kid")), "no key matches the token"),
    ],
    ids=["alg-none", "hs-confusion", "expired", "not-yet-valid", "wrong-audience", "unknown-key"],
)
async def test_bad_tokens_are_refused_with_401(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, jwks: JwksServer, make: Any, detail: str
) -> None:
    base = _gateway(uvicorn_server, upstream_server, [_jwt_policy(jwks)])
    raw = make()
    status, headers, body = await expect_status(
        base + "/ws/lobby", additional_headers={"Authorization": f"Bearer {raw}"}
    )
    assert (status, headers["www-authenticate"], headers["content-type"]) == (
        401, 'Bearer error="invalid_token"', "application/problem+json")  # fmt: skip
    problem = json.loads(body)
    assert problem["detail"] == detail and raw not in body.decode()


async def test_missing_token_is_401(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, jwks: JwksServer
) -> None:
    base = _gateway(uvicorn_server, upstream_server, [_jwt_policy(jwks)])
    status, headers, _ = await expect_status(base + "/ws/lobby")
    assert (status, headers["www-authenticate"]) == (401, "Bearer")


async def test_jwks_rotation_and_outage(uvicorn_server: UvicornFactory, upstream_server: UpstreamServer) -> None:
    """A new key is fetched on its first unknown kid; during an outage cached keys still verify."""
    old, new = signing_key("RS256", "rot-1"), signing_key("RS256", "rot-2")
    with JwksServer(old) as server:
        base = _gateway(uvicorn_server, upstream_server, [_jwt_policy(server)])
        auth = {"Authorization": f"Bearer {token(old)}"}
        await _upstream_saw(base + "/ws/a", additional_headers=auth)
        server.keys = [old, new]  # the issuer rotates
        await _upstream_saw(base + "/ws/a", additional_headers={"Authorization": f"Bearer {token(new)}"})
        server.down = True  # outage: cached keys keep working
        requests = server.requests
        await _upstream_saw(base + "/ws/a", additional_headers=auth)
        await _upstream_saw(base + "/ws/a", additional_headers={"Authorization": f"Bearer {token(new)}"})
        assert server.requests == requests  # known kids: no fetch needed
        fresh = _gateway(uvicorn_server, upstream_server, [_jwt_policy(server)])
        status, headers, _ = await expect_status(fresh + "/ws/a", additional_headers=auth)
        assert (status, headers["retry-after"]) == (503, "5")  # nothing cached and the JWKS is down


async def test_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    policy = {"ip-filter": {"allow": ["203.0.113.0/24"]}}
    forged = {"X-Forwarded-For": "203.0.113.5"}
    base = _gateway(uvicorn_server, upstream_server, [policy])
    assert (await expect_status(base + "/ws/a", additional_headers=forged))[0] == 403
    trusting = _gateway(uvicorn_server, upstream_server, [policy], trusted_proxies=["127.0.0.1"])
    await _upstream_saw(trusting + "/ws/a", additional_headers=forged)
    assert (await expect_status(trusting + "/ws/a"))[0] == 403


async def test_origins_allowed_and_refused(uvicorn_server: UvicornFactory, upstream_server: UpstreamServer) -> None:
    base = _gateway(uvicorn_server, upstream_server, [{"check-origin": {"allowed": ["https://*.example.com"]}}])
    await _upstream_saw(base + "/ws/a", origin="https://app.example.com")
    for origin in ("https://evil.test", "https://example.com.evil.test"):
        assert (await expect_status(base + "/ws/a", origin=origin))[0] == 403
    assert (await expect_status(base + "/ws/a"))[0] == 403


async def test_subscription_keys_valid_invalid_suspended(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    subscriptions = [
        {"id": "alice", "product": "gold", "key_sha256": hash_key("alice-key")},
        {"id": "bob", "product": "gold", "key_sha256": hash_key("bob-key"), "state": "suspended"},
    ]
    base = _gateway(uvicorn_server, upstream_server,
                    [{"set-header": {"header": "X-Subscription", "value": "{subscription.id}"}}],
                    products=[{"name": "gold", "apis": ["chat"]}], subscriptions=subscriptions)  # fmt: skip
    seen = await _upstream_saw(base + "/ws/a", additional_headers={"Ocp-Apim-Subscription-Key": "alice-key"})
    assert seen["headers"]["x-subscription"] == ["alice"]
    assert "ocp-apim-subscription-key" not in seen["headers"]
    await _upstream_saw(base + "/ws/a?subscription-key=alice-key")
    assert (await expect_status(base + "/ws/a"))[0] == 401
    assert (await expect_status(base + "/ws/a", additional_headers={"X-Subscription-Key": "guess"}))[0] == 401
    assert (await expect_status(base + "/ws/a", additional_headers={"X-Subscription-Key": "bob-key"}))[0] == 403


async def test_rate_limit_and_quota_edges(uvicorn_server: UvicornFactory, upstream_server: UpstreamServer) -> None:
    """The limit-th handshake passes, the next gets 429 with Retry-After; the quota says when it renews."""
    base = _gateway(uvicorn_server, upstream_server, [
        {"rate-limit-by-key": {"key": "{path.room}", "limit": 2, "window": 60}},
        {"quota-by-key": {"key": "{path.room}", "limit": 3, "period": "day"}},
    ])  # fmt: skip
    for _ in range(2):
        await _upstream_saw(base + "/ws/r1")
    status, headers, _ = await expect_status(base + "/ws/r1")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    await _upstream_saw(base + "/ws/r2")  # another key
    await _upstream_saw(base + "/ws/r2")
    # r1's denied attempt was not counted by the quota (rate limit runs first); r2 has used 2 of 3.
    quota_base = _gateway(uvicorn_server, upstream_server, [{"quota-by-key": {"key": "{path.room}", "limit": 1}}])
    await _upstream_saw(quota_base + "/ws/q")
    status, headers, body = await expect_status(quota_base + "/ws/q")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 86400
    assert "renews at" in json.loads(body)["detail"]


async def test_a_key_of_two_values_never_joins_two_clients(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """``{a}:{b}``: tenant ``x:y`` with user ``z`` and tenant ``x`` with user ``y:z`` shared one counter."""
    key = "{header.x-tenant}:{header.x-user}"
    base = _gateway(uvicorn_server, upstream_server, [{"rate-limit-by-key": {"key": key, "limit": 1, "window": 60}}])
    await _upstream_saw(base + "/ws/r", additional_headers={"X-Tenant": "x:y", "X-User": "z"})
    await _upstream_saw(base + "/ws/r", additional_headers={"X-Tenant": "x", "X-User": "y:z"})
    status, _, _ = await expect_status(base + "/ws/r", additional_headers={"X-Tenant": "x", "X-User": "y:z"})
    assert status == 429  # the same client again: counted


async def test_concurrency_lease_released_on_close_and_on_failed_connect(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    base = _gateway(uvicorn_server, upstream_server, [{"limit-concurrency": {"key": "{path.room}", "max": 1}}])
    async with await connect(base + "/ws/c") as ws:
        await ws.recv()
        status, headers, _ = await expect_status(base + "/ws/c")
        assert (status, headers["retry-after"]) == (429, "5")
    for _ in range(3):  # each closed connection's lease is released (as its relay ends)
        await _admitted_soon(base + "/ws/c")
    dead = uvicorn_server(WebSocketGateway(not_found, config={"apis": [{
        "name": "dead", "path": "/ws/dead", "upstreams": ["ws://127.0.0.1:9/"], "connect_timeout": 2,
        "policies": [{"limit-concurrency": {"key": "all", "max": 1}}]}]}))  # fmt: skip
    for _ in range(2):  # 502 both times, never 429: the lease of a failed connect is released
        assert (await expect_status(dead.url("/ws/dead")))[0] == 502


@pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")
async def test_redis_stopped_mid_test_fail_open_and_fail_closed(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """With Redis gone, a fail-open limit admits and a fail-closed one refuses with 503; both recover."""
    with RedisServer() as redis:
        limit = {"key": "{client.ip}", "limit": 100, "window": 60}
        apis = [
            {"name": mode, "path": f"/ws/{mode}", "upstreams": [upstream_server.url("/headers/x")],
             "policies": [{"rate-limit-by-key": {**limit, "on_store_error": mode}}]}
            for mode in ("open", "closed")
        ]  # fmt: skip
        store = {"type": "redis", "url": redis.url, "prefix": unique_prefix(), "timeout": 0.5}
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": apis, "store": store}))
        for mode in ("open", "closed"):
            await _upstream_saw(server.url(f"/ws/{mode}"))
        redis.stop()
        await _upstream_saw(server.url("/ws/open"))
        status, headers, _ = await expect_status(server.url("/ws/closed"))
        assert (status, headers["retry-after"]) == (503, "1")
        redis.start()
        # 503 until the store tries Redis again (after its retry_interval, 1 s): poll, do not guess.
        async with asyncio.timeout(10):
            while True:
                try:
                    await _upstream_saw(server.url("/ws/closed"))
                    break
                except InvalidStatus as exc:
                    assert exc.response.status_code == 503
                    await asyncio.sleep(0.05)
