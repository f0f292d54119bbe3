"""End to end: a limit keyed by a header a caseless list check admitted counts every spelling as one.

``check-header`` of ``X-Tenant`` against ``[acme]`` with ``ignore_case``, then ``rate-limit-by-key``
keyed by ``{header.x-tenant}``, 1 per hour, on the shared Redis under a key prefix of its own, served
by real uvicorn to a real upstream: the 16 case spellings of ``acme`` were 16 counters and 16 x 101.
"""

from __future__ import annotations

import itertools
from collections import Counter

from redis.asyncio import Redis
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.redis import SHARED_REDIS
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

POLICIES = [
    {"check-header": {"header": "X-Tenant", "values": ["acme"], "ignore_case": True}},
    {"rate-limit-by-key": {"key": "{header.x-tenant}", "limit": 1, "window": 3600, "on_store_error": "closed"}},
]


async def test_sixteen_spellings_of_one_tenant_get_one_101_then_429s(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, redis_prefix: str
) -> None:
    """1 x 101 and 15 x 429 (16 x 101 before); one counter in Redis; the upstream is sent the client's spelling."""
    store = {"type": "redis", "url": SHARED_REDIS, "prefix": redis_prefix}
    config = {"apis": [api_entry(upstream, policies=POLICIES)], "store": store}
    url = uvicorn_server(WebSocketGateway(not_found, config=config)).url("/ws/echo")
    spellings = ["".join(letters) for letters in itertools.product(*((c.upper(), c) for c in "acme"))]
    assert spellings[0] == "ACME" and len(set(spellings)) == 16
    statuses: Counter[int] = Counter()
    for spelling in spellings:
        try:
            async with await connect(url, additional_headers={"X-Tenant": spelling}) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            statuses[101] += 1
        except InvalidStatus as refused:
            statuses[refused.response.status_code] += 1
    assert statuses == {101: 1, 429: 15}
    assert [record.header("x-tenant") for record in upstream.handshakes] == ["ACME"]
    redis = Redis.from_url(SHARED_REDIS)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}:rate:*")]
    finally:
        await redis.aclose()
    assert len(keys) == 1
