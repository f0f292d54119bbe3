"""A connection's life beyond its messages: idle timeout, maximum lifetime, and draining.

The watchdog costs nothing per message: it samples the relay's message counters a few times per
idle period instead of stamping a clock on every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .relay import Relay

logger = logging.getLogger(__name__)

_IDLE_CHECKS = 4  # samples per idle period: an idle connection is closed within 1.25 periods


async def watchdog(relay: Relay, *, idle_timeout: float | None, max_lifetime: float | None) -> None:
    """Close ``relay`` with 1001 when idle for ``idle_timeout`` or older than ``max_lifetime`` seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + max_lifetime if max_lifetime is not None else float("inf")
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
        await asyncio.sleep(max(0.0, min(step, deadline - now)))


class ConnectionRegistry:
    """The open connections of one gateway, so they can be drained together."""

    def __init__(self) -> None:
        self._open: set[Relay] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, relay: Relay) -> None:
        self._open.add(relay)
        self._empty.clear()

    def remove(self, relay: Relay) -> None:
        self._open.discard(relay)
        if not self._open:
            self._empty.set()

    async def drain(self, code: int, reason: str, grace: float) -> None:
        """Close every open connection with ``code``; abort those still open after ``grace`` seconds."""
        if not self._open:
            return
        logger.info("draining %d WebSocket connection(s) with %d", len(self._open), code)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(r.close(code, reason, code, reason) for r in list(self._open)))
                await self._empty.wait()
        if self._open:
            logger.warning("%d connection(s) still open after %g s of drain; aborting", len(self._open), grace)
            for relay in list(self._open):
                relay.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._empty.wait()


__all__ = ["ConnectionRegistry", "watchdog"]
