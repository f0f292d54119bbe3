"""Keeping concurrency leases alive while their connections are open.

A lease expires ``ttl`` seconds after it was last renewed. The keeper renews every lease this
process holds every ``ttl / 3`` seconds, in one batch; when the process dies, renewals stop and
its leases expire, so a crashed worker's connections stop counting within ``ttl`` seconds.

After a failed renewal the keeper tries again every ``retry`` seconds (default 1) instead: a
failed-over Redis may have lost or expired these leases, and until they are back the cap
under-counts open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .base import Decision, OutageLog, Store, StoreUnavailable

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Acquires, renews and releases the leases of one ``limit-concurrency`` policy.

    The renewal task runs only while leases are held, on the event loop that acquired them.

    Args:
        store: where the leases are counted.
        ttl: seconds a lease outlives its last renewal (renewed every ``ttl / 3``).
        retry: seconds between renewals while the store fails (default 1, at most ``ttl / 3``).
    """

    def __init__(self, store: Store, ttl: float, *, retry: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self.retry = min(retry, ttl / 3)
        self._held: dict[str, str] = {}  # lease -> key
        self._task: asyncio.Task[None] | None = None
        self._release_failures = OutageLog()  # connections closing through an outage: not a line each

    def __len__(self) -> int:
        return len(self._held)

    async def acquire(self, key: str, lease: str, limit: int) -> Decision:
        """Take a lease; raises :class:`StoreUnavailable` when the store fails."""
        decision = await self.store.acquire(key, lease, limit, self.ttl)
        if decision.allowed:
            self._held[lease] = key
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._renew_forever())
        return decision

    async def release(self, lease: str) -> None:
        """Give the lease back; a store failure is logged (the lease then expires on its own)."""
        key = self._held.pop(lease, None)
        if key is None:
            return
        try:
            await self.store.release(key, lease)
        except StoreUnavailable:
            count = self._release_failures.event()
            if count:
                logger.warning("could not release %d concurrency lease(s) since the last such line; each expires "
                               "within %g s", count, self.ttl)  # fmt: skip
        if not self._held and self._task is not None:
            self._task.cancel()
            self._task = None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _renew_forever(self) -> None:
        failing = False
        while self._held:
            await asyncio.sleep(self.retry if failing else self.ttl / 3)
            try:
                await self.store.renew(list(((key, lease) for lease, key in self._held.items())), self.ttl)
            except StoreUnavailable:
                if not failing:  # once per outage, not once per retry
                    logger.warning(
                        "could not renew %d concurrency lease(s); retrying every %g s", len(self._held), self.retry
                    )
                failing = True
            else:
                if failing:
                    logger.info("renewed %d concurrency lease(s) again", len(self._held))
                failing = False


__all__ = ["LeaseKeeper"]
