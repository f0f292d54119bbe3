"""``run``'s log lines written by a thread of their own: a destination that takes nothing loses lines, not
the gateway.

uvicorn's handlers write each line to stdout or stderr as it is logged, in the thread that logs it: the
event loop's. A destination that stops reading (a log collector stalled, ``run ... | sleep 1000``, a
terminal paused with Ctrl+S) filled its pipe (64 KiB: 350 access lines) and then blocked that write, and
the whole process with it: every connection stalled, no handshake answered, and a SIGTERM never acted on.
As Docker's ``mode: non-blocking`` log driver does, lines now wait in a bounded queue
(:data:`QUEUE_LINES`) for a writer thread; once it is full, lines are dropped and counted, and the next
line that finds room is preceded by one saying how many were lost. A destination that is gone (EPIPE, a
closed descriptor) loses what is written to it, as before, without stopping anything.

The writer writes to the stream's file descriptor by its number, not through Python's stream object: a
thread blocked inside ``sys.stderr``'s buffer holds its lock, and the interpreter's exit (which flushes
it) then aborted the process; and a replacement worker's start-up output, held by putting a file in place
of descriptor 2 (:mod:`.startup_output`), goes where descriptor 2 points.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from typing import TextIO

QUEUE_LINES = 10_000
"""Lines waiting for a destination that does not take them, at most (about 2 MB); beyond, lines are dropped."""
FLUSH_LIMIT = 2.0
"""Seconds a flush (the process's exit, a worker's start-up output switched) waits for the lines queued."""

_handlers: weakref.WeakSet[UnblockingStreamHandler] = weakref.WeakSet()


class UnblockingStreamHandler(logging.StreamHandler[TextIO]):
    """A :class:`logging.StreamHandler` whose lines a thread writes; one that finds the queue full is
    dropped and counted. A stream with no file descriptor (a test's capture) is written as logging does."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        try:
            self._fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._lines: queue.Queue[bytes] = queue.Queue(QUEUE_LINES)
        self._dropped = 0  # lines dropped since the last that found room (emit holds the handler's lock)
        self._writer: threading.Thread | None = None
        _handlers.add(self)

    @property
    def dropped(self) -> int:
        """Lines dropped and not yet reported by a line in the output."""
        return self._dropped

    def emit(self, record: logging.LogRecord) -> None:
        if self._fd is None:
            super().emit(record)
            return
        try:
            line = (self.format(record) + self.terminator).encode(errors="backslashreplace")
        except Exception:  # logging's own: a record that cannot be formatted is reported
            self.handleError(record)
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="log-writer", daemon=True)
            self._writer.start()
        if self._dropped and not self._put(_dropped_line(self._dropped, self._fd)):
            self._dropped += 1
            return
        self._dropped = 0
        if not self._put(line):
            self._dropped += 1

    def flush(self) -> None:
        """Wait (:data:`FLUSH_LIMIT` seconds at most) for the lines queued to be written."""
        if self._fd is None:
            super().flush()
            return
        deadline = time.monotonic() + FLUSH_LIMIT
        # Not ``with``: called from a signal handler, it may have interrupted this thread inside put_nowait,
        # holding the queue's lock (a deadlock), so the wait for it is bounded too.
        if not self._lines.mutex.acquire(timeout=FLUSH_LIMIT):
            return
        try:
            while self._lines.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._lines.all_tasks_done.wait(left)
        finally:
            self._lines.mutex.release()

    def _put(self, line: bytes) -> bool:
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            return False
        return True

    def _write(self) -> None:
        assert self._fd is not None
        while True:
            line = self._lines.get()
            try:
                while line:
                    line = line[os.write(self._fd, line) :]
            except OSError:
                pass  # the destination is gone (EPIPE, closed): nothing to write to, nowhere to say so
            finally:
                self._lines.task_done()


def _dropped_line(count: int, fd: int) -> bytes:
    stream = {1: "stdout", 2: "stderr"}.get(fd, f"file descriptor {fd}")
    return (
        f"WARNING:  {count} log line(s) dropped: {stream} took none for a while (a log reader stalled or gone); "
        "the gateway kept serving\n"
    ).encode()


def flush_all() -> None:
    """Every handler's queued lines written (each waits :data:`FLUSH_LIMIT` seconds at most): before the
    process ends at once (``os._exit``), or its descriptors are switched."""
    for handler in list(_handlers):
        handler.flush()


__all__ = ["FLUSH_LIMIT", "QUEUE_LINES", "UnblockingStreamHandler", "flush_all"]
