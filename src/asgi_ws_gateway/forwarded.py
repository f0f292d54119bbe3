"""The client's address: the TCP peer, or what trusted proxies say in ``X-Forwarded-For``/``Forwarded``.

A proxy chain is read from the right (the hop nearest to us): while the hop that reported an
address is a trusted proxy, the address it reported is believed. The first address reported by
an untrusted hop, or the first one that is not itself a trusted proxy, is the client. A client
that is not behind a trusted proxy cannot choose its address by sending these headers.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PORT = re.compile(r":(?:[0-9]{1,5}|_[A-Za-z0-9._-]+)")
"""What may follow an address: RFC 7239's ``node-port``, digits or an obfuscated ``_port`` (§6)."""


def parse_ip(text: str) -> IPAddress | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]``, ``[::1]:80`` or ``::1`` (also as one
    RFC 7239 quoted-string); IPv4-mapped IPv6 unmapped. None for anything else.

    Strict, as a parser that decides who the client is must be: an IPv4 address is never bracketed,
    an IPv6 one with a port is; after the address only ``:port`` (digits, or RFC 7239's obfuscated
    ``_port``). ``"[203.0.113.9], for="`` used to be read as 203.0.113.9 (everything after ``]``
    ignored), what a client's unclosed quote made of a proxy's ``Forwarded`` entry.

    An IPv6 zone id (``fe80::1%eth0``) is kept: the socket's peer and a configured host may have one.
    What a client or a proxy reports is read with :func:`parse_reported_ip`, which refuses it.
    """
    text = text.strip()
    if text.startswith('"'):
        unquoted = _unquote(text)
        if unquoted is None:
            return None
        text = unquoted
    port = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text, port = text[1:end], text[end + 1 :]
        if ":" not in text:  # an IPv4 address (or nothing) in brackets
            return None
    elif text.count(":") == 1:
        text, colon, port = text.partition(":")
        port = colon + port
    if port and not _PORT.fullmatch(port):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_reported_ip(text: str) -> IPAddress | None:
    """:func:`parse_ip` for an address a client or a proxy reports (a forwarding header's hop): None
    for an IPv6 address with a zone id (``fe80::1%eth0``) as for any other text that is no address.

    A zone names an interface of the host that wrote it, meaningless here, and ``ipaddress`` takes
    any text after the ``%``: ``fe80::1%`` and 6,000 characters, or ESC and U+2028, became the client's
    address, recorded whole in the access log and on spans. The socket's own peer, whose zone the
    kernel wrote, is read with :func:`parse_ip`.
    """
    return None if "%" in text else parse_ip(text)  # no address but a zoned one holds a "%"


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, no port) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    address = parse_ip(host)
    return address is not None and address.is_loopback


def _unquote(text: str) -> str | None:
    """The content of ``text`` when it is exactly one quoted-string (RFC 9110 §5.6.4), unescaped."""
    match = _QUOTED.fullmatch(text)
    return None if match is None else _ESCAPED.sub(r"\1", match.group(1))


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052's well-known prefix: an IPv4 client translated to IPv6 (SIIT-DC, NAT64) in its last 32 bits."""
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
"""RFC 2765's IPv4-translated addresses (``::ffff:0:203.0.113.7``, older SIIT): the IPv4 client in the last 32 bits."""
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""RFC 4291's deprecated IPv4-compatible addresses (``::203.0.113.7``); ``::/104`` (``::``, ``::1``) holds none."""
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
"""RFC 8215's local-use translation prefix: each address one IPv4 client, at a place the site's layout decides."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 client an IPv6 address stands for, where the address says where it is: RFC 6052's
    well-known prefix, 6to4 (the site's /48), Teredo (the client's public address, obfuscated), and
    the IPv4-translated and IPv4-compatible forms (their last 32 bits). None for any other address,
    RFC 8215's local-use prefix included (its layout is the site's: see :func:`client_network`).
    IPv4-mapped addresses are unmapped by :func:`parse_ip` already."""
    if address in _NAT64 or address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and int(address) >> 24):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return address.teredo[1] if address.teredo is not None else None


def translated_ipv4s(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 client an IPv6 address may stand for: :func:`embedded_ipv4`'s, or, in RFC 8215's
    local-use prefix ``64:ff9b:1::/48``, the one each prefix length the site may use puts there (RFC 6052
    §2.2: /48, /56, /64, /96; bits 64 to 71, the ``u`` octet, hold none). A deny list is matched against
    all of them; an allow list only against :func:`embedded_ipv4`'s, which the address itself says."""
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return [embedded]
    if ipaddress.IPv6Address(int(address)) not in _LOCAL_NAT64:  # int(): without a zone
        return []
    packed = address.packed
    without_u = packed[:8] + packed[9:]
    found = [ipaddress.IPv4Address(without_u[start : start + 4]) for start in (6, 7, 8)]  # /48, /56, /64
    found.append(ipaddress.IPv4Address(packed[12:]))  # /96
    return list(dict.fromkeys(found))


def client_network(ip: str) -> str:
    """What a client holds: an IPv6 address's /64 (a host is given at least one; it picks any address
    in it), an IPv4 address itself; text that is not an address, unchanged.

    An IPv6 address that carries its client's IPv4 address is that IPv4 address (:func:`embedded_ipv4`):
    as its /64, every IPv4 client behind a translator was one client (one of them could lock all the
    others out), and a 6to4 site holds the /48 of its IPv4 address (65,536 /64s to rotate through).
    An address in RFC 8215's local-use prefix ``64:ff9b:1::/48`` is one IPv4 client, placed where
    the site's prefix length (/48 to /96) puts it: the address whole is the client (its /64 held
    all the clients of a /64 or /96 layout, a /16 of IPv4 under a /48 one). A zone (``fe80::1%eth0``,
    only the socket's peer has one) is kept: ``fe80::/64`` is every host's on every link.
    """
    address = parse_ip(ip)
    if not isinstance(address, ipaddress.IPv6Address):
        return ip if address is None else str(address)
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return str(embedded)
    unzoned = ipaddress.IPv6Address(int(address))
    held = str(unzoned) if unzoned in _LOCAL_NAT64 else str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return f"{held}%{address.scope_id}" if address.scope_id else held


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


UNIX_SOCKET_PEER = "unix:"
"""The ``trusted_proxies`` entry for the peer of a Unix socket: a proxy on this host (nginx's
``proxy_pass http://unix:/run/gateway.sock``) has no address, so no network can name it."""


def unix_socket_peer(scope: Mapping[str, Any]) -> bool:
    """Whether ``scope``'s connection came over a Unix socket: no client address, and the server's own
    address a path without a port, as uvicorn and the gateway's protocols write it (``("/run/gw.sock", None)``).
    A connection without a peer over TCP (a server that keeps none) is not one: no proxy vouches for it."""
    server = scope.get("server")
    return not scope.get("client") and isinstance(server, tuple | list) and len(server) == 2 and server[1] is None


class Networks:
    """A set of networks, tested per address family in logarithmic time: an address is looked up among
    the networks' merged ranges (a linear walk cost 0.22 ms per miss at 1,024 ``ip-filter`` entries, and a
    forwarding chain is checked hop by hop). :data:`UNIX_SOCKET_PEER` among them trusts the peer of a
    Unix socket (:attr:`unix_socket`), which :meth:`trusts` asks about as ``None``."""

    def __init__(self, networks: Iterable[str | IPNetwork]) -> None:
        listed = list(networks)
        self.unix_socket = UNIX_SOCKET_PEER in listed
        parsed = [n if not isinstance(n, str) else parse_network(n) for n in listed if n != UNIX_SOCKET_PEER]
        self.v4 = [n for n in parsed if n.version == 4]
        self.v6 = [n for n in parsed if n.version == 6]
        self._ranges = {4: _ranges(self.v4), 6: _ranges(self.v6)}

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6 or self.unix_socket)

    def trusts(self, peer: IPAddress | None) -> bool:
        """Whether ``peer`` is listed; ``None`` is a Unix socket's peer (see :func:`unix_socket_peer`)."""
        return self.unix_socket if peer is None else peer in self

    def __contains__(self, address: IPAddress) -> bool:
        starts, ends = self._ranges[address.version]
        number = int(address)
        at = bisect.bisect_right(starts, number) - 1
        return at >= 0 and number <= ends[at]


def _ranges(networks: Sequence[IPNetwork]) -> tuple[list[int], list[int]]:
    """The first and last addresses of ``networks`` merged (sorted, disjoint): what :class:`Networks` bisects."""
    starts: list[int] = []
    ends: list[int] = []
    for start, end in sorted((int(n.network_address), int(n.broadcast_address)) for n in networks):
        if ends and start <= ends[-1] + 1:  # overlapping or adjacent: one range
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


def forwarded_chain(values: Sequence[str], header: Literal["x-forwarded-for", "forwarded"]) -> list[str]:
    """The addresses a forwarding header lists, leftmost (original client) first.

    ``forwarded``: one hop per RFC 7239 element, its ``for`` value as written (see
    :func:`forwarded_for`); ``x-forwarded-for``: the comma-separated entries that are not blank.
    """
    if header == "forwarded":
        return [hop for value in values for hop in forwarded_for(value)]
    return [part for value in values for part in value.split(",") if part.strip()]


UNKNOWN_CLIENT = "unknown"
"""The client a trusted proxy reported as no address (RFC 7239's ``unknown``, an obfuscated ``_id``, garbage)."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(_TOKEN.pattern + r'|"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"')
"""A parameter's value: a token, or a quoted-string with backslash escapes (RFC 7239 §4, RFC 9110 §5.6)."""
_NODE = re.compile(
    r"(?:[0-9.]+|\[[0-9A-Fa-f:.]+\])(?::(?:[0-9]{1,5}|_[A-Za-z0-9._-]+))?"
    r"|unknown(?::(?:[0-9]{1,5}|_[A-Za-z0-9._-]+))?|_[A-Za-z0-9._-]+(?::(?:[0-9]{1,5}|_[A-Za-z0-9._-]+))?",
    re.IGNORECASE,
)
"""RFC 7239 §6's ``node``: IPv4, or IPv6 in brackets, ``unknown`` or an obfuscated ``_name``; optional port."""


def forwarded_for(value: str) -> list[str]:
    """The hops one ``Forwarded`` header value lists, leftmost first: each element's ``for`` as written
    (a quoted-string keeps its quotes; :func:`parse_ip` reads it), or :data:`UNKNOWN_CLIENT`.

    RFC 7239: elements separated by ``,``, pairs by ``;``, each pair ``token=token`` or
    ``token="quoted-string"`` (blanks allowed around ``,`` and ``;`` only). An element that names no
    client (no ``for``, a ``for`` twice, a ``for`` that is not a node such as ``"[203.0.113.9]"``) is an
    ``unknown`` hop. At the first syntax error the rest of the value is one ``unknown`` hop: its
    elements' bounds cannot be known, and a proxy's entry after a client's unclosed quote is read
    into it. Reading from the right, a trusted proxy then names no client, never the client's text:
    ``for="[203.0.113.9]`` followed by a proxy's ``, for="[2001:db8::7]"`` was read as 203.0.113.9.
    """
    hops: list[str] = []
    at, end = _blanks(value, 0), len(value)
    while True:
        found = UNKNOWN_CLIENT  # an element without a for names no client
        names: set[str] = set()
        while at < end and value[at] != ",":
            if value[at] == ";":
                at = _blanks(value, at + 1)
                continue
            name = _TOKEN.match(value, at)
            pair = _VALUE.match(value, name.end() + 1) if name and value.startswith("=", name.end()) else None
            if name is None or pair is None or name.group().lower() in names:
                hops.append(UNKNOWN_CLIENT)  # malformed: the rest of the value is one unknown hop
                return hops
            names.add(name.group().lower())
            if name.group().lower() == "for":
                found = pair.group() if _is_node(pair.group()) else UNKNOWN_CLIENT
            at = _blanks(value, pair.end())
            if at < end and value[at] not in ",;":
                hops.append(UNKNOWN_CLIENT)
                return hops
        hops.append(found)
        if at >= end:
            return hops
        at = _blanks(value, at + 1)


def _blanks(value: str, at: int) -> int:
    """Where the spaces and tabs from ``at`` end."""
    while at < len(value) and value[at] in " \t":
        at += 1
    return at


def _is_node(written: str) -> bool:
    node = _unquote(written) if written.startswith('"') else written
    if node is None or not _NODE.fullmatch(node):
        return False
    return node[0] != "[" or parse_reported_ip(node) is not None  # IPv6 in brackets; digits checked there


MAX_TRUSTED_HOPS = 32
"""Hops a chain of trusted proxies may report (a CDN, a load balancer and an ingress are three); past it
the client is :data:`UNKNOWN_CLIENT`."""


def trusted_hops(peer: IPAddress | None, chain: Sequence[str], trusted: Networks) -> list[str]:
    """The hops trusted proxies vouch for, the client first and the ``peer`` not included: ``chain``
    read from the right while the hop that reported each is trusted; a hop that is not an address
    ends it as :data:`UNKNOWN_CLIENT`. Empty when ``peer`` is not trusted (the peer is the client).
    A ``peer`` of None is a Unix socket's, trusted when :data:`UNIX_SOCKET_PEER` is listed."""
    hops: list[str] = []
    current = peer
    for hop in reversed(chain):
        if not trusted.trusts(current):
            break
        if len(hops) == MAX_TRUSTED_HOPS:
            # More proxies vouched for than any real chain has: the hops were written by a client
            # whose every entry lies in a trusted network, each one more parse and look-up per
            # handshake (2,000 hops: 12 ms). What is further left is no one's word: unknown.
            hops.append(UNKNOWN_CLIENT)
            break
        reported = parse_reported_ip(hop)
        if reported is None:
            # Not the proxy itself: that would give a client the proxy's standing (an allow-list of
            # the proxy's network, its rate-limit counter). An address-less client matches no list.
            hops.append(UNKNOWN_CLIENT)
            break
        hops.append(str(reported))
        current = reported
    hops.reverse()
    return hops


def client_address(peer: str | None, chain: Sequence[str], trusted: Networks, *, unix_socket: bool = False) -> str:
    """The client's address, given the TCP ``peer`` and the forwarding ``chain`` (leftmost first);
    :data:`UNKNOWN_CLIENT` when a trusted proxy reports a client that is not an address, or when the
    ``peer`` is text that is no address (see :func:`peer_client`); ``""`` when there is no peer and
    no trusted proxy named the client (``unix_socket``: the connection came over a Unix socket, whose
    peer is trusted when :data:`UNIX_SOCKET_PEER` is listed)."""
    peer_ip = parse_ip(peer) if peer else None
    if peer_ip is None:
        if peer:
            return UNKNOWN_CLIENT
        hops = trusted_hops(None, chain, trusted) if unix_socket else []
        return hops[0] if hops else ""
    hops = trusted_hops(peer_ip, chain, trusted)
    return hops[0] if hops else str(peer_ip)


_PEER_ADDRESSES: dict[str, str] = {}
""":func:`peer_client`'s readings of peers that are addresses (bounded): a worker's peers are its proxies, or
clients whose next handshakes come from the same address; text that is no address is never kept."""


def peer_client(peer: str) -> str:
    """The client ``scope["client"][0]`` names without trusted proxies: its address as :func:`parse_ip`
    reads and writes it, ``""`` when there is none (a Unix socket), else :data:`UNKNOWN_CLIENT`.

    A server that rewrites the client from a forwarding header puts whatever text the header holds there:
    uvicorn's ``--proxy-headers`` (on by default for a peer on 127.0.0.1) took ``X-Forwarded-For: x1``
    as the client ``x1``, a new rate-limit and management-lockout key for each text a client chose.
    Such a client is unknown: no address list matches it and every one of them shares one key. An
    address is written one way (``"203.0.113.7:1"`` and ``::ffff:203.0.113.7`` are ``203.0.113.7``),
    as :func:`client_address` writes it: each spelling was a ``{client.ip}`` key of its own.
    """
    if not peer:
        return ""
    address = _PEER_ADDRESSES.get(peer)
    if address is None:
        parsed = parse_ip(peer)
        if parsed is None:
            return UNKNOWN_CLIENT
        address = str(parsed)
        if len(_PEER_ADDRESSES) < 4096:
            _PEER_ADDRESSES[peer] = address
    return address


def rewritten_by_server(scope: Mapping[str, Any], trusted: Networks) -> bool:
    """Whether the server already replaced ``scope["client"]`` with an address from a forwarding header.

    uvicorn does so by default (``--proxy-headers``, trusting 127.0.0.1), before the gateway can apply
    ``trusted_proxies``. The sign: the header names the very address ``scope["client"]`` holds (or
    holds text that is no address, which only a header can have put there), while the gateway trusts
    no proxy, or the port is 0 (what uvicorn and hypercorn put there).
    """
    client = scope.get("client") or ("", None)
    if not client[0] or type(client[0]) is not str or (trusted and client[1] != 0):
        return False
    peer: IPAddress | None = None  # parsed at the first forwarding header: most requests have none
    text = client[0].lower().encode("latin-1", "replace")
    for name, value in scope.get("headers", ()):
        # A server takes a hop's text whole: a value without the client's address as text names it
        # nowhere. Only such a value is parsed hop by hop (a client's 32 KiB of hops took 8 ms).
        if name in (b"x-forwarded-for", b"forwarded") and text in value.lower():
            peer = peer or parse_ip(client[0])
            if peer is None:  # text that is no address, found in the header: a server took it from there
                return True
            header: Literal["x-forwarded-for", "forwarded"] = "forwarded" if name == b"forwarded" else "x-forwarded-for"
            # parse_ip, zones and all: the server took the hop's text whole (this only detects that).
            if any(parse_ip(hop) == peer for hop in forwarded_chain([value.decode("latin-1")], header)):
                return True
    return False


__all__ = [
    "MAX_TRUSTED_HOPS",
    "UNIX_SOCKET_PEER",
    "UNKNOWN_CLIENT",
    "IPAddress",
    "IPNetwork",
    "Networks",
    "client_address",
    "client_network",
    "embedded_ipv4",
    "forwarded_chain",
    "forwarded_for",
    "is_loopback_host",
    "parse_ip",
    "parse_network",
    "parse_reported_ip",
    "peer_client",
    "rewritten_by_server",
    "translated_ipv4s",
    "trusted_hops",
    "unix_socket_peer",
]
