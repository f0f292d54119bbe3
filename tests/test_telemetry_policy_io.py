"""Policies that do I/O trace it as children of the handshake span: the JWKS fetch and Redis calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from support.clients import connect
from support.gateway import ProbedGateway
from support.jwts import JwksServer, signing_key, token
from support.otlp import OtlpReceiver, ReceivedSpan
from support.redis import redis_available, unique_prefix
from support.servers import UvicornServer
from support.telemetry import export_to
from support.upstream import UpstreamServer

CLIENT = 3


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.mark.skipif(not redis_available(), reason="needs Redis at 127.0.0.1:6379 (make test starts one)")
async def test_jwks_fetch_and_redis_calls_are_child_spans_of_the_handshake(
    otlp: OtlpReceiver, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_to(monkeypatch, otlp, "grpc")
    key = signing_key("ES256")
    with JwksServer(key) as jwks:
        policies = [
            {"validate-jwt": {"algorithms": ["ES256"], "issuer": "https://issuer.test", "audience": "chat",
                              "jwks_url": jwks.url}},
            {"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 100, "window": 60}},
        ]  # fmt: skip
        config = {
            "apis": [{"name": "chat", "path": "/ws/chat", "upstreams": [upstream.url("/echo")], "policies": policies}],
            "store": {"type": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": unique_prefix()},
        }
        with UvicornServer(ProbedGateway(config), proxy_headers=False) as server:
            headers = {"Authorization": f"Bearer {token(key, sub='alice')}"}
            async with await connect(server.url("/ws/chat"), additional_headers=headers) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            handshake = await _span(otlp, "GET /ws/chat")
            fetch = await _span(otlp, "jwks fetch")
            redis = await _span(otlp, "redis hit")
    for child in (fetch, redis):
        assert (child.trace_id, child.parent_span_id, child.kind) == (handshake.trace_id, handshake.span_id, CLIENT)
    assert fetch.attributes["url.full"] == jwks.url
    assert redis.attributes["db.system"] == "redis"
    assert handshake.attributes["enduser.id"] == "alice"


async def _span(receiver: OtlpReceiver, name: str) -> ReceivedSpan:
    return await asyncio.to_thread(receiver.wait_for_span, lambda s: s.name == name)
