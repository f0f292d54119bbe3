"""Clients making the gateway fetch the identity provider's JWKS: never more than once a second.

With ``jwks_min_refresh_interval: 0`` each token with a made-up ``kid`` (or a known ``kid`` under
another algorithm) was one fetch: a client made the gateway a 1:1 reflector of its requests against
the identity provider. And while the provider answered errors, a failed background refresh was tried
again by the very next handshake, whatever the interval. Now token-caused refreshes are at least
``KID_REFRESH_FLOOR`` apart and a failed refresh waits ``RETRY_INTERVAL``; a token naming a key the
cache lacks while a fetch is under way waits for that fetch. Keys a token points to (``jku``,
``x5u``) or an issuer's discovery document (its ``iss``) are never fetched. Unit tests on a fake
clock count fetches exactly; real uvicorn against real HTTP JWKS servers counts their requests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import jwt

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.policies.jwks import KID_REFRESH_FLOOR, RETRY_INTERVAL, JwksCache
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry
from support.jwts import JwksServer, SigningKey, signing_key, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


class _Jwks:
    """A fetch that counts its calls; ``fail`` makes it raise, ``gate`` holds it until set."""

    def __init__(self, *kids: str) -> None:
        self.kids = list(kids)
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - the Fetch signature
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("503 from the identity provider")
        return json.dumps({"keys": [signing_key("ES256", kid).jwk() for kid in self.kids]}).encode()


async def _settled(cache: JwksCache) -> None:
    """Let a background refresh the cache started finish."""
    for _ in range(3):
        await asyncio.sleep(0)
    if cache._task is not None:
        await cache._task


async def test_made_up_kids_at_interval_zero_cost_one_fetch_a_second() -> None:
    now = [0.0]
    fetch = _Jwks("k1")
    cache = JwksCache("https://idp/jwks", fetch, min_refresh_interval=0, clock=lambda: now[0])
    assert len(await cache.keys("k1", "ES256")) == 1
    for _ in range(200):
        assert await cache.keys(secrets.token_hex(8), "ES256") == []
    assert fetch.calls == 2  # the first fetch, and one refresh for a kid it lacked: a rotation is taken at once
    now[0] += KID_REFRESH_FLOOR / 2
    for _ in range(200):
        await cache.keys(secrets.token_hex(8), "ES256")
    assert fetch.calls == 2
    now[0] += KID_REFRESH_FLOOR
    for _ in range(200):
        await cache.keys(secrets.token_hex(8), "ES256")
    assert fetch.calls == 3


async def test_a_known_kid_under_another_algorithm_is_held_to_the_same_floor() -> None:
    """``kid: k1`` with ``alg: ES384`` names no key the cache holds either."""
    now = [0.0]
    fetch = _Jwks("k1")
    cache = JwksCache("https://idp/jwks", fetch, min_refresh_interval=0, clock=lambda: now[0])
    await cache.keys("k1", "ES256")
    for _ in range(100):
        assert await cache.keys("k1", "ES384") == []
    assert fetch.calls == 2


async def test_a_failed_refresh_is_tried_again_a_second_later_not_by_every_handshake() -> None:
    now = [0.0]
    fetch = _Jwks("k1")
    cache = JwksCache("https://idp/jwks", fetch, refresh_interval=600, clock=lambda: now[0])
    await cache.keys("k1", "ES256")
    fetch.fail = True
    now[0] = 600.0  # stale: each handshake's lookup may start a background refresh
    for _ in range(100):
        assert len(await cache.keys("k1", "ES256")) == 1  # the cached keys serve on
        cache.current_generation()
        await _settled(cache)
    assert fetch.calls == 2
    now[0] += RETRY_INTERVAL
    for _ in range(100):
        await cache.keys("k1", "ES256")
        await _settled(cache)
    assert fetch.calls == 3


async def test_a_new_kid_during_a_fetch_waits_for_it_instead_of_being_refused() -> None:
    """The floor refuses a second refresh, never a token that a fetch under way may serve."""
    now = [0.0]
    fetch = _Jwks("k1")
    cache = JwksCache("https://idp/jwks", fetch, min_refresh_interval=0, clock=lambda: now[0])
    await cache.keys("k1", "ES256")
    fetch.kids, fetch.gate = ["k1", "k2"], asyncio.Event()
    first = asyncio.create_task(cache.keys("k2", "ES256"))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.keys("k2", "ES256"))
    await asyncio.sleep(0)
    fetch.gate.set()
    assert [len(found) for found in await asyncio.gather(first, second)] == [1, 1]
    assert fetch.calls == 2


# -- through real uvicorn, against real JWKS servers ------------------------------------------------


def _policy(jwks_url: str, **settings: Any) -> dict[str, Any]:
    return {"validate-jwt": {"algorithms": ["ES256"], "jwks_url": jwks_url, "issuer": "https://issuer.test",
                             "audience": "chat", **settings}}  # fmt: skip


def _made_up(key: SigningKey, attacker: str) -> str:
    """Signed with the issuer's own key (the worst case), a fresh ``kid``, and pointers to the
    attacker's server: ``jku``, ``x5u`` and an ``iss`` whose discovery document it would serve."""
    claims = {"iss": attacker, "aud": "chat", "sub": "x", "exp": int(time.time()) + 300}
    headers = {"kid": secrets.token_hex(8), "jku": attacker, "x5u": attacker}
    return jwt.encode(claims, key.private, algorithm="ES256", headers=headers)


async def test_a_flood_of_made_up_kids_at_interval_zero_is_one_fetch_a_second_per_key_set(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Two APIs, each its own JWKS URL with ``jwks_min_refresh_interval: 0``; 30 handshakes one after
    another with made-up kids to each. Before: 31 requests to each identity provider."""
    key = signing_key("ES256")
    with JwksServer(key) as first, JwksServer(key) as second, JwksServer(key) as attacker:
        apis = [
            api_entry(
                upstream, name=name, path=f"/ws/{name}", policies=[_policy(jwks.url, jwks_min_refresh_interval=0)]
            )
            for name, jwks in (("a", first), ("b", second))
        ]
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": apis}))
        for path in ("/ws/a", "/ws/b"):
            async with await connect(server.url(path), additional_headers={"Authorization": f"Bearer {token(key)}"}):
                pass
        started = time.monotonic()
        for _ in range(30):
            for path in ("/ws/a", "/ws/b"):
                raw = _made_up(key, attacker.url)
                status, _, _ = await expect_status(
                    server.url(path), additional_headers={"Authorization": f"Bearer {raw}"}
                )
                assert status == 401
        seconds = time.monotonic() - started
        bound = 2 + int(seconds / KID_REFRESH_FLOOR)  # the first fetch, then one a second at most
        assert (first.requests <= bound, second.requests <= bound) == (True, True), (first.requests, second.requests)
        assert attacker.requests == 0  # jku, x5u and the token's issuer are never fetched


async def test_an_identity_provider_that_answers_errors_is_asked_once_a_second(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Stale keys, the provider down (503 at once): each handshake started a fetch as soon as the
    last one failed. Before: a request per handshake (30); the cached keys serve meanwhile."""
    key = signing_key("ES256")
    with JwksServer(key) as jwks:
        policy = _policy(jwks.url, jwks_refresh_interval=RETRY_INTERVAL)
        server = uvicorn_server(WebSocketGateway(not_found, config={"apis": [api_entry(upstream, policies=[policy])]}))
        raw = token(key)
        async with await connect(server.url("/ws/echo"), additional_headers={"Authorization": f"Bearer {raw}"}):
            pass
        jwks.down = True
        await asyncio.sleep(RETRY_INTERVAL * 1.2)  # the keys are stale now
        started = time.monotonic()
        for _ in range(30):
            async with await connect(server.url("/ws/echo"), additional_headers={"Authorization": f"Bearer {raw}"}):
                pass  # admitted: the cached keys serve through the outage
        seconds = time.monotonic() - started
        assert jwks.requests <= 2 + int(seconds / RETRY_INTERVAL), jwks.requests
