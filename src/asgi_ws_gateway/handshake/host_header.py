"""The ``Host`` header of an upgrade request: exactly one, a host name or an IP address, and an optional port.

RFC 9112 §3.2 asks a server to answer 400 to a request without ``Host``, with more than one, or
with one that is not ``uri-host [":" port]``. The servers under the gateway do not all check it,
and the gateway passes ``Host`` on (``X-Forwarded-Host``, ``{request.host}`` in templates, the
span's ``server.address``): with two values, a proxy in front and an upstream behind could each
believe another one, which is how host-confusion attacks (cache poisoning, tenant routing) start.

RFC 3986's ``reg-name`` is wider than any host a client connects to: it takes ``, ; = ! $ & ' ( ) *
+ ~`` and ``%``-escapes, and ``port`` is any run of digits. Each was read differently behind the
gateway: ``Host: evil.test,gw.test`` reached the upstream as ``X-Forwarded-Host: evil.test,gw.test``,
whose first element Express reads and whose last Werkzeug's ``ProxyFix`` reads; ``gw.test;for=1.2.3.4``
wrote a ``Forwarded`` pair; ``gw%2etest`` is ``gw.test`` to a server that decodes it. So a ``Host`` is
only what a browser or a client library sends (:func:`split_host`), and :func:`hostname` is the one
spelling of the host a policy compares.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from ..bounded import remember
from ..errors import HandshakeDenied
from ..wire_numbers import parse_port

_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
"""Dot-separated labels of letters, digits, ``-`` and ``_`` (Docker Compose names: ``my_service``),
none empty, and one trailing dot (the root: ``example.com.`` is a fully qualified ``example.com``)."""
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[Xx][0-9A-Fa-f]*")
"""A last label that makes a name an IPv4 address to the WHATWG URL parser (browsers) and to
``inet_aton``: ``127.1``, ``0x7f.0.0.1`` and ``2130706433`` all name 127.0.0.1."""


def split_host(value: str) -> tuple[str, int | None] | None:
    """``value`` as a host and a port (None: no port), or None when it is not one a client sends.

    The host is a name (:data:`_NAME`), an IPv4 address in dotted decimal (no leading zeros, four
    parts: other spellings of one address a browser never sends), or an IPv6 address in brackets
    without a zone (``%eth0`` names an interface of the client's, not a host). The port is 1 to
    65535 without leading zeros; ``host:`` with an empty port (RFC 3986 allows it) is refused, as no
    client sends one.

    >>> split_host("localhost:8000"), split_host("[::1]"), split_host("evil.test,gw.test")
    (('localhost', 8000), ('[::1]', None), None)
    """
    parts = _SPLIT.get(value)
    if parts is None:
        parts = _split_host(value)
        if parts is not None and len(value) <= _SPLIT_LENGTH:
            remember(_SPLIT, value, parts, _SPLIT_LIMIT)
    return parts


_SPLIT: dict[str, tuple[str, int | None]] = {}
"""``Host`` values :func:`split_host` took, split: a client's few hosts repeat from one handshake to the
next, and an IPv4 address parsed by ``ipaddress`` each time was ~300 opcodes a handshake. Bounded as the
other stores of client-chosen values are (:func:`~..bounded.remember`); refused values are not kept."""
_SPLIT_LIMIT = 256
_SPLIT_LENGTH = 270  # a DNS name's 253 characters, a port and brackets: longer is no client's host


def _split_host(value: str) -> tuple[str, int | None] | None:
    """:func:`split_host`, worked out."""
    if value.startswith("["):
        end = value.find("]") + 1
        host, rest = value[:end], value[end:]
        if not end or not _ipv6_literal(host):
            return None
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
        if not _name_or_ipv4(host):
            return None
    if not rest:
        return host, None
    port = rest[1:]
    number = parse_port(port) if rest[0] == ":" and port[:1] != "0" else None  # 0 and 080: no client's
    return (host, number) if number else None


def _ipv6_literal(host: str) -> bool:
    address = host[1:-1]
    if "%" in address:  # a zone: ipaddress takes it, but no other host carries it
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _name_or_ipv4(host: str) -> bool:
    if _NAME.fullmatch(host) is None:
        return False
    if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rpartition(".")[2]) is None:
        return True
    try:  # a name that is an address to a browser: only the one spelling ipaddress reads
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def hostname(value: str) -> str:
    """The host a ``Host`` header ``value`` names, spelled one way: lower case, without the port or
    a trailing dot, an IPv6 address in brackets and compressed (``[::1]``, as a URL's ``hostname``
    is in browsers); ``""`` when ``value`` is not a host (:func:`split_host`).

    A server finds its virtual host this way (Starlette's ``Host`` route, nginx's ``server_name``),
    so a policy comparing the raw ``Host`` with ``admin.example.com`` let ``ADMIN.example.com``,
    ``admin.example.com:443`` and ``admin.example.com.`` through to the same upstream route.

    >>> hostname("Admin.Example.COM.:443"), hostname("[0:0::1]:8000")
    ('admin.example.com', '[::1]')
    """
    parts = split_host(value.strip(" \t"))
    if parts is None:
        return ""
    host = parts[0]
    if host.startswith("["):
        return f"[{_compressed(ipaddress.IPv6Address(host[1:-1]))}]"
    return host.lower().removesuffix(".")


def _compressed(address: ipaddress.IPv6Address) -> str:
    """``address`` as browsers write it (RFC 5952, hex throughout), whatever the Python version: 3.13
    writes an IPv4-mapped address with its dotted quad (``::ffff:1.2.3.4``), 3.11 as ``::ffff:102:304``."""
    mapped = address.ipv4_mapped
    if mapped is None:
        return address.compressed
    value = int(mapped)
    return f"::ffff:{value >> 16:x}:{value & 0xFFFF:x}"


def check_host(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise :class:`HandshakeDenied` (400, ``bad_request``) unless ``headers`` carry one valid ``Host``."""
    hosts = [value for name, value in headers if name.lower() == b"host"]
    if len(hosts) != 1:
        detail = "the request has no Host header" if not hosts else f"the request has {len(hosts)} Host headers"
        raise HandshakeDenied(400, f"{detail}; exactly one is required", reason="bad_request")
    if split_host(hosts[0].strip(b" \t").decode("latin-1")) is None:
        raise HandshakeDenied(
            400, "the Host header is not a host name or an IP address with an optional port", reason="bad_request"
        )


__all__ = ["check_host", "hostname", "split_host"]
