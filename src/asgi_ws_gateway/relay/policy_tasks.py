"""The message policies' background work on one connection, apart from the pumps: the relay and the
frame relay run it alike."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

logger = logging.getLogger(__name__)


class PolicyTasks:
    """The message policies' background work on one connection (``ConnectionContext.start``).

    Queued until the connection runs, started at once while it runs, dropped once it is over; a
    failure is logged when it happens, and what still runs at the end is cancelled and awaited.
    Shared by the relay and the frame relay.
    """

    def __init__(self) -> None:
        self._state: Literal["new", "running", "over"] = "new"
        self._queued: list[Callable[[], Coroutine[Any, Any, None]]] = []  # start()ed before begin()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``task()`` while the connection runs: from :meth:`begin` on, or at once if running."""
        if self._state == "new":
            self._queued.append(task)
        elif self._state == "running":
            self.spawn(task())
        # over: the connection is closed; there is nothing left for the task to do

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` now, as part of the connection's work (cancelled at :meth:`end`)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def begin(self) -> None:
        self._state = "running"
        for task in self._queued:
            self.spawn(task())
        self._queued.clear()

    async def end(self) -> None:
        self._state = "over"
        for running in self._tasks:
            running.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # reported now, not at the close
            logger.error("message policy task failed", exc_info=task.exception())


__all__ = ["PolicyTasks"]
