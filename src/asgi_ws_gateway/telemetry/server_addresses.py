"""The server a span names, Sans-I/O: as the client addressed it (the ``Host`` header, else the
socket), and the host and port an upstream attempt connects to (its URL's).

Both repeat from one handshake to the next (a few ``Host`` values, a backend's authority), so the
spans' answers are remembered, at most :data:`REMEMBERED` of each, forgotten together when full, under
keys that hold no client text a credential could hide in: an upstream URL's scheme and authority (its
path and query, a client's text, left out; none with userinfo), and only a ``Host`` that is a plain
host name or address and port (``user:secret@x``, ``x-api-key:secret`` or a JWT as a Host are parsed
afresh each time, never kept).
"""

from __future__ import annotations

import re

from ..bounded import remember, split_url
from ..upstream.resolver import host_and_port
from ..wire_numbers import parse_port

REMEMBERED = 1024
"""Answers kept per function (URLs carry a client's path: many clients, many URLs)."""
_LONGEST = 1024
"""The longest upstream authority kept (a ``Host`` kept is 262 bytes at most)."""
_UNKNOWN = object()
AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*").match
"""A URL's scheme and authority (where ``urlsplit`` ends the authority): all its host and port depend on."""
_PLAIN_HOST = re.compile(rb"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?").fullmatch
"""A ``Host`` header that is a host name or an IP address, and a port (a JWT, ``eyJ...``, is refused apart)."""
_connections: dict[str, tuple[str, int] | None] = {}
_servers: dict[tuple[bytes, str], tuple[str, int]] = {}


def connected_to(url: str) -> tuple[str, int] | None:
    """The host and port an attempt connects to: its URL's, which a ``set-backend-service`` may have
    made another than the backend's (the span said the configured ``127.0.0.1`` of a connection to
    ``localhost``). Metrics keep the backend's: their labels must stay few."""
    authority = AUTHORITY(url)
    key = authority[0] if authority is not None else ""
    found = _connections.get(key, _UNKNOWN) if key else _UNKNOWN
    if found is _UNKNOWN:
        found = _connected_to(url)
        if key and len(key) <= _LONGEST and "@" not in key:
            remember(_connections, key, found, REMEMBERED)
    return found  # type: ignore[return-value]  # not _UNKNOWN


def _connected_to(url: str) -> tuple[str, int] | None:
    try:
        host, port = host_and_port(split_url(url))
    except ValueError:  # refused before any connect (a 400): the backend's stay
        return None
    return (host, port) if host else None


def addressed_server(host: bytes | None, server: tuple[str, int | None] | None, scheme: str) -> tuple[str, int | None]:
    """``server.address``/``server.port`` as the client addressed them: the Host header, else the socket."""
    if host:
        found = _servers.get((host, scheme))
        if found is None:
            found = _addressed(host, scheme)
            if _PLAIN_HOST(host) is not None and b"eyJ" not in host:
                remember(_servers, (host, scheme), found, REMEMBERED)
        return found
    if server:
        return server[0], server[1]
    return "", None


def _addressed(host: bytes, scheme: str) -> tuple[str, int]:
    """The Host header's address and port (the scheme's default when it names none)."""
    text = host.decode("latin-1")
    if text.startswith("["):  # an IPv6 literal: [::1]:8000
        address, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        address, _, port_text = text.partition(":")
    port = parse_port(port_text)  # not int(): "²" (a byte 0xB2) raised, "٣" was port 3
    return address, port if port is not None else 443 if scheme == "wss" else 80


__all__ = ["AUTHORITY", "addressed_server", "connected_to"]
