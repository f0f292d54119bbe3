"""``ip-filter`` matches an IPv6 address that carries an IPv4 client as that client too.

A client behind a translator (NAT64 ``64:ff9b::/96``, SIIT's ``::ffff:0:a.b.c.d``, the deprecated
IPv4-compatible ``::a.b.c.d``, 6to4, Teredo) arrives as an IPv6 address holding its IPv4 one. The
limits count it as that IPv4 client (``forwarded.client_network``), but ``ip-filter`` matched the
address only as it arrived: ``deny: [10.9.9.9]`` admitted 10.9.9.9 reported as ``64:ff9b::a09:909``,
and ``allow: [10.0.0.0/8]`` refused the allowed client so translated. Now ``deny`` refuses an address
when it or an IPv4 client it may stand for is listed (RFC 8215's local-use ``64:ff9b:1::/48``: the
client each layout puts there); ``allow`` admits when it or the IPv4 client it carries is listed.
Units over the address forms; real handshakes through uvicorn, the address reported by a trusted
proxy (the test's own connection, from 127.0.0.1).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.policies.network import IpFilter, IpFilterSettings
from asgi_ws_gateway.standalone import not_found
from support.clients import assert_echoes_or_refused
from support.configs import api_entry
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

CLIENT = "203.0.113.7"  # cb00:7107
FORMS = {
    "IPv4-mapped": "::ffff:203.0.113.7",
    "IPv4-translated": "::ffff:0:203.0.113.7",
    "NAT64 well-known": "64:ff9b::203.0.113.7",
    "NAT64 well-known, hex": "64:ff9b::cb00:7107",
    "IPv4-compatible": "::203.0.113.7",
    "6to4": "2002:cb00:7107:1::5",
    "local-use /96": "64:ff9b:1::cb00:7107",
    "local-use /64": "64:ff9b:1:0:cb:71:700:0",
    "local-use /48": "64:ff9b:1:cb00:71:700::",
}
OTHERS = {"another IPv4": "198.51.100.7", "NAT64 of another": "64:ff9b::198.51.100.7", "native IPv6": "2001:db8::7"}


async def _admitted(settings: dict[str, Any], address: str) -> bool:
    """Whether ``ip-filter`` with ``settings`` admits a client at ``address`` (what the handshake gives it)."""
    policy = IpFilter(IpFilterSettings(**settings), None)  # type: ignore[arg-type]  # no store, no loader used
    context: Any = SimpleNamespace(request=SimpleNamespace(client=SimpleNamespace(ip=address)))
    try:
        await policy.apply(context)
    except HandshakeDenied as exc:
        assert exc.status == 403
        return False
    return True


@pytest.mark.parametrize("address", list(FORMS.values()), ids=list(FORMS))
@pytest.mark.parametrize("listed", [CLIENT, "203.0.113.0/24", "::ffff:203.0.113.0/120"])
async def test_deny_refuses_the_ipv4_client_in_every_form(listed: str, address: str) -> None:
    """``deny`` of an IPv4 address or network refuses that client however it is translated."""
    assert not await _admitted({"deny": [listed]}, address)
    assert await _admitted({"deny": ["198.51.100.0/24"]}, address)


@pytest.mark.parametrize("address", list(OTHERS.values()), ids=list(OTHERS))
async def test_deny_leaves_other_clients_alone(address: str) -> None:
    assert await _admitted({"deny": ["203.0.113.0/24"]}, address)


@pytest.mark.parametrize(
    "address", [a for name, a in FORMS.items() if not name.startswith("local-use")],
    ids=[name for name in FORMS if not name.startswith("local-use")],
)  # fmt: skip
async def test_allow_admits_the_ipv4_client_the_address_carries(address: str) -> None:
    """``allow`` of an IPv4 network admits its clients translated; nothing else is admitted by it."""
    assert await _admitted({"allow": ["203.0.113.0/24"]}, address)
    assert not await _admitted({"allow": ["198.51.100.0/24"]}, address)


@pytest.mark.parametrize("name", [name for name in FORMS if name.startswith("local-use")])
async def test_allow_does_not_guess_a_local_use_layout(name: str) -> None:
    """RFC 8215's local-use prefix has no layout the address says: ``allow`` matches such an address as
    itself only (``deny`` refuses the client of any layout, above)."""
    assert not await _admitted({"allow": ["203.0.113.0/24"]}, FORMS[name])
    assert await _admitted({"allow": ["64:ff9b:1::/48"]}, FORMS[name])


async def test_the_address_itself_still_matches() -> None:
    """An IPv6 entry matches the address as it arrived, both lists; deny wins over allow."""
    translated = FORMS["NAT64 well-known"]
    assert not await _admitted({"deny": ["64:ff9b::/96"]}, translated)
    assert await _admitted({"allow": ["64:ff9b::/96"]}, translated)
    assert not await _admitted({"allow": ["64:ff9b::/96"], "deny": [CLIENT]}, translated)
    assert not await _admitted({"allow": ["203.0.113.0/24"], "deny": ["64:ff9b::/96"]}, translated)
    assert not await _admitted({"allow": ["0.0.0.0/0"]}, "unknown")


@pytest.mark.parametrize(
    ("top", "ip_filter", "headers", "status"),
    [
        ({}, {"deny": ["10.9.9.9"]}, {"X-Forwarded-For": "64:ff9b::a09:909"}, 403),  # was admitted
        ({"forwarded_header": "forwarded"}, {"deny": ["10.9.0.0/16"]}, {"Forwarded": 'for="[::ffff:0:10.9.9.9]"'}, 403),
        ({}, {"allow": ["10.0.0.0/8"]}, {"X-Forwarded-For": "64:ff9b::10.1.2.3"}, 101),  # was refused
        ({}, {"allow": ["10.0.0.0/8"]}, {"X-Forwarded-For": "64:ff9b::192.0.2.1"}, 403),
    ],
    ids=["deny-nat64", "deny-translated-forwarded", "allow-nat64", "allow-another"],
)
async def test_a_translated_client_reported_by_a_trusted_proxy(
    uvicorn_server: UvicornFactory,
    upstream: UpstreamServer,
    top: dict[str, Any],
    ip_filter: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    """Real handshakes: the client named by a trusted proxy's header, matched by its IPv4 client."""
    config = {"apis": [api_entry(upstream, policies=[{"ip-filter": ip_filter}])], "trusted_proxies": ["127.0.0.1"]}
    server = uvicorn_server(WebSocketGateway(not_found, config={**config, **top}), proxy_headers=False)
    await assert_echoes_or_refused(server.url("/ws/echo"), status, additional_headers=headers)
