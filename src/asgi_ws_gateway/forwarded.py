"""The client's address: the TCP peer, or what trusted proxies say in ``X-Forwarded-For``/``Forwarded``.

A proxy chain is read from the right (the hop nearest to us): while the hop that reported an
address is a trusted proxy, the address it reported is believed. The first address reported by
an untrusted hop, or the first one that is not itself a trusted proxy, is the client. A client
that is not behind a trusted proxy cannot choose its address by sending these headers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED_FOR = re.compile(r'(?:^|[;,\s])for\s*=\s*("[^"]*"|[^;,\s]*)', re.IGNORECASE)


def parse_ip(text: str) -> IPAddress | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80`` or ``::1``; IPv4-mapped IPv6 unmapped."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_network(ip: str) -> str:
    """What a client holds: an IPv6 address's /64 (a host is given at least one; it picks any address
    in it), an IPv4 address itself; text that is not an address, unchanged."""
    address = parse_ip(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return ip if address is None else str(address)


def parse_network(text: str) -> IPNetwork:
    """``10.0.0.0/8``, ``2001:db8::/32`` or a single address; raises ValueError if malformed.

    An IPv4-mapped network (``::ffff:203.0.113.7``, ``::ffff:10.0.0.0/104``: how a dual-stack socket
    and its logs show an IPv4 client) is the IPv4 network it maps, as :func:`parse_ip` unmaps an
    address: kept as IPv6 it matched no client, so a client listed in ``deny`` that way got in."""
    network = ipaddress.ip_network(text.strip(), strict=False)
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class Networks:
    """A set of networks, tested per address family."""

    def __init__(self, networks: Iterable[str | IPNetwork]) -> None:
        parsed = [n if not isinstance(n, str) else parse_network(n) for n in networks]
        self.v4 = [n for n in parsed if n.version == 4]
        self.v6 = [n for n in parsed if n.version == 6]

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in n for n in (self.v4 if address.version == 4 else self.v6))


def forwarded_chain(values: Sequence[str], header: Literal["x-forwarded-for", "forwarded"]) -> list[str]:
    """The addresses a forwarding header lists, leftmost (original client) first."""
    if header == "forwarded":
        return [m.group(1) for value in values for m in _FORWARDED_FOR.finditer(value)]
    return [part for value in values for part in value.split(",") if part.strip()]


UNKNOWN_CLIENT = "unknown"
"""The client a trusted proxy reported as no address (RFC 7239's ``unknown``, an obfuscated ``_id``, garbage)."""


def client_address(peer: str | None, chain: Sequence[str], trusted: Networks) -> str:
    """The client's address, given the TCP ``peer`` and the forwarding ``chain`` (leftmost first);
    :data:`UNKNOWN_CLIENT` when a trusted proxy reports a client that is not an address."""
    peer_ip = parse_ip(peer) if peer else None
    if peer_ip is None:
        return peer or ""
    current = peer_ip
    for hop in reversed(chain):
        if current not in trusted:
            break
        reported = parse_ip(hop)
        if reported is None:
            # Not the proxy itself: that would give a client the proxy's standing (an allow-list of
            # the proxy's network, its rate-limit counter). An address-less client matches no list.
            return UNKNOWN_CLIENT
        current = reported
    return str(current)


def rewritten_by_server(scope: Mapping[str, Any], trusted: Networks) -> bool:
    """Whether the server already replaced ``scope["client"]`` with an address from a forwarding header.

    uvicorn does so by default (``--proxy-headers``, trusting 127.0.0.1), before the gateway can apply
    ``trusted_proxies``. The sign: the header names the very address ``scope["client"]`` holds,
    while the gateway trusts no proxy, or the port is 0 (what uvicorn and hypercorn put there).
    """
    client = scope.get("client") or ("", None)
    if not client[0] or (trusted and client[1] != 0):
        return False
    peer: IPAddress | None = None  # parsed at the first forwarding header: most requests have none
    for name, value in scope.get("headers", ()):
        if name in (b"x-forwarded-for", b"forwarded"):
            peer = peer or parse_ip(client[0])
            if peer is None:
                return False
            header: Literal["x-forwarded-for", "forwarded"] = "forwarded" if name == b"forwarded" else "x-forwarded-for"
            if any(parse_ip(hop) == peer for hop in forwarded_chain([value.decode("latin-1")], header)):
                return True
    return False


__all__ = [
    "UNKNOWN_CLIENT",
    "IPAddress",
    "IPNetwork",
    "Networks",
    "client_address",
    "forwarded_chain",
    "parse_ip",
    "parse_network",
    "rewritten_by_server",
]
