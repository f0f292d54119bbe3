"""uvicorn's supervisor of ``run --workers N``, keeping the exit status of a worker that stopped with it.

uvicorn's supervisor queues the signals it gets and acts on them at the next turn of its loop (every
0.5 s, later under load: each turn first checks every worker, waiting up to
``timeout_worker_healthcheck`` for each answer). A worker that ended in between because of that
signal (Ctrl+C reaches every process of the group: the first drains, the second forces the quit) was
taken for one that died: replaced by a new worker, started only to be stopped, and its exit status (8,
forced) lost from those ``run`` reads to choose its own.
"""

from __future__ import annotations

import signal
import socket

from uvicorn.config import Config
from uvicorn.supervisors import Multiprocess

_STOPS = frozenset(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))
"""The signals on which uvicorn's supervisor stops every worker and exits."""


class Supervisor(Multiprocess):
    """uvicorn's :class:`~uvicorn.supervisors.Multiprocess`; a worker that ended once a stop signal came
    is not replaced, and :meth:`exit_codes` includes its status."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.stopped_with_it: list[int | None] = []  # exit statuses of workers replaced as a stop came

    def keep_subprocess_alive(self) -> None:
        if self._stop_queued():
            return  # the loop's next turn stops every worker: one that ended meanwhile was stopping
        checked = list(self.processes)
        super().keep_subprocess_alive()
        if self._stop_queued():  # the signal came while it checked them: those it replaced had ended by it
            self.stopped_with_it += [worker.exitcode for worker in checked if worker not in self.processes]

    def exit_codes(self) -> set[int | None]:
        """The exit status of each worker, and of those replaced as the stop came."""
        return {worker.exitcode for worker in self.processes} | set(self.stopped_with_it)

    def _stop_queued(self) -> bool:
        return not _STOPS.isdisjoint(self.signal_queue)


__all__ = ["Supervisor"]
