"""Deadlines as ``asyncio.timeout`` keeps them, for many tasks with the same timeout: one timer for all.

``async with asyncio.timeout(...)`` costs a handshake its state machine, two coroutines and a timer
of the loop's, set and cancelled (uvloop's ``call_at`` and its cancel: ~14 k instructions). Runs that
share a timeout reach their deadlines in the order they started, so one timer, waiting for the oldest
run still going, serves them all (the handshake pipeline's ``policy_timeout``, each upstream connect's
``connect_timeout``).

Usage::

    run = deadlines.start()
    cancelled = False
    try:
        ...  # awaits
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        if deadlines.end(run, cancelled):
            raise TimeoutError  # the cancellation was the deadline's, and is taken back
"""

from __future__ import annotations

import asyncio
from collections import deque


class Deadline:
    """One run's deadline as ``asyncio.timeout`` keeps one: its expiry cancels the task, and only that
    cancellation is the deadline's (a task cancelled for its own reasons, the client gone, stays
    cancelled)."""

    __slots__ = ("at", "cancelling", "expired", "message", "task")

    def __init__(self, task: asyncio.Task[object], at: float, message: str | None) -> None:
        self.task: asyncio.Task[object] | None = task  # None once the run has ended
        self.at = at
        self.message = message
        self.cancelling, self.expired = task.cancelling(), False

    def expire(self) -> None:
        assert self.task is not None
        self.expired = True
        self.task.cancel(self.message)


class Deadlines:
    """The deadlines of runs of one ``timeout`` on one loop, watched by one timer.

    The timer waits for the oldest run still going, expires each run whose time is up, and waits for
    the next. Runs that ended leave the queue as they reach its head; the timer, once set, stays until
    it fires (at most once per ``timeout`` while runs start). ``message``: the cancellation's (None:
    none, as ``asyncio.timeout``'s).
    """

    __slots__ = ("_runs", "_timer", "loop", "message", "timeout")

    _SLACK = 0.001
    """Seconds early a deadline may be met: a loop's timers fire to their clock's millisecond (uvloop's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, message: str | None = None) -> None:
        self.loop, self.timeout, self.message = loop, timeout, message
        self._runs: deque[Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> Deadline:
        """The deadline of a run starting now, in the calling task (of :attr:`loop`, which must be running).

        Raises:
            RuntimeError: not called from a task.
        """
        loop = self.loop
        task = asyncio.current_task(loop)  # (by loop: without it, Python 3.11 asks getpid())
        if task is None:
            raise RuntimeError("a deadline is kept for a task")
        run = Deadline(task, loop.time() + self.timeout, self.message)
        self._runs.append(run)
        if self._timer is None:
            self._timer = loop.call_at(run.at, self._expire)
        return run

    def end(self, run: Deadline, cancelled: bool) -> bool:
        """``run`` is over; whether it ended because it ran out (``cancelled``: it ended cancelled), in
        which case its cancellation is taken back (``Task.uncancel``), as ``asyncio.timeout`` does."""
        task, run.task = run.task, None
        assert task is not None
        runs = self._runs
        while runs and runs[0].task is None:
            runs.popleft()
        return run.expired and task.uncancel() <= run.cancelling and cancelled

    def __len__(self) -> int:
        """Runs in the queue (going, or ended behind one still going); tests read it."""
        return len(self._runs)

    def _expire(self) -> None:
        self._timer = None
        runs, now = self._runs, self.loop.time() + self._SLACK
        while runs:
            run = runs[0]
            if run.task is not None:
                if run.at > now:
                    self._timer = self.loop.call_at(run.at, self._expire)
                    return
                run.expire()  # its end() is still to come; it leaves the queue now
            runs.popleft()


class DeadlinesByTimeout:
    """:class:`Deadlines` for each timeout in use on the running loop (an API's ``connect_timeout``),
    made at first use; at most ``most`` timeouts kept (then forgotten all at once: a forgotten queue's
    timer still expires its runs)."""

    __slots__ = ("_kept", "most")

    def __init__(self, most: int = 64) -> None:
        self._kept: dict[float, Deadlines] = {}
        self.most = most

    def get(self, loop: asyncio.AbstractEventLoop, timeout: float) -> Deadlines:
        """The deadlines of ``timeout`` on ``loop``."""
        deadlines = self._kept.get(timeout)
        if deadlines is None or deadlines.loop is not loop:
            if len(self._kept) >= self.most:
                self._kept.clear()
            deadlines = self._kept[timeout] = Deadlines(loop, timeout)
        return deadlines


__all__ = ["Deadline", "Deadlines", "DeadlinesByTimeout"]
