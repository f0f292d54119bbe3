"""The process's count of log lines lost because their destination took none, for ``ws_gateway.log.dropped``
(docs/telemetry.md).

``run``'s log writer drops lines once a destination that stopped reading (a log collector stalled, a paused
terminal) has filled its queue, and says how many in a line of its own once there is room again. An operator
alerting on metrics saw nothing of it: the line that says so goes to the very destination that lost them.
"""

from __future__ import annotations

import threading


class DroppedLines:
    """Lines dropped so far (every handler, every stream of the process); counted from the handlers' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # two handlers (stdout's, stderr's) drop from two threads
        self.value = 0

    def add(self, lines: int) -> None:
        with self._lock:
            self.value += lines


DROPPED_LINES = DroppedLines()


__all__ = ["DROPPED_LINES", "DroppedLines"]
