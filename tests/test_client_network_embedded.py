"""``{client.network}`` and the management lockout over every IPv6 form of a client: no two clients
merged, no one client split.

An IPv6 address that carries an IPv4 client is that client (RFC 6052's ``64:ff9b::/96``, 6to4,
Teredo, the IPv4-translated ``::ffff:0:a.b.c.d`` and IPv4-compatible ``::a.b.c.d`` forms); one in
RFC 8215's local-use prefix ``64:ff9b:1::/48`` is one IPv4 client wherever the site's layout puts it
(it was read as a /64: every client of a /64 or /96 layout was one); any other is its /64, with the
zone of a link-local peer (``fe80::/64`` is every host's on every link). Properties over hypothesis'
addresses, then a real uvicorn behind a trusted proxy.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.forwarded import client_network
from asgi_ws_gateway.management.lockout import Lockout
from asgi_ws_gateway.standalone import not_found
from support.clients import echo_status
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
low_bits = st.integers(1, 0xFFFF)  # another client of the same IPv4 /16
LOCAL_USE = int(ipaddress.IPv6Address("64:ff9b:1::"))


def _v6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def rfc6052(prefix: int, length: int, client: ipaddress.IPv4Address) -> str:
    """``client`` embedded after a translation prefix of ``length`` bits (RFC 6052 §2.2): its bits
    skip bits 64-71 (the "u" octet, zero), and the suffix after them is zero."""
    bits, value = int(client), prefix
    for i in range(32):
        at = length + i if length + i < 64 else length + i + 8  # past the u octet
        if length == 96:
            at = 96 + i
        if bits >> (31 - i) & 1:
            value |= 1 << (127 - at)
    return _v6(value)


def teredo(server: int, flags: int, port: int, client: ipaddress.IPv4Address) -> str:
    """RFC 4380: 2001:0::/32, the server, flags, then the client's port and address inverted."""
    return _v6(
        (0x20010000 << 96) | (server << 64) | (flags << 48) | ((port ^ 0xFFFF) << 32) | (int(client) ^ 0xFFFFFFFF)
    )


@given(client=ipv4, subnet=st.integers(0, 0xFFFF), host=st.integers(0, 2**64 - 1),
       teredo_server=st.integers(0, 2**32 - 1), flags=st.integers(0, 0xFFFF), port=st.integers(0, 0xFFFF))  # fmt: skip
def test_every_form_that_carries_an_ipv4_client_is_that_client(
    client: ipaddress.IPv4Address, subnet: int, host: int, teredo_server: int, flags: int, port: int
) -> None:
    """Whichever /64 of its 6to4 /48, Teredo server or port, or translator form: the same key, the
    IPv4 address's own (so two IPv4 clients are two)."""
    forms = [
        str(client),
        f"::ffff:{client}",  # a dual-stack socket
        f"64:ff9b::{client}",  # RFC 6052 well-known prefix
        _v6((0x2002 << 112) | (int(client) << 80) | (subnet << 64) | host),  # 6to4
        teredo(teredo_server, flags, port, client),
        f"::ffff:0:{client}",  # RFC 2765 IPv4-translated
    ]
    if int(client) >> 24:  # ::0.x.x.x is :: and ::1's block, not IPv4-compatible
        forms.append(f"::{client}")
    assert {form: client_network(form) for form in forms} == dict.fromkeys(forms, str(client))


@given(client=ipv4, other=low_bits, layout=st.sampled_from([48, 56, 64, 96]), site=st.integers(0, 2**48 - 1))
def test_local_use_translation_never_merges_two_ipv4_clients(
    client: ipaddress.IPv4Address, other: int, layout: int, site: int
) -> None:
    """RFC 8215's ``64:ff9b:1::/48`` under any RFC 6052 layout a site may choose: two IPv4 clients of
    one /16 are two keys, and one client is one (as the /64 they were one key for a /64 or /96
    layout, and for a /16 of IPv4 under a /48 or /56 one)."""
    prefix = LOCAL_USE | ((site << 32) & ((1 << 80) - 1) & ~((1 << (128 - layout)) - 1))  # bits 48 to layout-1
    second = ipaddress.IPv4Address(int(client) ^ other)
    one, two = rfc6052(prefix, layout, client), rfc6052(prefix, layout, second)
    assert client_network(one) != client_network(two)
    assert client_network(one) == client_network(one.upper()) == client_network(f"[{one}]:443")
    assert client_network(one) not in (str(client), str(second))  # nor is it some IPv4 client's key


native = st.integers(0x2000 << 48, (0x4000 << 48) - 1).filter(
    lambda top: top >> 48 != 0x2002 and top >> 32 != 0x20010000  # 6to4 and Teredo carry IPv4 clients
)


@given(top=native, one=st.integers(0, 2**64 - 1), two=st.integers(0, 2**64 - 1), other_top=native)
def test_a_native_ipv6_client_is_its_64(top: int, one: int, two: int, other_top: int) -> None:
    """Any two addresses of one /64 are one client, written however; two /64s are two."""
    first, second = _v6(top << 64 | one), _v6(top << 64 | two)
    key = str(ipaddress.IPv6Network((top << 64, 64)))
    assert client_network(first) == client_network(second) == key
    assert client_network(ipaddress.IPv6Address(first).exploded.upper()) == key
    if other_top != top:
        assert client_network(_v6(other_top << 64 | one)) != key


zone_names = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)


@given(one=st.integers(1, 2**64 - 1), two=st.integers(1, 2**64 - 1),
       zones=st.lists(zone_names, min_size=2, max_size=2, unique=True))  # fmt: skip
def test_a_link_local_peer_is_its_link(one: int, two: int, zones: list[str]) -> None:
    """``fe80::/64`` is every host's on every link: the zone (the socket's interface) tells links
    apart, and the hosts of one link are one client, as a LAN's /64 is."""
    a, b = zones
    here, there = _v6((0xFE80 << 112) | one), _v6((0xFE80 << 112) | two)
    assert client_network(f"{here}%{a}") == client_network(f"{there}%{a}") == f"fe80::/64%{a}"
    assert client_network(f"{here}%{a}") != client_network(f"{here}%{b}")


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("64:ff9b:1::203.0.113.7", "64:ff9b:1::cb00:7107"),  # a /96 layout: the address is the client
        ("64:ff9b:1:cb00:71:700::", "64:ff9b:1:cb00:71:700::"),  # a /48 layout
        ("::ffff:0:203.0.113.7", "203.0.113.7"),
        ("::203.0.113.7", "203.0.113.7"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64%eth0"),
        ("2002:cb00:7107::1", "203.0.113.7"),
    ],
)
def test_client_network_of_each_form(ip: str, network: str) -> None:
    assert client_network(ip) == network


def test_one_client_behind_a_local_use_translator_cannot_lock_out_the_others() -> None:
    """The management lockout counts by the same key: 198.51.100.1's wrong tokens, behind a /96
    local-use translator, locked out 198.51.100.2 (one /64) before."""
    lockout = Lockout(limit=3)
    for _ in range(3):
        lockout.refused("64:ff9b:1::198.51.100.1")
    assert lockout.wait("64:ff9b:1::198.51.100.1") > 0
    assert lockout.wait("64:ff9b:1::198.51.100.2") == 0
    assert lockout.wait("fe80::1%eth1") == 0
    for _ in range(3):
        lockout.refused("fe80::1%eth0")
    assert lockout.wait("fe80::2%eth0") > 0  # its link
    assert lockout.wait("fe80::1%eth1") == 0  # another link


async def test_ipv4_clients_behind_a_local_use_translator_are_each_limited_alone(
    uvicorn_server: UvicornFactory, upstream: UpstreamServer
) -> None:
    """A limit of one handshake a minute keyed by ``{client.network}``, through a trusted proxy:
    three IPv4 clients behind a local-use translator and two in IPv4-translated and -compatible
    form each get theirs (as one /64 the second and third were 429), and one client twice is refused."""
    api = api_entry(upstream, policies=[{"rate-limit-by-key": {"key": "{client.network}", "limit": 1, "window": 60}}])
    gateway = WebSocketGateway(not_found, config={"apis": [api], "trusted_proxies": ["127.0.0.1"]})
    server = uvicorn_server(gateway)
    clients = ("64:ff9b:1::198.51.100.1", "64:ff9b:1::198.51.100.2", "64:ff9b:1::198.51.100.3",
               "::ffff:0:198.51.100.4", "::198.51.100.5", "64:ff9b:1::198.51.100.1")  # fmt: skip
    statuses = [await echo_status(server.url("/ws/echo"), {"X-Forwarded-For": client}) for client in clients]
    assert statuses == [101, 101, 101, 101, 101, 429]
