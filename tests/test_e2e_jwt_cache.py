"""validate-jwt's token cache end to end: real uvicorn, a real upstream, a JWKS over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.jwts import JwksServer, signing_key, spellings, token
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


def _serve(uvicorn_server: UvicornFactory, upstream: UpstreamServer, **settings: Any) -> tuple[str, Any]:
    """One API at /ws/{room} behind validate-jwt; returns its base URL and the policy (to count its checks)."""
    policy = {"validate-jwt": {"algorithms": ["ES256"], "issuer": "https://issuer.test", "audience": "chat",
                               **settings}}  # fmt: skip
    api = {"name": "chat", "path": "/ws/{room}", "upstreams": [upstream.url("/headers/{room}")], "policies": [policy]}
    gateway = WebSocketGateway(not_found, config={"apis": [api]})
    server = uvicorn_server(gateway, proxy_headers=False)
    return server.url("/ws/lobby"), gateway._policies.pipelines["chat"].api_policies[0]


def _static(**settings: Any) -> dict[str, Any]:
    return {"public_keys": [signing_key("ES256").public_pem], **settings}


def _auth(raw: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {raw}"}}


async def _admitted(url: str, raw: str) -> dict[str, Any]:
    async with await connect(url, **_auth(raw)) as ws:
        seen: dict[str, Any] = json.loads(await ws.recv())
        return seen


async def _refused_soon(url: str, raw: str, within: float) -> tuple[int, dict[str, Any]]:
    """Connect until refused (polling, at most ``within`` seconds); the refusal's status and problem."""
    async with asyncio.timeout(within):
        while True:
            try:
                status, _, body = await expect_status(url, **_auth(raw))
            except AssertionError:  # still admitted
                await asyncio.sleep(0.05)
                continue
            return status, json.loads(body)


@pytest.mark.parametrize("cache", [{}, {"max_entries": 0}], ids=["cache-on", "cache-off"])
async def test_a_reconnecting_client_is_verified_once_and_refused_once_expired(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer, cache: dict[str, Any]
) -> None:
    """With the cache: one signature check for three handshakes; on or off, refused at exp (no leeway)."""
    url, policy = _serve(uvicorn_server, upstream_server, **_static(clock_skew=0, cache=cache))
    raw = token(signing_key("ES256"), ttl=2)  # exp 1 to 2 s away: ample for three handshakes
    for _ in range(3):
        await _admitted(url, raw)
    assert policy.verifications == (1 if cache == {} else 3)
    status, problem = await _refused_soon(url, raw, within=6)
    assert (status, problem["detail"]) == (401, "the token has expired")


async def test_nbf_is_honoured_and_an_immature_token_is_not_cached(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """Refused before nbf (each refusal a full check), admitted from nbf on, then from the cache."""
    url, policy = _serve(uvicorn_server, upstream_server, **_static(clock_skew=0))
    raw = token(signing_key("ES256"), nbf=int(time.time()) + 2)  # 1 to 2 s away: ample for two refusals
    status, _, _ = await expect_status(url, **_auth(raw))
    assert status == 401
    status, _, _ = await expect_status(url, **_auth(raw))
    assert (status, policy.verifications, len(policy.cache)) == (401, 2, 0)
    async with asyncio.timeout(6):
        while True:
            try:
                await _admitted(url, raw)
                break
            except InvalidStatus as exc:
                assert exc.response.status_code == 401
                await asyncio.sleep(0.05)
    checked = policy.verifications
    await _admitted(url, raw)
    assert policy.verifications == checked


async def test_claim_check_refuses_a_cached_token_every_time(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    url, policy = _serve(uvicorn_server, upstream_server,
                         **_static(claims=[{"claim": "scope", "contains": "chat:write"}]))  # fmt: skip
    raw = token(signing_key("ES256"), scope="chat:read")
    for _ in range(2):
        status, headers, _ = await expect_status(url, **_auth(raw))
        assert (status, headers["www-authenticate"]) == (403, 'Bearer error="insufficient_scope"')
    assert policy.verifications == 1
    seen = await _admitted(url, token(signing_key("ES256"), scope="chat:read chat:write"))
    assert seen["path"] == "/headers/lobby"


async def test_invalid_tokens_are_never_cached(uvicorn_server: UvicornFactory, upstream_server: UpstreamServer) -> None:
    url, policy = _serve(uvicorn_server, upstream_server, **_static())
    forged = token(signing_key("ES256", "forger"))
    for _ in range(3):
        status, _, _ = await expect_status(url, **_auth(forged))
        assert status == 401
    assert (policy.verifications, len(policy.cache)) == (3, 0)


async def test_a_kid_dropped_from_the_jwks_refuses_its_cached_tokens(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """The issuer removes a key: once the JWKS refresh sees it, its tokens are refused, cached or not."""
    dropped, kept = signing_key("ES256", "cache-drop"), signing_key("ES256", "cache-keep")
    with JwksServer(dropped, kept) as jwks:
        url, policy = _serve(uvicorn_server, upstream_server, jwks_url=jwks.url, jwks_refresh_interval=0.5,
                             jwks_min_refresh_interval=0)  # fmt: skip
        old, new = token(dropped), token(kept)
        for raw in (old, new, old, new):
            await _admitted(url, raw)
        checked = policy.verifications
        await _admitted(url, old)
        assert policy.verifications == checked  # served from the cache
        jwks.keys = [kept]
        status, problem = await _refused_soon(url, old, within=5)
        assert (status, problem["detail"]) == (401, "no key matches the token")
        await _admitted(url, new)


async def test_one_token_spelled_four_ways_in_three_places_is_one_check_and_one_entry(
    uvicorn_server: UvicornFactory, upstream_server: UpstreamServer
) -> None:
    """The spellings pyjwt verifies alike (the signature padded, ECDSA's other s), in the header, the
    query and a cookie: twelve handshakes admitted on one signature check and one cache entry. Keyed by
    the exact bytes they were four checks and four entries: one client's token could push other
    clients' entries out of the cache by spelling itself anew."""
    places = [{"header": "Authorization"}, {"query": "access_token"}, {"cookie": "access_token"}]
    url, policy = _serve(uvicorn_server, upstream_server, **_static(token=places))
    variants = spellings(token(signing_key("ES256")))
    for raw in variants:
        await _admitted(url, raw)
        async with await connect(f"{url}?access_token={quote(raw, safe='')}") as ws:
            await ws.recv()
        async with await connect(url, additional_headers={"Cookie": f"access_token={raw}"}) as ws:
            await ws.recv()
    assert (len(set(variants)), policy.verifications, len(policy.cache)) == (4, 1, 1)
