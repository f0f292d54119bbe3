"""The store interface behind rate limits, quotas and concurrency leases.

Every operation is atomic in the store (a Lua script in Redis, a synchronous section in memory).
Keys are built by :func:`store_key`: namespaced by a prefix and the kind of counter, with the
limit's identity and a digest of the user's key inside a Redis Cluster hash tag, so that each
limit's data lives in one slot and no user-supplied text (an IP address, a user id) is stored.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import GatewayError
from .periods import Period

MAX_COUNT = 2**53
"""The largest limit or amount a store counts: Redis's scripts count in Lua's numbers, doubles, exact up to
2**53 (a limit of 10**30 answered ``remaining`` 0; ``reserve`` of 10**29 granted -2**63). A larger one counts
as this many, which no counter reaches: :func:`count`."""
MAX_WINDOW = MAX_COUNT / 1000
"""The longest window, period or lease ttl a store keeps, in seconds (Redis keeps them in milliseconds, as
doubles): a longer one counts as this long (285,000 years): :func:`span`."""


def count(n: int) -> int:
    """``n``, or :data:`MAX_COUNT` when larger (what both stores count with)."""
    try:
        return n if n <= MAX_COUNT else MAX_COUNT
    except TypeError:  # not a number: left for the store to refuse, as it did
        return n


def span(seconds: float) -> float:
    """``seconds``, or :data:`MAX_WINDOW` when longer; raises ``ValueError`` for NaN (no window at all)."""
    if seconds <= MAX_WINDOW:
        return seconds
    if seconds != seconds:
        raise ValueError("a window, period or ttl of NaN seconds")
    return MAX_WINDOW


class StoreUnavailable(GatewayError):
    """The shared store could not be reached or answered with an error (policies fail open or closed)."""


@dataclass(frozen=True)
class Decision:
    """The answer to one attempt to take from a limit.

    Attributes:
        allowed: whether the attempt was admitted (and counted).
        remaining: how many more attempts the limit admits right now.
        retry_after: seconds until an attempt may succeed (0 when ``allowed``).
        resets_at: a quota's: when its period ends (POSIX s, on the store's clock); 0 for other limits.
    """

    allowed: bool
    remaining: int
    retry_after: float = 0.0
    resets_at: float = 0.0

    def __init__(self, allowed: bool, remaining: int, retry_after: float = 0.0, resets_at: float = 0.0) -> None:
        # Frozen all the same: set through the instance's dict at once, where the generated __init__ makes
        # an object.__setattr__ call per field (~3 k of the ~7 k instructions one took, per limited handshake).
        self.__dict__.update(allowed=allowed, remaining=remaining, retry_after=retry_after, resets_at=resets_at)


@dataclass(frozen=True)
class Reservation:
    """What :meth:`Store.reserve` granted from a fixed window's counters.

    Attributes:
        granted: per counter, how much was granted (less than asked when the limit was near).
        window: the index of the window (its start divided by its length, on the store's clock).
        resets_in: seconds until that window ends.
    """

    granted: tuple[int, ...]
    window: int
    resets_in: float


def store_key(prefix: str, kind: str, counter: str, key: str) -> str:
    """``prefix:kind:{counter:digest}``: the braces are the Redis Cluster hash tag."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{prefix}:{kind}:{{{counter}:{digest}}}"


class StoreKeys(dict[str, str]):
    """:func:`store_key` of one limit (its store's prefix, its kind and counter), by the rendered key:
    a client that comes back is not digested again (blake2b and the format were ~7 k instructions a
    handshake, a dict look-up is ~0.3 k). Keys up to :data:`KEPT_KEY_LENGTH` characters are kept, at
    most :data:`KEYS_KEPT` of them (then all are dropped and kept anew): bounded whatever clients send."""

    def __init__(self, prefix: str, kind: str, counter: str) -> None:
        super().__init__()
        self.prefix, self.kind, self.counter = prefix, kind, counter

    def __missing__(self, key: str) -> str:
        made = store_key(self.prefix, self.kind, self.counter, key)
        if len(key) <= KEPT_KEY_LENGTH:
            if len(self) >= KEYS_KEPT:
                self.clear()
            self[key] = made
        return made


KEYS_KEPT = 4096
KEPT_KEY_LENGTH = 256


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class Store(Protocol):
    """Where limits are counted. Methods raise :class:`StoreUnavailable` when the store fails.

    Limits and amounts above :data:`MAX_COUNT` (2**53) count as 2**53, windows and ttls longer than
    :data:`MAX_WINDOW` seconds as that long: what Redis's scripts count exactly (doubles); the in-memory
    store does the same, so that both answer alike.
    """

    prefix: str

    async def hit(self, key: str, limit: int, window: float, member: str) -> Decision:
        """Count one event in a sliding window of ``window`` seconds, if fewer than ``limit`` are in it.

        ``member`` is a unique id for this event (the window keeps one entry per event). Policies
        sharing a counter may give different windows: each counts the events in its own, and the
        events are kept for the longest.
        """
        ...

    async def consume(self, key: str, limit: int, period: Period) -> Decision:
        """Count one event against a quota of ``limit`` per calendar ``period`` (UTC, on the store's clock).

        The counter starts again with each period; the decision's ``resets_at`` is the period's end.
        """
        ...

    async def reserve(self, key: str, window: float, requests: Sequence[tuple[int, int]]) -> Reservation:
        """Take ``amount`` from each of a fixed window's counters, given as ``(amount, limit)`` pairs.

        Windows are ``window`` seconds long, aligned on the store's clock; each counter grants what
        is left when less than ``amount`` is (message rate limits reserve budgets in batches).
        """
        ...

    async def refund(self, key: str, window: int, amounts: Sequence[int]) -> None:
        """Give back to :meth:`reserve`'s counters (in its order) what a worker was granted and did not use.

        Only while ``window`` (a :class:`Reservation`'s) is still the counters' current window: a window
        that rolled started from 0 and nothing is given back; never below 0. A call sent again (a retry)
        gives back once.
        """
        ...

    async def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Decision:
        """Take a lease (valid ``ttl`` seconds unless renewed) if fewer than ``limit`` live ones exist.

        Policies sharing a counter may give different ``ttl``: no call shortens another's leases.
        """
        ...

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        """Extend ``(key, lease)`` leases by ``ttl`` seconds, re-creating any that were gone; returns how
        many were (expired meanwhile, or lost with the store's data: while they were gone, their caps
        counted fewer connections than were open)."""
        ...

    async def release(self, key: str, lease: str) -> None:
        """Give a lease back (no-op if it expired)."""
        ...

    async def aclose(self) -> None:
        """Close connections; the store may not be used afterwards."""
        ...


__all__ = [
    "MAX_COUNT",
    "MAX_WINDOW",
    "Decision",
    "Reservation",
    "Store",
    "StoreKeys",
    "StoreUnavailable",
    "count",
    "retry_after",
    "span",
    "store_key",
]
