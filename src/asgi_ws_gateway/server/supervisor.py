"""uvicorn's supervisor of ``run --workers N``, keeping the exit status of a worker that stopped with it,
and the other workers serving when a dead worker's replacement cannot start.

uvicorn's supervisor queues the signals it gets and acts on them at the next turn of its loop (every
0.5 s, later under load: each turn first checks every worker, waiting up to
``timeout_worker_healthcheck`` for each answer). A worker that ended in between because of that
signal (Ctrl+C reaches every process of the group: the first drains, the second forces the quit) was
taken for one that died: replaced by a new worker, started only to be stopped, and its exit status (8,
forced) lost from those ``run`` reads to choose its own.

A worker that dies (killed, out of memory) is replaced by a new one, which reads the file again. uvicorn
stops the whole gateway when a worker fails its start-up, right for the workers ``run`` starts with (a
broken file, TLS or plugin: ``run`` exits 7), but a replacement that fails so (the file edited, not yet
valid) stopped the workers still serving too, every connection with them, and ``run`` exited 7 "could
not start serving" after hours of serving. Now its place stays vacant while another worker serves: one
ERROR, tried again after :data:`REPLACEMENT_RETRY` seconds, then after twice the last wait (at most
:data:`REPLACEMENT_RETRY_MAX`), and a SIGHUP's restart fills it as well.

Each try printed the worker's whole start-up again (the file's problems, uvicorn's lines around them),
the same block for as long as the file stayed invalid. A replacement's start-up output is now held
until it serves (:mod:`.startup_output`); when a try fails, the supervisor shows it only if it is not
the failure shown last, and says "still fails to start (N tries)" in one line.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
import weakref

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import Multiprocess, multiprocess

from .other_signals import QUIT_AS_STOP, user_signal_ignored
from .startup_output import Held, new_holder, same_failure, show, take

logger = logging.getLogger("uvicorn.error")

_STOPS = frozenset(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK", "SIGQUIT") if hasattr(signal, name)
)
"""The signals on which uvicorn's supervisor stops every worker and exits (SIGQUIT: :mod:`.other_signals`)."""

REPLACEMENT_RETRY = 10.0
"""Seconds before the first try at replacing a dead worker whose replacement failed its start-up."""
REPLACEMENT_RETRY_MAX = 300.0
"""Seconds between two tries at most: each that fails doubles the wait. Every 10 s, a file left invalid
overnight was two ERROR lines (the supervisor's, the worker's problems) and a worker's start-up (0.8 s of
CPU) every 10 s: 7,000 lines and 8 % of a core for the night."""


class _Vacant:
    """The place of a dead worker whose replacement failed its start-up, until the next try (``retry_at``,
    ``time.monotonic()``). To uvicorn's loops it is a live worker with nothing to stop: a SIGHUP's restart
    replaces it as any other, and its exit status counts for nothing."""

    exitcode = None

    def __init__(self, pid: int | None, retry_at: float, wait: float = REPLACEMENT_RETRY, tries: int = 1) -> None:
        self.pid = pid  # the replacement that failed
        self.retry_at = retry_at
        self.wait = wait  # seconds it waited since the last try (retry_at is that far after it)
        self.tries = tries  # the replacements that failed to fill it so far

    def is_alive(self, timeout: float = 5) -> bool:
        return True

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass

    def join(self) -> None:
        pass


def _ending(exitcode: int | None, healthcheck: float) -> str:
    """How a worker ended, from its exit status (``None``: killed here, as hung)."""
    if exitcode is None:
        return f"did not answer its health check in {healthcheck:g} s and was killed"
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"died (killed by {signal.Signals(-exitcode).name})"
    return f"died (exit status {exitcode})"


class Supervisor(Multiprocess):
    """uvicorn's :class:`~uvicorn.supervisors.Multiprocess`; a worker that ended once a stop signal came
    is not replaced, and :meth:`exit_codes` includes its status; a dead worker's replacement that fails
    its start-up while another worker serves leaves its place :class:`_Vacant`."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.first: list[object] = []  # the workers run started with: one failing its start-up stops run
        self.start_failed = False  # it stopped because a worker failed its start-up
        # The vacant place each worker was started to fill (weak: gone with the worker).
        self._filling: weakref.WeakKeyDictionary[object, _Vacant] = weakref.WeakKeyDictionary()
        self._shown: Held | None = None  # the start-up failure a replacement's output showed last
        # Set as a stop signal comes (uvicorn's loop only queues it): a SIGHUP's restart under way stops.
        self._stopping = threading.Event()
        for stop in _STOPS:
            signal.signal(stop, self._queue_stop)

    def _queue_stop(self, signum: int, frame: object) -> None:
        self.signal_queue.append(signum)
        self._stopping.set()

    def init_processes(self) -> None:
        super().init_processes()
        self.first = list(self.processes)

    def keep_subprocess_alive(self) -> None:
        """uvicorn's turn over the workers (a dead one replaced, a failed start-up stops every worker), but
        a worker that ended as a stop signal came stays as it is, and a replacement that failed its
        start-up while another worker serves leaves its place vacant."""
        if self.should_exit.is_set() or self._stop_queued():
            return  # the loop's next turn stops every worker: one that ended meanwhile was stopping
        for index, process in enumerate(self.processes):
            if isinstance(process, _Vacant):
                if time.monotonic() >= process.retry_at:
                    self._filling[self._start(index)] = process
                continue
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            ended = process.exitcode  # None: running, but it did not answer its health check (hung)
            process.kill()
            process.join()
            if self._stop_queued():
                return  # the signal came while it checked them: this one ended by it, its status kept
            last = self._filling.get(process)
            self._show_held(process, quiet=last is not None and process.exitcode == STARTUP_FAILURE)
            if process.exitcode == STARTUP_FAILURE:
                serving = sum(not isinstance(other, _Vacant) and other.exitcode is None for other in self.processes)
                if process in self.first or not serving:
                    logger.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                    self.start_failed = True
                    self.should_exit.set()
                    return
                wait = REPLACEMENT_RETRY if last is None else min(2 * last.wait, REPLACEMENT_RETRY_MAX)
                tries = 1 if last is None else last.tries + 1
                if last is None:
                    logger.error(
                        "Child process [%s], replacing one that died, failed to start; %d worker(s) go on serving, "
                        "its place is tried again in %.0f s (or at a SIGHUP)", process.pid, serving, wait,
                    )  # fmt: skip
                else:
                    logger.error(
                        "Child process [%s], replacing one that died, still fails to start (%d tries; its output "
                        "is shown again when it changes); %d worker(s) go on serving, its place is tried again in "
                        "%.0f s (or at a SIGHUP)", process.pid, tries, serving, wait,
                    )  # fmt: skip
                vacant = _Vacant(process.pid, time.monotonic() + wait, wait, tries)
                self.processes[index] = vacant  # type: ignore[call-overload]  # uvicorn's list holds its Process
                continue
            if ended == 0:  # the drain complete (a SIGTERM sent to it alone): nothing was lost, its place is empty
                logger.warning("Child process [%s] ended on its own after draining its connections (exit status 0); "
                               "starting another", process.pid)  # fmt: skip
                self._start(index)
                continue
            # uvicorn's INFO "died": a worker lost (the OOM killer, a crash, hung) dropped its connections;
            # one lost in its start-up had none (run's worker says whether it served; uvicorn's does not).
            if getattr(process, "served", True):
                lost = "its connections were dropped"
            else:
                lost = "it was still starting and had served no connection"
            logger.error("Child process [%s] %s: %s; starting another",
                         process.pid, _ending(ended, self.config.timeout_worker_healthcheck), lost)  # fmt: skip
            self._start(index)

    def restart_all(self) -> None:
        """uvicorn's SIGHUP restart (each worker replaced once its replacement serves; the first that does
        not stops the restart, the old workers kept), saying why a replacement did not serve: uvicorn said
        "was not ready in time" of one that had failed its start-up (an invalid file) at once.

        A stop signal that comes meanwhile ends the restart at once: uvicorn only queued it, and replaced
        every worker first (a new worker's start, the old one's drain, each in turn: 12 s with two idle
        workers, up to a minute a worker on a loaded host) to stop them all after; an orchestrator's
        SIGKILL (30 s after its SIGTERM, by default) cut the connections in between."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set() or self._stopping.is_set():
                return
            new = multiprocess.Process(self.config, self.sockets)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self._stopping):
                if self._stopping.is_set():  # stopped as the others will be (it may have taken a connection)
                    new.terminate()
                    new.join()
                    return
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    why = "failed to start" if new.exitcode == STARTUP_FAILURE else "was not ready in time"
                    # A vacant place keeps no worker: its pid is the replacement that failed, long gone.
                    kept = "leaving its place vacant" if isinstance(old, _Vacant) else f"keeping worker [{old.pid}]"
                    logger.error("New child process [%s] %s; %s and aborting the restart.", new.pid, why, kept)
                return
            old.terminate()
            old.join()
            self.processes[index] = new

    def handle_quit(self) -> None:
        """SIGQUIT stops the gateway as SIGTERM does (uvicorn logged it at DEBUG and did nothing)."""
        logger.info(QUIT_AS_STOP)
        self.should_exit.set()

    def handle_usr1(self) -> None:
        user_signal_ignored(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        user_signal_ignored(signal.SIGUSR2)

    def handle_ttou(self) -> None:
        """uvicorn's SIGTTOU (one worker fewer), giving up a vacant place first: uvicorn stopped the last
        worker, which could be the only one serving, leaving the gateway with none until the vacant
        place's next try failed and stopped it."""
        vacant = next((i for i, process in enumerate(self.processes) if isinstance(process, _Vacant)), None)
        if vacant is None or self.processes_num <= 1:
            super().handle_ttou()
            return
        logger.info("Received SIGTTOU, decreasing number of processes (a vacant place given up).")
        self.processes_num -= 1
        del self.processes[vacant]

    def _start(self, index: int) -> multiprocess.Process:
        """A replacement at ``index``, its start-up output held until it serves (run's worker reads
        ``startup_output``; uvicorn's own class has none)."""
        process = multiprocess.Process(self.config, self.sockets)  # run's worker class, set on the module
        if hasattr(process, "startup_output"):
            process.startup_output = new_holder()
        process.start()
        self.processes[index] = process
        return process

    def join_all(self) -> None:
        super().join_all()
        for process in self.processes:  # a replacement stopped while it started: what it held, its file removed
            self._show_held(process, quiet=process in self._filling)

    def _show_held(self, process: object, *, quiet: bool) -> None:
        """The start-up output ``process`` held (if any: a replacement that never served), shown unless
        ``quiet`` (a try again that failed) and it is the failure shown last. A first failure is always shown."""
        holder = getattr(process, "startup_output", None)
        if holder is None:
            return
        output = take(holder)
        if not any(output) or (quiet and same_failure(output, self._shown)):
            return
        show(output)
        self._shown = output

    def exit_codes(self) -> set[int | None]:
        """The exit status of each worker (``None``: running, or a vacant place). A replacement's failed
        start-up counts only when it stopped the gateway: one a stop signal found starting (a vacant place
        tried again, the file still invalid) left its place vacant, and run exited 7 for a stop it was asked."""
        return {
            None if worker.exitcode == STARTUP_FAILURE and worker not in self.first and not self.start_failed
            else worker.exitcode
            for worker in self.processes
        }  # fmt: skip

    def _stop_queued(self) -> bool:
        return not _STOPS.isdisjoint(self.signal_queue)


__all__ = ["REPLACEMENT_RETRY", "REPLACEMENT_RETRY_MAX", "Supervisor"]
