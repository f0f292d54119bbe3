"""How many connections one gateway process takes at once: ``max_connections``, or what its file
descriptors allow.

A proxied connection holds two descriptors (the client's socket and the upstream's). A process that
runs out of them fails in the worst places: upstream connects (which, before, blamed a healthy
backend and put it in cooldown), the listening socket's ``accept`` (health checks and the
management API go dark with it) and the files policies read. So the gateway refuses the handshake
past its capacity with 503, before any policy or upstream connect, and keeps descriptors in reserve.
"""

from __future__ import annotations

import logging
import sys

from ..errors import GatewayOverloaded

if sys.platform != "win32":
    import resource

logger = logging.getLogger(__name__)

RESERVED_DESCRIPTORS = 64
"""Kept for what is not a proxied connection: the listening sockets, health checks, the management
API, the store's and the exporters' connections, log files."""


class ShedCount:
    """Connections this process closed before their request head to keep descriptors for new ones
    (``server.head_deadline``; the ``ws_gateway.connections.shed`` metric reads it)."""

    def __init__(self) -> None:
        self.value = 0


SHED = ShedCount()


def descriptor_capacity() -> int | None:
    """Connections this process's open-file limit has room for (two descriptors each, after the
    reserve); None when there is no limit to go by."""
    if sys.platform == "win32":  # no descriptor limit to derive a capacity from
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, (soft - RESERVED_DESCRIPTORS) // 2)


def process_capacity(wanted: int | None) -> int | None:
    """``max_connections`` (``wanted``), within what the open-file limit allows (None: no limit known)."""
    allowed = descriptor_capacity()
    if wanted is None or allowed is None:
        return wanted if allowed is None else allowed
    if wanted > allowed:
        logger.warning(
            "max_connections is %d, but this process's open-file limit has room for %d proxied connections: "
            "serving at most %d (raise the limit, ulimit -n; 'asgi-ws-gateway run' raises it to the hard limit)",
            wanted, allowed, allowed,
        )  # fmt: skip
    return min(wanted, allowed)


def check_capacity(in_flight: int, capacity: int | None) -> None:
    """Refuse a handshake that would make ``in_flight`` (this one included) exceed ``capacity``.

    Raises:
        GatewayOverloaded: 503 with ``Retry-After``, reason ``over_capacity``.
    """
    if capacity is not None and in_flight > capacity:
        raise GatewayOverloaded(
            f"this gateway process has {capacity} connections or handshakes open, its capacity "
            "(max_connections, or what its open-file limit allows)",
            reason="over_capacity",
        )


__all__ = ["RESERVED_DESCRIPTORS", "check_capacity", "descriptor_capacity", "process_capacity"]
