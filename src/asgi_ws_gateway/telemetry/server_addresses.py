"""The server a span names, Sans-I/O: as the client addressed it (the ``Host`` header, else the
socket), and the host and port an upstream attempt connects to (its URL's).
"""

from __future__ import annotations

from ..bounded import split_url
from ..upstream.resolver import host_and_port
from ..wire_numbers import parse_port


def connected_to(url: str) -> tuple[str, int] | None:
    """The host and port an attempt connects to: its URL's, which a ``set-backend-service`` may have
    made another than the backend's (the span said the configured ``127.0.0.1`` of a connection to
    ``localhost``). Metrics keep the backend's: their labels must stay few."""
    try:
        host, port = host_and_port(split_url(url))
    except ValueError:  # refused before any connect (a 400): the backend's stay
        return None
    return (host, port) if host else None


def addressed_server(host: bytes | None, server: tuple[str, int | None] | None, scheme: str) -> tuple[str, int | None]:
    """``server.address``/``server.port`` as the client addressed them: the Host header, else the socket."""
    if host:
        text = host.decode("latin-1")
        if text.startswith("["):  # an IPv6 literal: [::1]:8000
            address, _, rest = text[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            address, _, port_text = text.partition(":")
        port = parse_port(port_text)  # not int(): "²" (a byte 0xB2) raised, "٣" was port 3
        return address, port if port is not None else 443 if scheme == "wss" else 80
    if server:
        return server[0], server[1]
    return "", None


__all__ = ["addressed_server", "connected_to"]
