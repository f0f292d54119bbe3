"""A query value that is not UTF-8 once percent-decoded is refused where a policy reads it, and goes
upstream as sent where none does.

The gateway decoded the query as Python does, each byte that is not UTF-8 read as U+FFFD: ``%ff``,
``%fe`` and ``%EF%BF%BD`` were one value, while PHP, Go and Rack read different bytes. So
``{query.tenant}`` keyed three different upstream tenants on one counter (an attack pass against a
real ``run``: ``%ff`` admitted, then ``%fe`` refused 429 on its count), ``?tenant=%ff&tenant=%fe``
was one value rather than copies that differ, and a parameter no policy read was rewritten to
``%EF%BF%BD`` whenever a policy edited the upstream URL. Real uvicorn, an upstream that records the
request target it was sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from support.clients import connect
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

LIMIT = {"rate-limit-by-key": {"key": "{query.tenant}", "limit": 1, "window": 60}}


@pytest.mark.parametrize("query", ["tenant=%ff", "tenant=acme%C3", "TENANT=%ED%A0%80", "tenant=%ff&tenant=%fe"])
async def test_a_value_a_policy_reads_that_is_not_utf8_is_a_400(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, query: str
) -> None:
    """Before, each was admitted on a key of U+FFFD (the last, as one value of two copies): 4 of 4."""
    server = _gateway(uvicorn_server, upstream, [LIMIT])
    seen = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.url(f"/ws/echo?{query}"))
    assert refused.value.response.status_code == 400
    assert len(upstream.handshakes) == seen


async def test_bytes_that_are_not_utf8_no_policy_reads_reach_the_upstream_as_sent(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """The set-query-parameter edits the URL; the client's other parameters keep their bytes."""
    policies = [LIMIT, {"set-query-parameter": {"parameter": "tenant", "value": "{query.tenant}"}}]
    server = _gateway(uvicorn_server, upstream, policies)
    async with await connect(server.url("/ws/echo?tenant=acme&x=%ff&y=%C3%A9&z=%EF%BF%BD")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert urlsplit(upstream.handshakes[-1].path).query == "x=%FF&y=%C3%A9&z=%EF%BF%BD&tenant=acme"


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, policies: list[Any]) -> Any:
    return uvicorn_server(WebSocketGateway(not_found, config={"apis": [api_entry(upstream, policies=policies)]}))
