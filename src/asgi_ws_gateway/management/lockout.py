"""Refused admin credentials per client: past a limit, the client waits (429), right token or not.

The admin token guards everything the management API can do, and nothing slowed down guessing it:
an address could try thousands of tokens a second. Past ``limit`` refusals within ``window`` seconds
the client is answered ``429 Too Many Requests`` with ``Retry-After`` until the oldest refusal
leaves the window. A right token from that client waits too — an attacker must not learn that a
guess was right.

The client is what the gateway decides it is (the TCP peer, or what ``trusted_proxies`` report),
keyed as ``{client.network}`` is: an IPv4 address by itself, an IPv6 address by its /64 (a host
holds a /64 at least and picks any address in it). A loopback client is keyed by the local user
owning its socket instead, where the kernel says (:mod:`.local_user`): another local user neither
locks the administrator out nor takes a fresh key per address of 127.0.0.0/8. The trade-off of
keying by address remains elsewhere: whoever shares the administrator's address (a NAT, a /64, a
proxy that is not in ``trusted_proxies``) can lock the administrator out for up to ``window``
seconds by sending wrong tokens; the log says which address and for how long.

The clients kept are bounded (``addresses``). To make room, the least recently refused client that
is not locked is forgotten first; a locked one only when every client kept is locked, and then the
one locked first (whose lock ends soonest). Unlocking an address early thus takes ``addresses``
other addresses locked at once (300,000 refusals within a minute by default), a rate those addresses
could guess at anyway.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable

from ..forwarded import client_network
from ..redact import printable

logger = logging.getLogger(__name__)


class Lockout:
    """Refusals by client (an IPv6 address by its /64) in a sliding window; the clients kept are bounded.

    Args:
        limit: refusals a client may have within ``window`` (default 30).
        window: seconds (default 60).
        addresses: clients kept at most (default 10,000); locked ones are forgotten last.
    """

    def __init__(
        self,
        limit: int = 30,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        addresses: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._addresses = addresses
        # Below the limit, least recently refused first; at the limit, locked first first.
        self._counting: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._locked: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._full_warned = False

    def __len__(self) -> int:
        return len(self._counting) + len(self._locked)

    def wait(self, address: str, user: int | None = None) -> float:
        """Seconds ``address`` (the local ``user``'s, for a loopback client) must wait before it is heard
        again (0: now)."""
        key = _key(address, user)
        times = self._locked.get(key)
        if times is None:
            return 0.0
        now = self._clock()
        left = times[0] + self.window - now
        if left > 0:
            return left
        del self._locked[key]  # the lock is over: back to counting what is left in the window
        self._forget_old(times, now)
        if times:
            self._counting[key] = times
        return 0.0

    def refused(self, address: str, user: int | None = None) -> None:
        """Count one refused credential of ``address`` (the local ``user``'s, for a loopback client); the
        refusal that reaches the limit is logged."""
        key = _key(address, user)
        now = self._clock()
        times = self._locked.get(key)
        if times is not None:  # refused concurrently with the refusal that locked it: the lock lasts longer
            times.append(now)
            self._locked.move_to_end(key)
            return
        times = self._counting.pop(key, None)
        if times is None:
            self._make_room()
            times = collections.deque(maxlen=self.limit)
        self._forget_old(times, now)
        times.append(now)
        if len(times) < self.limit:
            self._counting[key] = times
            return
        self._locked[key] = times
        logger.warning(
            "management API: %d refused admin credentials from %s within %g s; it waits up to %d s (429)",
            self.limit, printable(key), self.window, math.ceil(self.window),
        )  # fmt: skip

    def _forget_old(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def _make_room(self) -> None:
        if len(self) < self._addresses:
            return
        if self._counting:
            self._counting.popitem(last=False)
            return
        key, _ = self._locked.popitem(last=False)
        if not self._full_warned:
            self._full_warned = True
            logger.warning(
                "management API: %d clients are locked out at once; the earliest lock (%s) ends early to make room",
                len(self._locked) + 1, printable(key),
            )  # fmt: skip


def _key(address: str, user: int | None) -> str:
    """A client's key: the local user of a loopback connection (any address of 127.0.0.0/8 or ::1: one
    user's), else the address as ``{client.network}`` keys it."""
    return f"loopback (uid {user})" if user is not None else client_network(address)


__all__ = ["Lockout"]
