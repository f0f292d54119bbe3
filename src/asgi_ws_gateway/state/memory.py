"""The in-memory store: the embedded default, exact within one process and shared by nothing else.

With several workers each process counts on its own (a limit of N becomes N per worker); use
the Redis store to share limits between workers and hosts.

It holds at most ``max_keys`` (``store.max_keys``) live keys per counter (each limit policy, or each
``counter:`` name, and kind): a limit keyed by a value the client chooses gets a key per new value,
kept for its window or the quota's whole period, and a process must not grow with them. Past the
bound a new key is a store failure (:class:`StoreUnavailable`: the policy fails open or closed as
configured, with its WARNING and ``ws_gateway.policy.unchecked``); keys already there go on
counting. The bound is per counter so that clients filling one limit with values of their choosing
cannot make another API's limit, keyed by a verified identity, refuse its new users.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence

from ..config import StoreConfig
from .base import Decision, Reservation, StoreUnavailable

_SWEEP_EVERY = 1024  # operations between sweeps of expired entries
MAX_KEYS: int = StoreConfig.model_fields["max_keys"].default
"""Live keys of one kind the store holds, unless told otherwise (``store.max_keys``; a few hundred bytes each)."""


class MemoryState:
    """Sliding windows, quota counters and leases in dictionaries (one event loop, no locking).

    Args:
        prefix: key namespace (kept for symmetry with the Redis store).
        clock: seconds since the epoch; ``time.time`` by default (tests pass a fake clock).
    """

    def __init__(
        self, prefix: str = "asgi-ws-gw", clock: Callable[[], float] = time.time, max_keys: int = MAX_KEYS
    ) -> None:
        self.prefix = prefix
        self.clock = clock
        self.max_keys = max_keys
        self._windows: dict[str, tuple[float, deque[float]]] = {}
        self._counters: dict[str, tuple[float, int]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._reserved: dict[str, tuple[int, list[int], float]] = {}  # key -> (window, counts, end)
        self._keys: Counter[tuple[str, str]] = Counter()  # (table, counter) -> its live keys, at most max_keys
        self._ops = 0

    async def hit(self, key: str, limit: int, window: float, member: str) -> Decision:
        now = self._tick()
        if key not in self._windows:
            self._room("_windows", key, now)
        _, events = self._windows.get(key, (0.0, deque()))
        while events and events[0] <= now - window:
            events.popleft()
        if len(events) < limit:
            events.append(now)
            self._windows[key] = (now + window, events)
            return Decision(True, limit - len(events))
        return Decision(False, 0, max(0.0, events[0] + window - now))

    async def consume(self, key: str, limit: int, expires_at: float) -> Decision:
        now = self._tick()
        if key not in self._counters:
            self._room("_counters", key, now)
        ends, count = self._counters.get(key, (expires_at, 0))
        if ends <= now:
            count = 0
        if count >= limit:
            return Decision(False, 0, max(0.0, expires_at - now))
        self._counters[key] = (expires_at, count + 1)
        return Decision(True, limit - count - 1)

    async def reserve(self, key: str, window: float, requests: Sequence[tuple[int, int]]) -> Reservation:
        now = self._tick()
        index = math.floor(now / window)
        if key not in self._reserved:
            self._room("_reserved", key, now)
        stored = self._reserved.get(key)
        counts = stored[1] if stored is not None and stored[0] == index else [0] * len(requests)
        granted = []
        for i, (amount, limit) in enumerate(requests):
            grant = max(0, min(amount, limit - counts[i]))
            counts[i] += grant
            granted.append(grant)
        end = (index + 1) * window
        self._reserved[key] = (index, counts, end)
        return Reservation(tuple(granted), index, max(0.0, end - now))

    async def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Decision:
        now = self._tick()
        if key not in self._leases:
            self._room("_leases", key, now)
        leases = self._live(key, now)
        if lease not in leases and len(leases) >= limit:
            return Decision(False, 0, max(0.0, min(leases.values()) - now))
        leases[lease] = now + ttl
        self._leases[key] = leases
        return Decision(True, limit - len(leases))

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        now = self.clock()
        gone = 0
        for key, lease in leases:
            if key not in self._leases:  # expired meanwhile: back, and counted (never refused: it is held)
                self._keys[("_leases", _counter(key))] += 1
            held = self._leases.setdefault(key, {})
            if held.get(lease, now) <= now:  # absent, or expired: acquires no longer counted it
                gone += 1
            held[lease] = now + ttl
        return gone

    async def release(self, key: str, lease: str) -> None:
        leases = self._leases.get(key)
        if leases is not None:
            leases.pop(lease, None)
            if not leases:
                del self._leases[key]
                self._keys[("_leases", _counter(key))] -= 1

    async def aclose(self) -> None:
        return None

    def leases(self, key: str) -> int:
        """Live leases under ``key`` (for tests and diagnostics)."""
        return len(self._live(key, self.clock()))

    def _live(self, key: str, now: float) -> dict[str, float]:
        leases = self._leases.get(key, {})
        expired = [lease for lease, until in leases.items() if until <= now]
        for lease in expired:
            del leases[lease]
        return leases

    def _tick(self) -> float:
        now = self.clock()
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        return now

    def _room(self, table: str, key: str, now: float) -> None:
        """Count ``key``, new in the table named ``table``, against its counter's bound, or raise: the
        expired go first."""
        slot = (table, _counter(key))
        if self._keys[slot] >= self.max_keys:
            self._sweep(now)
            if self._keys[slot] >= self.max_keys:
                raise StoreUnavailable(
                    f"the in-memory store holds {self.max_keys} live keys of this limit, its bound: a limit keyed "
                    "by a value clients choose (a header, query parameter or cookie) makes a key per value; key it "
                    "by a verified identity, or use the Redis store"
                )
        self._keys[slot] += 1

    def _sweep(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        self._counters = {k: v for k, v in self._counters.items() if v[0] > now}
        self._reserved = {k: v for k, v in self._reserved.items() if v[2] > now}
        self._leases = {k: live for k in list(self._leases) if (live := self._live(k, now))}
        self._keys = Counter(
            (table, _counter(key))
            for table in ("_windows", "_counters", "_reserved", "_leases")
            for key in getattr(self, table)
        )


def _counter(key: str) -> str:
    """The counter a key of :func:`~.base.store_key` belongs to: all but its value's digest."""
    return key.rpartition(":")[0]


__all__ = ["MemoryState"]
