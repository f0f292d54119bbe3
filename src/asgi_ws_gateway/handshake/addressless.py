"""A policy that needs the client's address on a connection that has none: the connection came over a
Unix socket (``uvicorn --uds``, ``run --uds``) and no trusted proxy named the client.

The policies stay fail-closed (``ip-filter`` refuses with :data:`NO_CLIENT_ADDRESS`, every such client
shares one ``{client.ip}`` key), and the operator is told why, at most once a minute: without the line
every client was refused 403 ``ip_forbidden``, as if each one's address were denied.
"""

from __future__ import annotations

import logging

from ..log_throttle import OutageLog
from .request_view import RequestView

logger = logging.getLogger("asgi_ws_gateway.middleware")

NO_CLIENT_ADDRESS = "no_client_address"
"""A refusal's reason (``error.type``, the access line's ``reason``) when the client's address is unknown
because the connection has none."""

_THROTTLE = OutageLog(interval=60.0)


def missing(request: RequestView) -> bool:
    """Whether the request has no client address (``client.ip`` is ``""``), warned about (throttled)."""
    if request.client.ip:
        return False
    if "_addressless" in request.__dict__:  # counted once a handshake, however many policies read it
        return True
    request.__dict__["_addressless"] = True
    count = _THROTTLE.event()
    if count:
        logger.warning("%s%s", cause(request), f" ({count - 1} more since the last such line)" if count > 1 else "")
    return True


def cause(request: RequestView) -> str:
    """The WARNING's text: why the address is missing and what to change."""
    trusted = request.trusted_proxies
    header = request.forwarded_header
    if trusted is not None and trusted.unix_socket:
        remedy = f"the proxy on the socket sent no {header} naming the client: have it send {header}"
    else:
        remedy = (
            f"list 'unix:' in trusted_proxies so that the {header} (forwarded_header) of the proxy on the socket "
            "names the client (docs/deployment.md#behind-a-proxy-over-a-unix-socket)"
        )
    return (
        "a policy needs the client's address, but the connection has none (a Unix socket's peer has none, and "
        "no trusted proxy named the client): ip-filter refuses every such client (reason no_client_address) "
        f"and limits keyed by {{client.ip}} or {{client.network}} count them all under one key; {remedy}"
    )


__all__ = ["NO_CLIENT_ADDRESS", "cause", "missing"]
