"""``run``'s log lines written by a thread of their own: a destination that takes nothing loses lines, not
the gateway.

uvicorn's handlers write each line to stdout or stderr as it is logged, in the thread that logs it: the
event loop's. A destination that stops reading (a log collector stalled, ``run ... | sleep 1000``, a
terminal paused with Ctrl+S) filled its pipe (64 KiB: 350 access lines) and then blocked that write, and
the whole process with it: every connection stalled, no handshake answered, and a SIGTERM never acted on.
As Docker's ``mode: non-blocking`` log driver does, lines now wait in a bounded queue
(:data:`QUEUE_LINES`) for a writer thread; once it is full, lines are dropped and counted, and the next
line that finds room is preceded by one saying how many were lost; if none comes, the writer says it once it
has written what was queued (the line was lost with the stall that caused it when no other line followed).
Each line lost is counted for ``ws_gateway.log.dropped`` (:mod:`asgi_ws_gateway.log_losses`): the line that
says so goes to the very destination that lost them. A destination that is gone (EPIPE, a closed descriptor)
loses what is written to it, as before, without stopping anything.

Output that is not a log record goes through the same queue (:func:`write_out`): a replacement worker's
start-up output, held and then written out as it serves, or shown by its supervisor when it failed. Written
by the thread that had it, that write blocked on a stalled destination: the worker's event loop before its
first connection, and the supervisor, whose signals (a SIGTERM) and worker replacements waited on it.

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
from typing import Protocol, TextIO

from ..log_losses import DROPPED_LINES

QUEUE_LINES = 10_000
"""Lines waiting for a destination that does not take them, at most (about 2 MB); beyond, lines are dropped."""
FLUSH_LIMIT = 2.0
"""Seconds a flush (the process's exit, a worker's start-up output switched) waits for the lines queued."""

_handlers: weakref.WeakSet[UnblockingStreamHandler] = weakref.WeakSet()


class Deferred(Protocol):
    """Output the writer thread writes in its turn, read only then (a worker's held start-up output, in a file:
    it may be large, so it is read as it is written, not queued in memory)."""

    def write_to(self, fd: int) -> None:
        """Written to ``fd`` (by the writer thread), and let go."""

    def lines(self) -> int:
        """How many lines it holds: what is lost if it is dropped."""

    def discard(self) -> None:
        """Dropped (the queue full): let go unwritten."""


Output = bytes | Deferred
"""What the writer thread writes: a line (or any bytes), or output read as it is written."""


class UnblockingStreamHandler(logging.StreamHandler[TextIO]):
    """A :class:`logging.StreamHandler` whose lines a thread writes; one that finds the queue full is
    dropped and counted. A stream with no file descriptor (a test's capture) is written as logging does."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        try:
            self._fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._lines: queue.Queue[Output] = queue.Queue(QUEUE_LINES)
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
        self._queue(line)

    def write_out(self, output: Output) -> None:
        """``output`` written in its turn after the lines queued, never waiting for the stream: dropped and
        counted (its lines) when the queue is full."""
        if self._fd is None:
            return
        with self.lock:  # type: ignore[union-attr]  # logging's: created in __init__
            self._queue(output)

    def _queue(self, output: Output) -> None:
        """``output`` put in the queue, the lines dropped before it said first (the handler's lock held)."""
        assert self._fd is not None
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="log-writer", daemon=True)
            self._writer.start()
        if self._dropped and not self._put(_dropped_line(self._dropped, self._fd)):
            self._drop(output)
            return
        self._dropped = 0
        if not self._put(output):
            self._drop(output)

    def _drop(self, output: Output) -> None:
        lines = max(output.count(b"\n"), 1) if isinstance(output, bytes) else output.lines()
        self._dropped += lines
        DROPPED_LINES.add(lines)
        if not isinstance(output, bytes):
            output.discard()

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

    def _put(self, output: Output) -> bool:
        try:
            self._lines.put_nowait(output)
        except queue.Full:
            return False
        return True

    def _write(self) -> None:
        fd = self._fd
        assert fd is not None
        while True:
            output = self._lines.get()
            try:
                if isinstance(output, bytes):
                    write_all(fd, output)
                else:
                    output.write_to(fd)
            except OSError:
                pass  # the destination is gone (EPIPE, closed): nothing to write to, nowhere to say so
            finally:
                self._lines.task_done()
            if self._dropped and self._lines.empty():
                self._say_dropped(fd)

    def _say_dropped(self, fd: int) -> None:
        """The lines dropped said now that the queue is written out: no later line may come to say it (the
        stall was the last thing logged), and an operator reading the output would never learn of them."""
        with self.lock:  # type: ignore[union-attr]  # logging's: emit, which puts lines, holds it too
            if self._dropped and self._put(_dropped_line(self._dropped, fd)):
                self._dropped = 0


def _dropped_line(count: int, fd: int) -> bytes:
    stream = {1: "stdout", 2: "stderr"}.get(fd, f"file descriptor {fd}")
    return (
        f"WARNING:  {count} log line(s) dropped: {stream} took none for a while (a log reader stalled or gone); "
        "the gateway kept serving\n"
    ).encode()


def write_out(fd: int, output: Output) -> None:
    """``output`` written to file descriptor ``fd`` (1, 2) by the writer thread of the handler that writes there,
    after the lines it has queued, never waiting for a destination that takes none (dropped, its lines counted,
    when that queue is full). Without such a handler (a ``--log-config`` of other handlers), by one made for it."""
    handler = next((handler for handler in list(_handlers) if handler._fd == fd), None)
    if handler is None:
        handler = UnblockingStreamHandler(os.fdopen(fd, "w", closefd=False))  # (the descriptor stays open)
    handler.write_out(output)


def write_all(fd: int, data: bytes) -> None:
    """``data`` written to ``fd`` whole, however many writes that takes."""
    while data:
        data = data[os.write(fd, data) :]


def flush_all() -> None:
    """Every handler's queued lines written (each waits :data:`FLUSH_LIMIT` seconds at most): before the
    process ends at once (``os._exit``), or its descriptors are switched."""
    for handler in list(_handlers):
        handler.flush()


__all__ = [
    "FLUSH_LIMIT",
    "QUEUE_LINES",
    "Deferred",
    "Output",
    "UnblockingStreamHandler",
    "flush_all",
    "write_all",
    "write_out",
]
