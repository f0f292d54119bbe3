"""Lines for events that repeat: the first at once, then at most one per interval saying how many.

Through an outage (a store down, a backend down, a flood of 5xx refusals) a line per event is as
large as the traffic; :class:`OutageLog` decides when to write one and how many it stands for.
:class:`RepeatFilter` does the same for a library's logger, whose calls the gateway does not make.
"""

from __future__ import annotations

import logging
import threading
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


class RepeatFilter(logging.Filter):
    """A logger filter writing each message (by its format string) as :class:`OutageLog` says: the first
    at once, then at most one line per ``interval`` seconds, ending ``(N more since the last such line)``.

    For a library that logs per call what a client can make it do per request (the OpenTelemetry SDK's
    "String attribute value exceeds max length" per truncated attribute): a line per event is as large
    as the traffic. Records from any thread; DEBUG and INFO records pass untouched.
    """

    MAX_MESSAGES = 64
    """Format strings counted apart; any beyond share one count (a library's are constants, but bounded)."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._logs: dict[object, OutageLog] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = record.msg if isinstance(record.msg, str) else None
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                if len(self._logs) >= self.MAX_MESSAGES:
                    key = None
                log = self._logs.setdefault(key, OutageLog(self.interval, self._clock))
            count = log.event()
        if count > 1:
            try:
                message = record.getMessage()
            except Exception:  # arguments that do not fit: the handler reports that as it would have
                return True
            record.msg, record.args = f"{message} ({count - 1} more since the last such line)", None
        return count > 0


__all__ = ["OutageLog", "RepeatFilter"]
