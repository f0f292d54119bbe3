"""Every header a proxy, CDN or platform sets for its upstream to believe is dropped from an untrusted peer.

``PROXY_SET`` listed 15 names. These reached the upstream unchanged from any client, each read by
some framework or platform as the client's address: ``Client-IP``, ``X-Forwarded`` (no dash),
``Forwarded-For``, ``X-Envoy-External-Address``, ``Fly-Client-IP``, ``X-Appengine-User-Ip``,
``X-Azure-ClientIP``, ``X-ProxyUser-Ip`` (and a ``check-header`` or ``{header.*}`` read the forged
value). Now a rule drops them (``upstream.proxy_headers.is_proxy_header``): any name holding
``forwarded``, ``client-ip``, ``clientip``, ``real-ip``, ``connecting-ip``, ``user-ip`` and the like,
any ``X-Original-*``, ``X-Envoy-*`` and ``X-Appengine-*``. Real uvicorn, an upstream that records
the headers it was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.upstream.headers import replaced_forwarding_header
from support.clients import connect
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

MISSED = ["Client-IP", "X-Forwarded", "Forwarded-For", "X-Envoy-External-Address", "Fly-Client-IP",
          "X-Appengine-User-Ip", "X-Azure-ClientIP", "X-ProxyUser-Ip", "X-Original-URI", "CF-Connecting-IPv6",
          "X-Envoy-Internal", "X-Client-Addr"]  # fmt: skip
"""Names PROXY_SET did not hold, each believed by some platform or framework (the first 8 found in a hunt)."""


async def test_no_proxy_header_of_an_untrusted_client_reaches_the_upstream(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """Before: 12 of 12 reached the upstream."""
    url = _gateway(uvicorn_server, upstream, [])
    async with await connect(url, additional_headers=[(name, "10.0.0.1") for name in MISSED]) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    seen = upstream.handshakes[-1]
    assert [name for name in MISSED if seen.header(name) is not None] == []


@pytest.mark.parametrize("name", ["Client-IP", "X-Forwarded", "Fly-Client-IP", "X-Azure-ClientIP"])
async def test_a_check_of_a_proxy_header_does_not_pass_on_the_clients_value(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, name: str
) -> None:
    """Policies read the headers as the upstream gets them: a forged value passes no check."""
    url = _gateway(uvicorn_server, upstream, [{"check-header": {"header": name, "values": ["10.0.0.1"]}}])
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers={name: "10.0.0.1"})
    assert refused.value.response.status_code == 401


@given(
    st.sampled_from(["x-", "", "true-", "fly-", "x-cluster-", "x-azure-"]),
    st.sampled_from(["forwarded", "client-ip", "clientip", "real-ip", "connecting-ip", "user-ip", "forwarded-for"]),
    st.sampled_from(["", "-v6", "s", "-for"]),
)
def test_every_client_address_name_is_dropped_from_an_untrusted_peer(prefix: str, part: str, suffix: str) -> None:
    name = prefix + part + suffix
    assert replaced_forwarding_header(name, trust_forwarded=False)
    assert replaced_forwarding_header(name.replace("-", "_"), trust_forwarded=False)


def _gateway(uvicorn_server: UvicornFactory, upstream: UpstreamServer, policies: list[Any]) -> str:
    config = {"apis": [api_entry(upstream, policies=policies)]}
    return uvicorn_server(WebSocketGateway(not_found, config=config), proxy_headers=False).url("/ws/echo")
