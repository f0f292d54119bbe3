"""A client's Connection header cannot make the gateway forward less than its policies checked.

Before, every header the client's ``Connection`` named was dropped from the upstream request (RFC
9110's rule for proxies). ``Authorization: Bearer VALID`` with ``Connection: Upgrade, Authorization``
passed ``validate-jwt`` and reached the upstream without the token, beside a ``jwt`` cookie no
policy reads: an upstream that takes the header's token, else the cookie's, acted on the forged
cookie. ``Connection: X-Tenant`` took away the header ``check-header`` had checked, and
``Connection: X-Real-IP`` the address a trusted proxy set. Now only the fixed hop-by-hop names are
dropped, whatever Connection lists. ``Sec-WebSocket-Origin`` (the draft protocols' Origin) went
upstream beside the ``Origin`` that ``check-origin`` checked; it is one of those names now. The
end-to-end tests run real uvicorn (each WebSocket implementation) and an upstream that records the
headers it was sent.
"""

from __future__ import annotations

from typing import Any

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect, expect_status
from support.configs import api_entry
from support.jwts import signing_key, token
from support.servers import UvicornFactory, WSImpl
from support.upstream import HandshakeRecord, UpstreamServer

KEY = signing_key("ES256")
JWT = {"algorithms": ["ES256"], "public_keys": [KEY.public_pem], "issuer": "https://issuer.test", "audience": "chat"}
VALID = token(KEY, sub="alice", ttl=24 * 3600)  # made at collection: must outlive a long suite


async def test_a_checked_authorization_header_reaches_the_upstream_whatever_connection_names(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl
) -> None:
    server = _gateway(uvicorn_server, upstream, ws_impl, [{"validate-jwt": JWT}])
    seen = await _upstream_saw(server.url("/ws/echo"), upstream, [
        ("Authorization", f"Bearer {VALID}"), ("Cookie", "jwt=FORGED"), ("Connection", "Upgrade, Authorization"),
    ])  # fmt: skip
    assert seen.header("authorization") == f"Bearer {VALID}"


async def test_a_checked_header_and_a_policys_header_reach_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl
) -> None:
    policies = [{"check-header": {"header": "X-Tenant", "values": ["acme"]}},
                {"set-header": {"header": "X-Backend-Key", "value": "backend-secret"}}]  # fmt: skip
    server = _gateway(uvicorn_server, upstream, ws_impl, policies, trusted_proxies=["127.0.0.1"])
    seen = await _upstream_saw(server.url("/ws/echo"), upstream, [
        ("X-Tenant", "acme"), ("X-Real-IP", "203.0.113.5"), ("Forwarded", "for=203.0.113.5"),
        ("Connection", "keep-alive, Upgrade, X-Tenant, X-Real-IP, Forwarded, X-Backend-Key, Via"),
    ])  # fmt: skip
    assert seen.header("x-tenant") == "acme"
    assert seen.header("x-real-ip") is None  # a proxy's header: dropped from a trusted proxy too
    assert seen.header("forwarded") is None
    assert seen.header("x-backend-key") == "backend-secret"
    assert seen.header("keep-alive") is None and seen.header("connection") == "Upgrade"


async def test_sec_websocket_origin_never_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl
) -> None:
    server = _gateway(uvicorn_server, upstream, ws_impl, [{"check-origin": {"allowed": ["https://app.example.com"]}}])
    seen = await _upstream_saw(server.url("/ws/echo"), upstream, [
        ("Origin", "https://app.example.com"), ("Sec-WebSocket-Origin", "https://evil.test"),
    ])  # fmt: skip
    assert seen.header("origin") == "https://app.example.com"
    assert seen.header("sec-websocket-origin") is None


async def test_two_origins_never_reach_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl
) -> None:
    """check-origin reads both copies (joined, they match no pattern: 403); websockets' server refuses first (400)."""
    server = _gateway(uvicorn_server, upstream, ws_impl, [{"check-origin": {"allowed": ["https://app.example.com"]}}])
    headers = [("Origin", "https://app.example.com"), ("Origin", "https://evil.test")]
    assert (await expect_status(server.url("/ws/echo"), additional_headers=headers))[0] in (400, 403)
    assert upstream.handshakes == []


def _gateway(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, ws_impl: WSImpl, policies: list[Any], **top: Any
) -> Any:
    config = {"apis": [api_entry(upstream, policies=policies)], **top}
    return uvicorn_server(WebSocketGateway(not_found, config=config), ws=ws_impl)


async def _upstream_saw(url: str, upstream: UpstreamServer, headers: list[tuple[str, str]]) -> HandshakeRecord:
    async with await connect(url, additional_headers=headers) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    return upstream.handshakes[-1]
