"""The management client's TCP peer as the server's transport has it, not as a forwarding header rewrote it.

uvicorn's ``--proxy-headers`` is on by default for ``127.0.0.1``: under ``uvicorn app:app`` (``run``
turns it off) any local client's ``X-Forwarded-For`` became ``scope["client"]``, so the admin lockout
(:mod:`.lockout`), keyed by the client, was keyed by what the guesser wrote. A local guesser gave each
guess a new address (60 guesses, none locked), or wrote the administrator's address and locked the
administrator out. The server's transport still knows the peer: uvicorn's HTTP cycles (h11, httptools
and the gateway's own protocol) hand the application their bound ``receive``, whose object holds the
connection's transport. Its peer stands in for ``scope["client"]``, and the gateway's own
``trusted_proxies`` then decide, as for every other peer, whether a forwarding header is believed.

Where the transport cannot be reached (another server, a middleware in front that wraps ``receive``),
the scope is left as the server wrote it.
"""

from __future__ import annotations

import socket
from typing import Any, Literal

from starlette.types import Receive, Scope


def transport_peer(receive: Receive) -> tuple[str, int] | Literal["unix"] | None:
    """The peer of the connection ``receive`` reads from: ``(host, port)``, ``"unix"`` for a Unix
    socket's (which has no address), None when the transport cannot be reached."""
    transport: Any = getattr(getattr(receive, "__self__", None), "transport", None)
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return None
    sock = get_extra_info("socket")
    if hasattr(socket, "AF_UNIX") and getattr(sock, "family", None) == socket.AF_UNIX:
        return "unix"
    peer = get_extra_info("peername")
    if isinstance(peer, tuple | list) and len(peer) >= 2 and isinstance(peer[0], str) and isinstance(peer[1], int):
        return peer[0], peer[1]
    return None


def peer_scope(scope: Scope, receive: Receive) -> Scope:
    """``scope`` with ``client`` set to the transport's peer when the server reported another one."""
    peer = transport_peer(receive)
    if peer is None:
        return scope
    client = scope.get("client")
    if peer == "unix":
        return scope if client is None else {**scope, "client": None}
    if isinstance(client, tuple | list) and len(client) == 2 and (client[0], client[1]) == peer:
        return scope
    return {**scope, "client": peer}


__all__ = ["peer_scope", "transport_peer"]
