"""Keeping concurrency leases alive while their connections are open, and giving back every one.

A lease expires ``ttl`` seconds after it was last renewed. The keeper renews every lease this
process holds every ``ttl / 3`` seconds, in one batch; when the process dies, renewals stop and
its leases expire, so a crashed worker's connections stop counting within ``ttl`` seconds.

After a failed renewal the keeper tries again every ``retry`` seconds (default 1) instead: a
failed-over Redis may have lost or expired these leases, and until they are back the cap
under-counts open connections.

A lease whose acquire has no known outcome (the store timed out or failed, or the call was
cancelled) may exist in the store all the same: Redis runs a script as soon as it is sent, and its
answer may just be late. Such a lease is never renewed, and is released in the background at once
(the handshake's answer does not wait for a slow store) and again when its connection ends (a
request late in reaching the store may have made it after the first release). So is a lease whose
release failed, or that was released while a renewal that may re-create it was in flight. The
background releases retry every ``retry`` seconds until each lease would have expired anyway.

On closing (a shutdown), the releases still pending are tried once more; if the store answers
"unavailable" (after a failure the Redis store answers so at once for its ``retry_interval``, 1 s),
they are tried again every ``CLOSE_PAUSE`` seconds for at most ``CLOSE_RETRY`` seconds: a shutdown
in that second released nothing, and the leases of every connection it closed stayed counted until
``lease_ttl``. The keepers of one store wait so once per ``CLOSE_RETRY``: with Redis down, a second
keeper tries once and gives up, and a shutdown does not wait for each policy in turn.

A keeper a reload closed with leases still held (``keep_held``) is no longer among the policies serving:
:func:`close_retired`, on closing its store's policies, closes it the same way. A shutdown closed the
serving keepers only, and the releases a replaced keeper had pending (the store failed just before)
were never tried again: the leases of the connections admitted before the reload stayed counted until
``lease_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref

from ..log_throttle import OutageLog
from ..redis_client import stop_task
from .base import Decision, Store, StoreUnavailable

logger = logging.getLogger(__name__)

MAX_ORPHANS = 10_000
"""Leases waiting for a background release, at most, per policy; past it the oldest are left to expire."""
CALL_TIMEOUT = 5.0
"""Seconds one background release may take (the Redis store gives up sooner, at its ``timeout``)."""
CLOSE_RETRY = 2.0
"""Seconds :meth:`LeaseKeeper.aclose` goes on trying a store that answers "unavailable" (its retry
window after a failure: 1 s for the Redis store), at most."""
CLOSE_PAUSE = 0.1
"""Seconds between those tries (each answered at once while the store waits out its window)."""

_retired: weakref.WeakSet[LeaseKeeper] = weakref.WeakSet()
"""The keepers closed with leases still held (a reload), alive while they have work, for :func:`close_retired`."""
_waited_in_vain: weakref.WeakKeyDictionary[Store, float] = weakref.WeakKeyDictionary()
"""The stores a closing keeper waited for in vain, and when (the loop's clock): another does not wait again."""


class LeaseKeeper:
    """Acquires, renews and releases the leases of one ``limit-concurrency`` policy.

    The renewal and release tasks run only while they have work, on the event loop that acquired.

    Args:
        store: where the leases are counted.
        ttl: seconds a lease outlives its last renewal (renewed every ``ttl / 3``).
        retry: seconds between renewals, and between background releases, while the store fails
            (default 1, at most ``ttl / 3``).
    """

    def __init__(self, store: Store, ttl: float, *, retry: float = 1.0) -> None:
        self.store = store
        self.ttl = ttl
        self.retry = min(retry, ttl / 3)
        self._held: dict[str, str] = {}  # lease -> key: acquired, renewed
        self._unknown: dict[str, str] = {}  # lease -> key: acquiring, or its outcome unknown; never renewed
        self._orphans: dict[str, tuple[str, float]] = {}  # lease -> (key, give up at): to release in the background
        self._task: asyncio.Task[None] | None = None  # renewals
        self._releaser: asyncio.Task[None] | None = None  # background releases
        self._dropped = 0  # orphans left to expire past MAX_ORPHANS, since the last line
        self._releases_failing = False  # a line told that releases fail, and none succeeded since
        self._gone_lines = OutageLog()  # leases found gone at renewal: one line, then one per interval
        self._gone_since_line = 0

    def __len__(self) -> int:
        return len(self._held)

    async def acquire(self, key: str, lease: str, limit: int) -> Decision:
        """Take a lease; raises :class:`StoreUnavailable` when the store fails.

        Safe to cancel: whenever the outcome is unknown (the store failed, or the call was
        cancelled) the lease is released in the background, and again by :meth:`release`.
        """
        self._unknown[lease] = key
        try:
            decision = await self.store.acquire(key, lease, limit, self.ttl)
        except BaseException:
            self._orphan(key, lease)  # Redis may have run the script: its answer was not heard
            raise
        if self._unknown.pop(lease, None) is None:  # released while the call was in flight
            self._orphan(key, lease)
        elif decision.allowed:
            self._held[lease] = key
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._renew_forever())
        return decision

    async def release(self, lease: str) -> None:
        """Give the lease back, if taken or maybe taken; a failure is retried in the background.

        A lease of unknown outcome is released in the background: this returns at once.
        """
        key = self._unknown.pop(lease, None)
        if key is not None:
            self._orphan(key, lease)
            return
        key = self._held.pop(lease, None)
        if key is None:
            return
        if not self._held and self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            await self.store.release(key, lease)
        except StoreUnavailable as exc:
            self._orphan(key, lease)
            self._release_failed(exc)  # now, not from the background task: before the connection's access line
        except BaseException:  # cancelled (or a custom store's bug): the lease may still be there
            self._orphan(key, lease)
            raise

    async def aclose(self, *, keep_held: bool = True) -> None:
        """Try the pending background releases once (bounded), then stop the background work.

        Args:
            keep_held: go on renewing the leases still held (default) until :meth:`release` gives
                back the last one, when the renewals stop by themselves: a configuration reload
                closes the policies it replaces, and the connections admitted under them stay
                open, counting until they end. False (shutting down): stop renewing too; leases
                still held then expire within ``ttl``.

        A later :meth:`release` still gives its lease back (in the background if the store fails).
        """
        if keep_held and self._held:
            _retired.add(self)  # closed for good with the store's serving policies (close_retired)
        else:
            _retired.discard(self)
            await _cancel(self._task)  # first: a renewal cut short may queue leases to release
            self._task = None
        await _cancel(self._releaser)
        self._releaser = None
        self._releases_failing = False  # what is pending is tried below, and told of there if it fails
        if not self._orphans:
            return
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                failure = await self._release_orphans()
                if isinstance(failure, StoreUnavailable) and self._may_wait():
                    failure = await self._release_orphans_within(CLOSE_RETRY)
        except TimeoutError:
            failure = TimeoutError()
        if failure is not None:
            logger.warning("could not release %d concurrency lease(s) on closing (%s); each expires within %g s",
                           len(self._orphans), _describe(failure), self.ttl)  # fmt: skip
            self._orphans.clear()

    def _may_wait(self) -> bool:
        """Whether this keeper may wait for its store on closing: not if another waited for it in vain lately."""
        with contextlib.suppress(TypeError):  # a store that takes no weak reference: waited for each time
            waited = _waited_in_vain.get(self.store)
            return waited is None or self._now() - waited > CLOSE_RETRY
        return True

    async def _release_orphans_within(self, seconds: float) -> Exception | None:
        """Passes over the orphans every ``CLOSE_PAUSE`` s until one succeeds or ``seconds`` passed; the last
        failure, if none did."""
        deadline = self._now() + seconds
        while True:
            await asyncio.sleep(CLOSE_PAUSE)
            failure = await self._release_orphans()
            if failure is None or not self._orphans:
                return None
            if self._now() >= deadline:
                with contextlib.suppress(TypeError):
                    _waited_in_vain[self.store] = self._now()
                return failure

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _orphan(self, key: str, lease: str) -> None:
        """Release ``lease`` in the background until it would have expired by itself."""
        self._orphans.pop(lease, None)  # to the end: the oldest go first past the bound
        self._orphans[lease] = (key, self._now() + self.ttl)
        while len(self._orphans) > MAX_ORPHANS:
            del self._orphans[next(iter(self._orphans))]
            self._dropped += 1
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.get_running_loop().create_task(self._release_forever())

    async def _release_orphans(self) -> Exception | None:
        """One pass over the orphans, oldest first; the store's failure that ended it early (the rest kept)."""
        for lease, (key, give_up_at) in list(self._orphans.items()):
            if self._orphans.get(lease) != (key, give_up_at):
                continue  # queued again meanwhile: released later in the pass order
            if give_up_at <= self._now():
                del self._orphans[lease]  # expired in the store by now
                continue
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    await self.store.release(key, lease)
            except Exception as exc:  # StoreUnavailable, TimeoutError, or a custom store's bug: retried alike
                return exc
            if self._orphans.get(lease) == (key, give_up_at):
                del self._orphans[lease]
        return None

    async def _release_forever(self) -> None:
        while self._orphans:
            if self._dropped:
                logger.warning("%d concurrency lease(s) left to expire unreleased (within %g s): more than %d "
                               "were waiting to be released", self._dropped, self.ttl, MAX_ORPHANS)  # fmt: skip
                self._dropped = 0
            failure = await self._release_orphans()
            if failure is None:
                if self._releases_failing:
                    logger.info("released concurrency leases again")
                self._releases_failing = False
                continue
            self._release_failed(failure)
            await asyncio.sleep(self.retry)

    def _release_failed(self, failure: Exception) -> None:
        """Releases fail: one line as it starts, whether a connection's release or a background pass met it
        first; not one per retry or per connection."""
        if self._releases_failing:
            return
        self._releases_failing = True
        logger.warning("could not release %d concurrency lease(s) (%s); retrying every %g s until each expires "
                       "(within %g s)", len(self._orphans), _describe(failure), self.retry, self.ttl)  # fmt: skip

    def _gone(self, count: int) -> None:
        """``count`` held leases were missing from the store when renewed, and are back: say so.

        Their caps counted fewer connections than were open, and may have admitted more than their
        limit: a Redis restarted without persistence, evicting keys (``maxmemory-policy`` other than
        ``noeviction``), failed over to a replica that lacked them, or renewals later than ``ttl``.
        Nothing else tells: the store answered every call.
        """
        if count <= 0:
            return
        self._gone_since_line += count
        if self._gone_lines.event():
            logger.warning(
                "%d concurrency lease(s) were gone from the store when renewed (a store restarted without "
                "persistence, evicting keys or failed over; or renewals late): until now limit-concurrency "
                "counted fewer open connections and may have admitted more than its limit",
                self._gone_since_line,
            )
            self._gone_since_line = 0

    async def _renew_forever(self) -> None:
        failing = False
        # Not once another renewer replaced this one: its cancellation by release() may have been lost (on
        # Python 3.11 a store call's asyncio.wait_for drops one arriving as the call completes), and a
        # lease acquired meanwhile started another: each held lease was renewed twice as often, for ever.
        while self._held and self._task is asyncio.current_task():
            await asyncio.sleep(self.retry if failing else self.ttl / 3)
            batch = list(self._held.items())
            try:
                gone = await self.store.renew([(key, lease) for lease, key in batch], self.ttl)
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
                # One released while the renewal was in flight was put back, not lost.
                self._gone(gone - sum(1 for lease, _ in batch if lease not in self._held))
            finally:
                # Released while the renewal was in flight: the renewal may have put it back.
                for lease, key in batch:
                    if lease not in self._held:
                        self._orphan(key, lease)


async def close_retired(store: Store) -> None:
    """Close for good (``keep_held=False``) the keepers of ``store`` a reload closed with leases still held,
    when the policies serving on ``store`` are closed for good (a shutdown, a store replaced): their pending
    releases are tried on closing as the serving keepers' are."""
    for keeper in [keeper for keeper in _retired if keeper.store is store]:
        await keeper.aclose(keep_held=False)


def _describe(failure: Exception) -> str:
    return str(failure) if isinstance(failure, StoreUnavailable) else type(failure).__name__


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:  # cancelled until it ends: one cancellation, lost in a Redis send, left it running
        await stop_task(task)


__all__ = ["LeaseKeeper", "close_retired"]
