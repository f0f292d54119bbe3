"""Refused admin credentials per client address: past a limit, the address waits (429), right token or not.

The admin token guards everything the management API can do, and nothing slowed down guessing it:
an address could try thousands of tokens a second. Past ``limit`` refusals within ``window`` seconds
the address is answered ``429 Too Many Requests`` with ``Retry-After`` until the oldest refusal
leaves the window. A right token from that address waits too — an attacker must not learn that a
guess was right. An IPv6 address counts by its /64, as ``{client.network}`` does: a host holds a
/64 at least and may pick a new address in it for every guess. The right token waiting can lock
out an administrator behind the same NAT (or /64) for up to a minute; the log says which address
and for how long.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable

from ..forwarded import client_network

logger = logging.getLogger(__name__)


class Lockout:
    """Refusals by address (IPv6: by /64) in a sliding window (the addresses kept are bounded: the oldest go first).

    Args:
        limit: refusals an address may have within ``window`` (default 30).
        window: seconds (default 60).
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
        self._refused: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds ``address`` must wait before it is heard again (0: now)."""
        address = client_network(address)
        times = self._refused.get(address)
        if times is None:
            return 0.0
        now = self._clock()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._refused[address]
            return 0.0
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def refused(self, address: str) -> None:
        """Count one refused credential of ``address``; the refusal that reaches the limit is logged."""
        address = client_network(address)
        times = self._refused.get(address)
        if times is None:
            if len(self._refused) >= self._addresses:
                self._refused.popitem(last=False)
            times = self._refused[address] = collections.deque(maxlen=self.limit)
        times.append(self._clock())
        if len(times) == self.limit:
            logger.warning(
                "management API: %d refused admin credentials from %s within %g s; it waits up to %d s (429)",
                self.limit, address, self.window, math.ceil(self.window),
            )  # fmt: skip


__all__ = ["Lockout"]
