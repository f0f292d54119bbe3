"""A trusted Unix socket every local user can connect to, told once per socket and process.

``uvicorn app:app --uds PATH`` creates its socket mode 0666: with ``trusted_proxies: ["unix:"]`` any local
user can connect past the proxy and forge the forwarding header (``run --uds`` makes it 0660 and warns at
start-up). uvicorn puts the socket's path in ``scope["server"]``, so the first handshake over it looks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..socket_access import open_to_every_user

logger = logging.getLogger("asgi_ws_gateway.middleware")

_looked_at: set[str] = set()
_MAX_LOOKED_AT = 16
"""Socket paths remembered (a server serves one or two); past it no more are looked at."""


def warn_if_open(scope: Mapping[str, Any]) -> None:
    """Log a WARNING when the socket the trusted peer of ``scope`` came through is open to every user
    (once per path; a ``scope["server"]`` whose first element is not a path is ignored)."""
    server = scope.get("server")
    path = server[0] if isinstance(server, tuple | list) and server else None
    if type(path) is not str or not path.startswith("/") or path in _looked_at or len(_looked_at) >= _MAX_LOOKED_AT:
        return
    _looked_at.add(path)
    mode = open_to_every_user(path)
    if mode is not None:
        logger.warning(
            "the Unix socket %s is open to every local user (%s, as uvicorn --uds makes it) and trusted_proxies "
            "lists 'unix:': any of them can send X-Forwarded-For or Forwarded and pass as any client (ip-filter, "
            "limits keyed by {client.ip}); restrict it (chmod 660 with the proxy's group, or a directory only "
            "the proxy's user can enter; asgi-ws-gateway run --uds does both), docs/deployment.md",
            path,
            mode,
        )


__all__ = ["warn_if_open"]
