"""``{client.network}``: limits that count an IPv6 client by its /64, not by whichever address it picks.

A host is given a /64 at least and may use any of its 2^64 addresses, one per connection if it
likes: a limit keyed by ``{client.ip}`` gives it a fresh counter each time (the limit is bypassed).
``{client.network}`` is the /64 of an IPv6 client (its address for IPv4; the IPv4 address an IPv6 one
carries, translated, 6to4 or Teredo), and limit policies keyed by
``{client.ip}`` are warned about by field path. The end-to-end test runs real uvicorn behind a trusted
proxy's ``X-Forwarded-For`` (how IPv6 clients reach a test on 127.0.0.1).
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.forwarded import client_network
from asgi_ws_gateway.policies.build import load_policies
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.templates import Template
from support.clients import echo_status
from support.configs import api_entry
from support.policies import context
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::FF", "2001:db8:1:2::/64"),  # however the address is written
        ("2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client on a dual-stack socket
        ("::1", "::/64"),
        # IPv6 addresses that carry their client's IPv4 address count as that address:
        ("64:ff9b::203.0.113.7", "203.0.113.7"),  # RFC 6052 translation (SIIT-DC, NAT64)
        ("64:ff9b::cb00:7109", "203.0.113.9"),  # however it is written
        ("2002:cb00:7107:1:2::3", "203.0.113.7"),  # 6to4: the site's /48, whichever /64 in it
        ("2002:cb00:7107:ffff::1", "203.0.113.7"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo (RFC 4380's example)
        ("64:ff9b:1::203.0.113.7", "64:ff9b:1::cb00:7107"),  # local-use (RFC 8215): one client an address
        ("not-an-address", "not-an-address"),  # a unix socket's peer: as it is
    ],
)
def test_client_network(ip: str, network: str) -> None:
    assert client_network(ip) == network


def test_the_template_variable() -> None:
    ctx = context(client=("2001:db8:5:6::99", 4000))
    assert Template("{client.network}|{client.ip}").render(ctx) == "2001:db8:5:6::/64|2001:db8:5:6::99"


@pytest.mark.parametrize(
    ("key", "limits"),
    [("{client.ip}", [101, 101, 101, 101]), ("{client.network}", [101, 101, 429, 101])],
    ids=["by-address-bypassed", "by-network"],
)
async def test_an_ipv6_client_rotating_addresses_in_its_64(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer, key: str, limits: list[int]
) -> None:
    """Three addresses of one /64, then one of another: at most 2 handshakes a minute per client."""
    api = api_entry(upstream, policies=[{"rate-limit-by-key": {"key": key, "limit": 2, "window": 60}}])
    gateway = WebSocketGateway(not_found, config={"apis": [api], "trusted_proxies": ["127.0.0.1"]})
    server = uvicorn_server(gateway)
    statuses = []
    for client in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3", "2001:db8:1:3::1"):
        statuses.append(await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": client}))
    assert statuses == limits


async def test_clients_that_carry_an_ipv4_address_count_by_it(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """A 6to4 site rotating through the /64s of its /48 is one client; two IPv4 clients behind a
    translator are two (as their /64, they were one: the second was refused)."""
    api = api_entry(upstream, policies=[{"rate-limit-by-key": {"key": "{client.network}", "limit": 2, "window": 60}}])
    gateway = WebSocketGateway(not_found, config={"apis": [api], "trusted_proxies": ["127.0.0.1"]})
    server = uvicorn_server(gateway)
    clients = ("2002:cb00:7107:1::1", "2002:cb00:7107:2::1", "2002:cb00:7107:3::1",
               "64:ff9b::198.51.100.1", "64:ff9b::198.51.100.1", "64:ff9b::198.51.100.2")  # fmt: skip
    statuses = [await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": client}) for client in clients]
    assert statuses == [101, 101, 429, 101, 101, 101]


@pytest.mark.parametrize("policy", ["rate-limit-by-key", "quota-by-key", "limit-concurrency"])
@pytest.mark.parametrize(("key", "warned"), [("{client.ip}", True), ("{client.ip}/{path.room}", True),
                                             ("{client.network}", False), ("{jwt.sub}", False)])  # fmt: skip
def test_limits_keyed_by_the_client_address_are_warned_about(policy: str, key: str, warned: bool) -> None:
    settings: dict[str, Any] = {"key": key, "limit": 5, "window": 60} if policy == "rate-limit-by-key" else (
        {"key": key, "limit": 5} if policy == "quota-by-key" else {"key": key, "max": 5})  # fmt: skip
    # A global validate-jwt: {jwt.sub} keys only a limit after one (else refused, test_attack_policies_limits).
    jwt = {"validate-jwt": {"algorithms": ["HS256"], "secret": "s" * 32, "audience": "chat"}}
    warnings = load_policies({"policies": [jwt], "apis": [api_entry(policies=[{policy: settings}])]}).warnings
    expected = [f"apis[0].policies[0].{policy}.key: keyed by {{client.ip}}"] if warned else []
    assert [warning.split(": an IPv6")[0] for warning in warnings if "IPv6" in warning] == expected


def test_a_shared_message_rate_keyed_by_the_client_address_is_warned_about() -> None:
    rate = {"rate-limit-messages": {"key": "{client.ip}", "messages": 20, "window": 1}}
    warnings = load_policies({"apis": [api_entry(message_policies={"inbound": [rate]})]}).warnings
    assert [warning.split(": an IPv6")[0] for warning in warnings] == [
        "apis[0].message_policies.inbound[0].rate-limit-messages.key: keyed by {client.ip}"
    ]
