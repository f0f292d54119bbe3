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


def capacity_used(in_flight: int, lingering: int) -> int:
    """Connections counted against what the open-file limit allows: ``in_flight`` (handshakes and open
    connections), and the ``lingering`` connections' descriptors, two to a connection. Closed, a lingering
    connection still holds its descriptor, up to one in 8 of the open-file limit
    (``passthrough.lingering_close``): uncounted, a process at capacity whose clients closed and
    reconnected at once used the reserve up (upstream connects failed with EMFILE)."""
    return in_flight + (lingering + 1) // 2


def over_capacity(in_flight: int, capacity: int | None, *, lingering: int = 0, room: int | None = None) -> bool:
    """True when ``in_flight`` exceeds ``capacity`` (``max_connections``, within the open-file limit), or,
    lingering descriptors counted, what the open-file limit has room for (``room``: :func:`descriptor_capacity`).
    A ``max_connections`` below that room bounds the connections served only: lingering ones hold no
    more than their descriptor."""
    if capacity is not None and in_flight > capacity:
        return True
    return room is not None and capacity_used(in_flight, lingering) > room


def check_capacity(in_flight: int, capacity: int | None, *, lingering: int = 0, room: int | None = None) -> None:
    """Refuse a handshake that would put the process over its capacity (:func:`over_capacity`;
    ``in_flight`` counts this one).

    Raises:
        GatewayOverloaded: 503 with ``Retry-After``, reason ``over_capacity``.
    """
    if over_capacity(in_flight, capacity, lingering=lingering, room=room):
        raise GatewayOverloaded(
            f"this gateway process has {capacity} connections or handshakes open, its capacity "
            "(max_connections, or what its open-file limit allows, closing connections counted)",
            reason="over_capacity",
        )


__all__ = [
    "RESERVED_DESCRIPTORS",
    "capacity_used",
    "check_capacity",
    "descriptor_capacity",
    "over_capacity",
    "process_capacity",
]
