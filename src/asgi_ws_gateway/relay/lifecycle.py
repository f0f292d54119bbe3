"""A connection's life beyond its messages: idle timeout, maximum lifetime, and draining.

The watchdog costs nothing per message: it samples the relay's message counters a few times per
idle period instead of stamping a clock on every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from .._types import Data, Scope
from ..forwarded import UNIX_SOCKET_PEER, unix_socket_peer
from ..redact import printable
from .stats import RelayStats

logger = logging.getLogger(__name__)

_IDLE_CHECKS = 4


class RelayHandle(Protocol):
    """What lifecycle and management use of a connection: the relay's, or passthrough's splice."""

    stats: RelayStats
    finished: asyncio.Event

    async def run(self) -> RelayStats: ...

    @property
    def closing(self) -> bool:
        """True once the connection's close is under way, whatever began it: a close asked for then would not
        be the one its sides get (management's kick answers 409)."""
        ...

    async def close(self, client_code: int, client_reason: str, upstream_code: int, upstream_reason: str) -> bool:
        """Close both sides with these codes; False when closing had begun already (a no-op)."""
        ...

    def abort(self) -> None: ...

    async def send_to_client(self, data: Data) -> bool: ...


# samples per idle period: an idle connection is closed within 1.25 periods


async def watchdog(
    relay: RelayHandle, *, idle_timeout: float | None, max_lifetime: float | None, expires_at: float | None = None
) -> None:
    """Close ``relay`` with 1001 when idle for ``idle_timeout`` or older than ``max_lifetime`` seconds,
    and the client with 1008 when its subscription expires (``expires_at``, POSIX seconds)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + max_lifetime if max_lifetime is not None else float("inf")
    expiry = started + (expires_at - time.time()) if expires_at is not None else float("inf")
    step = idle_timeout / _IDLE_CHECKS if idle_timeout is not None else float("inf")
    stats = relay.stats
    seen, quiet_since = -1, started
    while True:
        now = loop.time()
        count = stats.messages_in + stats.messages_out
        if count != seen:
            seen, quiet_since = count, now
        if idle_timeout is not None and now - quiet_since >= idle_timeout:
            await relay.close(1001, "idle timeout", 1001, "idle timeout")
            return
        if now >= deadline:
            await relay.close(1001, "maximum connection lifetime reached", 1001, "maximum connection lifetime reached")
            return
        if now >= expiry:
            await relay.close(1008, "subscription expired", 1001, "subscription expired")
            return
        await asyncio.sleep(max(0.0, min(step, deadline - now, expiry - now)))


_MAX_ADDRESS = 128


@dataclass(eq=False)
class TrackedConnection:
    """An open connection as management sees it."""

    id: str
    api: str
    client: str
    """The client's address: the one trusted proxies reported, else ``host:port`` of the TCP peer."""
    peer: str
    """``host:port`` of the TCP peer (a proxy's, behind trusted proxies)."""
    opened_at: float
    """Unix time."""
    relay: RelayHandle = field(repr=False)
    subject: str | None = None
    """Who the client is, when a policy established it (e.g. a JWT's ``sub``)."""
    subscription: str | None = None
    backend: str | None = None
    """The backend's label (never with a query or credentials)."""

    @property
    def stats(self) -> RelayStats:
        return self.relay.stats


class ConnectionRegistry:
    """The open connections of one gateway, so they can be listed, addressed and drained."""

    def __init__(self) -> None:
        self._open: dict[str, TrackedConnection] = {}
        self._by_relay: dict[RelayHandle, str] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, relay: RelayHandle, *, api: str, scope: Scope, client: str | None = None) -> TrackedConnection:
        """Track ``relay``; ``client``: the address trusted proxies reported, if they did."""
        tcp = scope.get("client")
        # Bounded and escaped: a server that rewrote it from a header (uvicorn's --proxy-headers) put text there.
        peer = printable(f"{tcp[0]}:{tcp[1]}"[:_MAX_ADDRESS], quote=False) if tcp else "-"
        if not tcp and unix_socket_peer(scope):  # a Unix socket's peer: no address, named as trusted_proxies does
            peer = UNIX_SOCKET_PEER
        connection = TrackedConnection(
            id=os.urandom(16).hex(),
            api=api,
            client=client if client and (not tcp or client != tcp[0]) else peer,
            peer=peer,
            opened_at=time.time(),
            relay=relay,
        )
        self._open[connection.id] = connection
        self._by_relay[relay] = connection.id
        self._empty.clear()
        return connection

    def remove(self, relay: RelayHandle) -> None:
        connection_id = self._by_relay.pop(relay, None)
        if connection_id is not None:
            del self._open[connection_id]
        if not self._open:
            self._empty.set()

    def get(self, connection_id: str) -> TrackedConnection | None:
        return self._open.get(connection_id)

    def list(self) -> list[TrackedConnection]:
        return list(self._open.values())

    async def drain(self, code: int, reason: str, grace: float, *, apis: set[str] | None = None) -> None:
        """Close open connections (of ``apis``, or all) with ``code``; abort those left after ``grace`` s."""
        targets = [c.relay for c in self._open.values() if apis is None or c.api in apis]
        if not targets:
            return
        logger.info("draining %d WebSocket connection(s) with %d", len(targets), code)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(r.close(code, reason, code, reason) for r in targets))
                await asyncio.gather(*(r.finished.wait() for r in targets))
        stuck = [r for r in targets if not r.finished.is_set()]
        if stuck:
            logger.warning("%d connection(s) still open after %g s of drain; aborting", len(stuck), grace)
            for relay in stuck:
                relay.abort()


__all__ = ["ConnectionRegistry", "RelayHandle", "TrackedConnection", "watchdog"]
