"""Lines for events that repeat: the first at once, then at most one per interval saying how many.

Through an outage (a store down, a backend down, a flood of 5xx refusals) a line per event is as
large as the traffic; :class:`OutageLog` decides when to write one and how many it stands for.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class OutageLog:
    """When to log an event that repeats through an outage: the first at once, then at most once per
    ``interval`` seconds with how many happened since (a line per event is as large as the traffic)."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._unlogged = 0  # events since the last line
        self._quiet_until = float("-inf")

    def event(self) -> int:
        """Count one event; how many the caller logs now in one line (0: none, stay quiet)."""
        self._unlogged += 1
        now = self._clock()
        if now < self._quiet_until:
            return 0
        count, self._unlogged, self._quiet_until = self._unlogged, 0, now + self.interval
        return count


__all__ = ["OutageLog"]
