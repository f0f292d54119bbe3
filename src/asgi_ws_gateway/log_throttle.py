"""Lines for events that repeat: the first at once, then at most one per interval saying how many.

Through an outage (a store down, a backend down, a flood of 5xx refusals) a line per event is as
large as the traffic; :class:`OutageLog` decides when to write one and how many it stands for.
:class:`RepeatFilter` does the same for a library's logger, whose calls the gateway does not make.
"""

from __future__ import annotations

import logging
import re
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

    def spent(self) -> bool:
        """Whether the next event would be logged at once and alone: nothing held back, the interval over
        (a new :class:`OutageLog` would do the same, so forgetting this one loses nothing)."""
        return self._unlogged == 0 and self._clock() >= self._quiet_until


def by_format(record: logging.LogRecord) -> object:
    """The same kind of line: the same format string, whatever its arguments (an attribute's name, a length)."""
    return record.msg if isinstance(record.msg, str) else None


_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")
_SHOWN_KIND = 300  # characters of a message that tell its kind; a longer tail is detail


def by_text_but_numbers(record: logging.LogRecord) -> object:
    """The same kind of line: the same text but for its numbers (a status, a backoff, a port, an object's
    address) and the same exception, if any. Two signals or two causes (a 503, a refused connection)
    stay apart; the same failure of the next batch does not."""
    try:
        text = record.getMessage()
    except Exception:
        return by_format(record)
    kind = _NUMBERS.sub("#", text[:_SHOWN_KIND])
    return (kind, record.exc_info[0]) if isinstance(record.exc_info, tuple) else kind  # exc_info may be False


_NONE = object()


class RepeatFilter(logging.Filter):
    """A logger filter writing each kind of message (by default its format string: :func:`by_format`) as
    :class:`OutageLog` says: the first at once, then at most one line per ``interval`` seconds, ending
    ``(N more since the last such line)``. A repeated line leaves out a record's traceback (the first
    line of its kind keeps it): one traceback per outage is enough, not one per failure.

    For a library that logs per call what a client can make it do per request (the OpenTelemetry SDK's
    "String attribute value exceeds max length" per truncated attribute), or per export while a collector
    is down: a line per event is as large as the traffic. Records from any thread; DEBUG and INFO records
    pass untouched.
    """

    MAX_MESSAGES = 64
    """Kinds counted apart; any beyond share one count (a library's format strings are constants, but a
    message's text may hold what a peer sent: bounded)."""

    FREED_PER_INTERVAL = 8
    """Kinds forgotten at most per ``interval`` to make room for new ones, each spent (nothing held back,
    its interval over: forgetting it loses nothing), the oldest first. Without it a burst of distinct
    kinds (a collector's reason phrases) lumped every later kind into the shared count for good; with
    more, a collector answering each export with another reason would be a line per export again."""

    def __init__(
        self,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        kind: Callable[[logging.LogRecord], object] = by_format,
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._kind = kind
        self._logs: dict[object, OutageLog] = {}
        self._past_the_table = OutageLog(interval, clock)  # the kinds the table had no place for
        self._freed = 0  # kinds forgotten since _freeing_since
        self._freeing_since = float("-inf")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = self._kind(record)
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                if len(self._logs) < self.MAX_MESSAGES or self._freed_one():
                    log = self._logs[key] = OutageLog(self.interval, self._clock)
                else:
                    log = self._past_the_table
            count = log.event()
        if count > 1:
            try:
                message = record.getMessage()
            except Exception:  # arguments that do not fit: the handler reports that as it would have
                return True
            if isinstance(record.exc_info, tuple) and record.exc_info[0] is not None:
                message = f"{message} [{record.exc_info[0].__name__}, the traceback as in the first such line]"
            shared = log is self._past_the_table
            more = f"more, of any kind past the first {self.MAX_MESSAGES}," if shared else "more"
            record.msg, record.args = f"{message} ({count - 1} {more} since the last such line)", None
            record.exc_info, record.exc_text = None, None
        return count > 0

    def _freed_one(self) -> bool:
        """Forget the oldest spent kind, if this interval's :data:`FREED_PER_INTERVAL` allows."""
        now = self._clock()
        if now >= self._freeing_since + self.interval:
            self._freed, self._freeing_since = 0, now
        if self._freed >= self.FREED_PER_INTERVAL:
            return False
        spent = next((key for key, log in self._logs.items() if log.spent()), _NONE)
        if spent is _NONE:
            return False
        del self._logs[spent]
        self._freed += 1
        return True


__all__ = ["OutageLog", "RepeatFilter", "by_format", "by_text_but_numbers"]
