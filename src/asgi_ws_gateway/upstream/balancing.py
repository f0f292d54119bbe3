"""Backends of one API: balancing order, failover, and passive health.

Each handshake tries the API's backends in balancing order (round-robin rotation, or fewest
active connections first) until one connects. A backend that fails ``unhealthy_after`` connects in
a row is skipped for ``cooldown`` seconds; when every backend is cooling down, all are tried anyway
(better a likely failure than a certain one). An upstream that *answers* the handshake, even with
a refusal, counts as healthy: it is the application saying no, not the backend being down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..config.apis import ApiConfig
from ..errors import UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from ..log_throttle import OutageLog
from .base import Connector, UpstreamConnection, UpstreamRequest

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Backend:
    """One upstream of an API and what the gateway has seen of it."""

    label: str
    connector: Connector
    index: int
    active: int = 0
    failures: int = 0
    cooling_until: float = field(default=0.0)
    failure_log: OutageLog = field(default_factory=OutageLog, repr=False)
    """Its "failed" lines: while it is down, one now and then with how many, not one per handshake."""

    def healthy(self, now: float) -> bool:
        return now >= self.cooling_until


RequestBuilder = Callable[[Backend], UpstreamRequest]
T = TypeVar("T")
"""Builds the upstream request for a given backend (each backend has its own URL)."""


class BackendPool:
    def __init__(self, api: ApiConfig, backends: Sequence[Backend]) -> None:
        self.api = api
        self.backends = list(backends)
        self._turn = 0

    def order(self, now: float | None = None) -> list[Backend]:
        """Backends to try for the next handshake, best first."""
        now = time.monotonic() if now is None else now
        start = self._turn % len(self.backends)
        self._turn += 1
        rotated = self.backends[start:] + self.backends[:start]
        if self.api.balancing == "least-connections":
            rotated.sort(key=lambda b: b.active)  # stable: ties keep the rotation
        healthy = [b for b in rotated if b.healthy(now)]
        return healthy or rotated

    def record_failure(self, backend: Backend, now: float | None = None) -> None:
        backend.failures += 1
        if backend.failures >= self.api.unhealthy_after:
            now = time.monotonic() if now is None else now
            cooling = backend.cooling_until > now  # tried anyway: every backend was cooling
            backend.cooling_until = now + self.api.cooldown
            if not cooling:  # once as it starts cooling, not per failed handshake while it is down
                logger.warning(
                    "backend %s of API %s failed %d times in a row; skipped for %g s",
                    backend.label, self.api.name, backend.failures, self.api.cooldown,
                )  # fmt: skip

    def record_success(self, backend: Backend) -> None:
        backend.failures = 0
        backend.cooling_until = 0.0

    async def connect(self, build: RequestBuilder) -> tuple[Backend, UpstreamConnection]:
        """Connect to the first backend that answers, failing over on unreachable or timed out ones.

        Raises:
            UpstreamRejected: the backend answered the handshake with a refusal.
            UpstreamUnreachable | UpstreamTimeout: every backend failed; the last failure is raised.
        """
        return await self.open(lambda backend: backend.connector.connect(build(backend)))

    async def open(self, opener: Callable[[Backend], Awaitable[T]]) -> tuple[Backend, T]:
        """:meth:`connect` with ``opener(backend)`` opening the connection (passthrough's raw one).

        Raises:
            UpstreamRejected: the backend answered the handshake with a refusal.
            UpstreamUnreachable | UpstreamTimeout: every backend failed; the last failure is raised.
        """
        last: UpstreamUnreachable | UpstreamTimeout | None = None
        for backend in self.order():
            try:
                connection = await opener(backend)
            except UpstreamRejected:
                self.record_success(backend)
                raise
            except (UpstreamUnreachable, UpstreamTimeout) as exc:
                count = backend.failure_log.event()
                if count:
                    more = f" ({count - 1} more since the last such line)" if count > 1 else ""
                    logger.info("API %s: backend %s failed: %s%s", self.api.name, backend.label, exc.detail, more)
                self.record_failure(backend)
                last = exc
                continue
            self.record_success(backend)
            return backend, connection
        assert last is not None
        raise last


__all__ = ["Backend", "BackendPool"]
