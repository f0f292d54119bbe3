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

No operation costs time in proportion to the keys held. Each counter's keys are kept in order of
expiry (:class:`_Table`), so a new key at the bound drops only the expired keys at the front of its
own counter, and each operation drops at most ``SWEEP_BUDGET`` other expired keys of each table.
(Before, a new key at the bound swept every table of every limit: 38 ms of event loop per handshake
with a fresh value at 100,000 keys, and every 1,024th operation paused as long.)

A key shared by several policies (``counter:``) lives as long as the longest of them needs it: its
expiry only ever extends, and a rate log keeps its events for the longest window counting in it.

Windows, reservations and leases are intervals: they run on the monotonic clock. Only quotas, whose
periods are calendar ones, read the wall clock. (On the wall clock, set back an hour it kept an
exhausted rate limit refusing and dead leases counted for the hour; set forward, it emptied every
window and lease at once, a fresh budget for every client.)
"""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from ..config.settings import StoreConfig
from .base import Decision, Reservation, StoreUnavailable, span
from .base import count as counted
from .failures import store_failed
from .periods import Period, period_bounds

SWEEP_BUDGET = 8
"""Expired keys each operation drops, at most, in each table besides those of a full counter."""
MAX_KEYS: int = StoreConfig.model_fields["max_keys"].default
"""Live keys of one kind the store holds, unless told otherwise (``store.max_keys``; a few hundred bytes each)."""


class _Entry:
    """A key's data, live until ``expires``; ``order`` is what its expiry is computed from (a window's
    length, a lease's ttl, a quota's period): see :class:`_Table`."""

    __slots__ = ("expires", "order")

    def __init__(self, expires: float, order: Hashable) -> None:
        self.expires = expires
        self.order = order


class _Window(_Entry):
    __slots__ = ("events", "keep")

    def __init__(self, expires: float, keep: float) -> None:
        super().__init__(expires, keep)
        self.events: deque[float] = deque()
        self.keep = keep  # the longest window counting in this log: events are kept that long


class _Quota(_Entry):
    __slots__ = ("count", "start")

    def __init__(self, expires: float, period: Period, start: float) -> None:
        super().__init__(expires, period)
        self.start = start
        self.count = 0


class _Reserved(_Entry):
    __slots__ = ("counts", "index")

    def __init__(self, expires: float, window: float, index: int) -> None:
        super().__init__(expires, window)
        self.index = index
        self.counts: list[int] = []


class _Leases(_Entry):
    __slots__ = ("held",)

    def __init__(self, expires: float, ttl: float) -> None:
        super().__init__(expires, ttl)
        self.held: dict[str, float] = {}  # lease -> expiry


E = TypeVar("E", bound=_Entry)


class _Table(Generic[E]):
    """One kind's keys, at most ``max_keys`` per counter, each counter's in order of expiry.

    A counter's keys are queued by ``order``: an entry of order ``d`` expires ``d`` after its last
    update (or at its period's end), so the entry updated last expires last, and goes to the end of
    its queue. The expired are at the front of each queue: found without a scan. An expiry only ever
    extends (a counter shared by policies with a shorter and a longer window, or lease ttl, keeps
    what the longer needs).
    """

    def __init__(self, max_keys: int, operation: str) -> None:
        self.max_keys = max_keys
        self.operation = operation  # the store's call that adds its keys: how a refusal is counted
        self.entries: dict[str, E] = {}
        self._queues: dict[str, dict[Hashable, OrderedDict[str, E]]] = {}  # counter -> order -> queue
        self._sizes: dict[str, int] = {}  # counter -> its keys (live or not yet dropped)
        self._round: list[tuple[str, Hashable]] = []  # the queues the sweep has yet to visit, last first

    def add(self, key: str, entry: E, now: float, *, bounded: bool = True) -> None:
        """Hold ``entry`` for the new ``key``; raises :class:`StoreUnavailable` when its counter is full
        (``bounded``) of keys that have not expired."""
        counter = _counter(key)
        size = self._sizes.get(counter, 0)
        if bounded and size >= self.max_keys:
            self._drop_expired(counter, now, keep=self.max_keys - 1)
            size = self._sizes.get(counter, 0)
            if size >= self.max_keys:
                store_failed("memory", self.operation, "full")
                raise StoreUnavailable(
                    f"the in-memory store holds {self.max_keys} live keys of this limit, its bound: a limit keyed "
                    "by a value clients choose (a header, query parameter or cookie) makes a key per value; key it "
                    "by a verified identity, or use the Redis store"
                )
        self.entries[key] = entry
        self._sizes[counter] = size + 1
        self._queues.setdefault(counter, {}).setdefault(entry.order, OrderedDict())[key] = entry

    def extend(self, key: str, entry: E, expires: float, order: Hashable) -> None:
        """``entry`` (held under ``key``) lives until ``expires``, unless it lives longer already."""
        if expires <= entry.expires:
            return
        counter = _counter(key)
        if order == entry.order:
            self._queues[counter][order].move_to_end(key)
        else:
            self._unqueue(counter, entry.order, key)
            self._queues[counter].setdefault(order, OrderedDict())[key] = entry
        entry.expires, entry.order = expires, order

    def remove(self, key: str) -> None:
        entry = self.entries.pop(key)
        counter = _counter(key)
        self._unqueue(counter, entry.order, key)
        self._gone(counter, 1)

    def sweep(self, now: float) -> None:
        """Drop up to ``SWEEP_BUDGET`` expired keys from one queue; the next call, the next queue once
        this one has none left (the order of a round is built once per round: no scan of the keys)."""
        if not self._round:
            self._round = [(counter, order) for counter, queues in self._queues.items() for order in queues]
            if not self._round:
                return
        counter, order = self._round[-1]
        if self._drop_front(counter, order, now, SWEEP_BUDGET) < SWEEP_BUDGET:
            self._round.pop()  # nothing more expired there: the next queue, next time

    def _drop_expired(self, counter: str, now: float, *, keep: int) -> None:
        """Drop the counter's expired keys until it holds at most ``keep``."""
        for order in list(self._queues.get(counter, ())):
            excess = self._sizes.get(counter, 0) - keep
            if excess <= 0:
                return
            self._drop_front(counter, order, now, excess)

    def _drop_front(self, counter: str, order: Hashable, now: float, most: int) -> int:
        """Drop up to ``most`` expired keys at the front of a queue; how many were."""
        queue = self._queues.get(counter, {}).get(order)
        if queue is None:
            return 0
        dropped = 0
        while dropped < most and queue:
            key, entry = next(iter(queue.items()))
            if entry.expires > now:
                break
            del queue[key]
            del self.entries[key]
            dropped += 1
        if dropped:
            if not queue:
                del self._queues[counter][order]
            self._gone(counter, dropped)
        return dropped

    def _unqueue(self, counter: str, order: Hashable, key: str) -> None:
        queues = self._queues[counter]
        queue = queues[order]
        del queue[key]
        if not queue:
            del queues[order]

    def _gone(self, counter: str, count: int) -> None:
        """``count`` keys of ``counter`` are no longer held; the counter is forgotten when none is."""
        self._sizes[counter] -= count
        if not self._sizes[counter]:
            del self._sizes[counter]
            del self._queues[counter]


class MemoryState:
    """Sliding windows, quota counters and leases in dictionaries (one event loop, no locking).

    Args:
        prefix: key namespace (kept for symmetry with the Redis store).
        clock: seconds since the epoch, for quotas' calendar periods; ``time.time`` by default (tests
            pass a fake clock).
        max_keys: live keys of each counter and kind, at most (default ``MAX_KEYS``).
        monotonic: monotonic seconds, for windows, reservations and leases; ``time.monotonic`` by
            default (tests pass a fake clock).
    """

    def __init__(
        self,
        prefix: str = "asgi-ws-gw",
        clock: Callable[[], float] = time.time,
        max_keys: int = MAX_KEYS,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix = prefix
        self.clock = clock
        self.monotonic = monotonic
        self.max_keys = max_keys
        self._windows: _Table[_Window] = _Table(max_keys, "hit")
        self._quotas: _Table[_Quota] = _Table(max_keys, "consume")
        self._reserved: _Table[_Reserved] = _Table(max_keys, "reserve")
        self._leases: _Table[_Leases] = _Table(max_keys, "acquire")

    async def hit(self, key: str, limit: int, window: float, member: str) -> Decision:
        limit, window = counted(limit), span(window)  # as Redis counts them (see Store)
        now = self._tick()
        entry = self._windows.entries.get(key)
        if entry is None:
            entry = _Window(now + window, window)
            self._windows.add(key, entry, now)
        events = entry.events
        keep = entry.keep = max(entry.keep, window)
        while events and events[0] <= now - keep:
            events.popleft()
        # Events in this policy's window: all of them, unless a longer window counts here too.
        n = len(events) if keep == window else len(events) - bisect.bisect_right(events, now - window)
        if n < limit:
            events.append(now)
            self._windows.extend(key, entry, now + keep, keep)
            return Decision(True, limit - n - 1)
        self._windows.extend(key, entry, now + keep, keep)  # a longer window than before keeps the log longer
        # Room when the oldest of the events past the limit leaves the window.
        return Decision(False, 0, max(0.0, events[len(events) - limit] + window - now))

    async def consume(self, key: str, limit: int, period: Period) -> Decision:
        limit = counted(limit)
        self._tick()
        now = self.clock()  # a calendar period's: the wall clock
        start, end = (t.timestamp() for t in period_bounds(period, now))
        entry = self._quotas.entries.get(key)
        count = entry.count if entry is not None and entry.start == start else 0
        if count >= limit:
            return Decision(False, 0, max(0.0, end - now), end)
        if entry is None:
            entry = _Quota(end, period, start)
            self._quotas.add(key, entry, now)
        entry.start, entry.count = start, count + 1
        self._quotas.extend(key, entry, end, period)
        return Decision(True, limit - count - 1, 0.0, end)

    async def reserve(self, key: str, window: float, requests: Sequence[tuple[int, int]]) -> Reservation:
        window, requests = span(window), [(counted(amount), counted(limit)) for amount, limit in requests]
        now = self._tick()
        index = math.floor(now / window)
        end = (index + 1) * window
        entry = self._reserved.entries.get(key)
        if entry is None:
            entry = _Reserved(end, window, index)
            self._reserved.add(key, entry, now)
        if entry.index != index:
            entry.index, entry.counts = index, []
        counts = entry.counts
        counts += [0] * (len(requests) - len(counts))
        granted = []
        for i, (amount, limit) in enumerate(requests):
            grant = max(0, min(amount, limit - counts[i]))
            counts[i] += grant
            granted.append(grant)
        self._reserved.extend(key, entry, end, window)
        return Reservation(tuple(granted), index, max(0.0, end - now))

    async def refund(self, key: str, window: int, amounts: Sequence[int]) -> None:
        entry = self._reserved.entries.get(key)
        if entry is None or entry.index != window:
            return
        counts = entry.counts
        for i, amount in enumerate(amounts[: len(counts)]):
            counts[i] = max(0, counts[i] - counted(amount))

    async def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Decision:
        limit, ttl = counted(limit), span(ttl)
        now = self._tick()
        entry = self._leases.entries.get(key)
        held = _live(entry, now) if entry is not None else {}
        if lease not in held and len(held) >= limit:
            return Decision(False, 0, max(0.0, min(held.values()) - now))
        if entry is None:
            entry = _Leases(now + ttl, ttl)
            self._leases.add(key, entry, now)
        entry.held[lease] = now + ttl
        self._leases.extend(key, entry, now + ttl, ttl)
        return Decision(True, limit - len(entry.held))

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        ttl = span(ttl)
        now = self.monotonic()
        gone = 0
        for key, lease in leases:
            entry = self._leases.entries.get(key)
            if entry is None:  # expired meanwhile: back, and counted (never refused: it is held)
                entry = _Leases(now + ttl, ttl)
                self._leases.add(key, entry, now, bounded=False)
            if entry.held.get(lease, now) <= now:  # absent, or expired: acquires no longer counted it
                gone += 1
            entry.held[lease] = now + ttl
            self._leases.extend(key, entry, now + ttl, ttl)
        return gone

    async def release(self, key: str, lease: str) -> None:
        entry = self._leases.entries.get(key)
        if entry is not None:
            entry.held.pop(lease, None)
            if not _live(entry, self.monotonic()):
                self._leases.remove(key)

    async def aclose(self) -> None:
        return None

    def leases(self, key: str) -> int:
        """Live leases under ``key`` (for tests and diagnostics)."""
        entry = self._leases.entries.get(key)
        return len(_live(entry, self.monotonic())) if entry is not None else 0

    def keys(self) -> int:
        """Keys held, expired or not yet dropped included (for tests and diagnostics)."""
        return sum(len(t.entries) for t in (self._windows, self._quotas, self._reserved, self._leases))

    def _tick(self) -> float:
        """Sweep a little of each table; the monotonic clock's time."""
        now = self.monotonic()
        self._windows.sweep(now)
        self._quotas.sweep(self.clock())  # a quota expires with its calendar period: a wall time
        self._reserved.sweep(now)
        self._leases.sweep(now)
        return now


def _live(entry: _Leases, now: float) -> dict[str, float]:
    """The entry's leases that have not expired (the others dropped)."""
    held = entry.held
    expired = [lease for lease, until in held.items() if until <= now]
    for lease in expired:
        del held[lease]
    return held


def _counter(key: str) -> str:
    """The counter a key of :func:`~.base.store_key` belongs to: all but its value's digest."""
    return key.rpartition(":")[0]


__all__ = ["MemoryState"]
