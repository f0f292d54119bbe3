"""An address list written in IPv4-mapped form (``::ffff:203.0.113.7``) means the IPv4 address it maps.

A dual-stack socket, and uvicorn's log with it, shows an IPv4 client as ``::ffff:203.0.113.7``; the
gateway unmaps a client's address before matching it, but kept a configured network in mapped form
as IPv6, where no client ever was. So ``ip-filter: {deny: ["::ffff:10.9.9.9"]}`` admitted 10.9.9.9,
an ``allow`` of the mapped form refused the client it names, and a proxy listed that way in
``trusted_proxies`` was not believed. Real uvicorn; the client is named by a trusted proxy's
``X-Forwarded-For`` (the test's own connection, from 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.forwarded import parse_network
from asgi_ws_gateway.standalone import not_found
from support.clients import assert_echoes_or_refused
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


def test_a_mapped_network_is_the_ipv4_network_it_maps() -> None:
    assert parse_network("::ffff:203.0.113.7") == ipaddress.IPv4Network("203.0.113.7/32")
    assert parse_network("::ffff:10.0.0.0/104") == ipaddress.IPv4Network("10.0.0.0/8")
    assert parse_network("::ffff:0:0/96") == ipaddress.IPv4Network("0.0.0.0/0")
    assert parse_network("2001:db8::/32") == ipaddress.IPv6Network("2001:db8::/32")


@pytest.mark.parametrize(
    ("top", "ip_filter", "forwarded_for", "status"),
    [
        ({"trusted_proxies": ["127.0.0.1"]}, {"deny": ["::ffff:10.9.9.9"]}, "10.9.9.9", 403),  # was admitted
        ({"trusted_proxies": ["127.0.0.1"]}, {"deny": ["::ffff:10.9.0.0/112"]}, "10.9.9.9", 403),  # was admitted
        ({}, {"allow": ["::ffff:127.0.0.1"]}, None, 101),  # was refused
        ({"trusted_proxies": ["::ffff:127.0.0.1"]}, {"allow": ["10.0.0.0/8"]}, "10.1.2.3", 101),  # was refused
    ],
    ids=["deny-address", "deny-network", "allow", "trusted-proxy"],
)
async def test_a_mapped_address_in_a_list_matches_the_client_it_names(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    top: dict[str, Any],
    ip_filter: dict[str, Any],
    forwarded_for: str | None,
    status: int,
) -> None:
    config = {"apis": [api_entry(upstream, policies=[{"ip-filter": ip_filter}])], **top}
    server = uvicorn_server(WebSocketGateway(not_found, config=config), proxy_headers=False)
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    await assert_echoes_or_refused(server.url("/ws/echo"), status, additional_headers=headers)
