"""The signals besides SIGINT, SIGTERM and SIGHUP that an operator (or a tool) sends ``run``: SIGQUIT stops
it as SIGTERM does, SIGUSR1 and SIGUSR2 are ignored with a line saying so.

uvicorn handles none of them in a lone server, so their default actions applied: SIGQUIT (Ctrl+\\, nginx's
graceful stop) ended ``run --workers 1`` at once with a core dump, every client cut (1006) and nothing
logged; SIGUSR1 (what logrotate's ``postrotate`` sends nginx to reopen its logs) ended it as abruptly.
Its supervisor of ``--workers`` N catches all three and only logs them at DEBUG: ``kill -QUIT`` did
nothing, and a Ctrl+\\ (sent to every process of the group) killed each worker, its connections with it,
and the supervisor started new ones. Now every shape drains and exits 0 on SIGQUIT, and says it ignores
SIGUSR1/SIGUSR2 (``run`` writes to stdout and stderr: there is no log file of its own to reopen). A
SIGHUP that comes while ``run`` starts is ignored with a line too (its default action ended it).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Generator

from .log_writer import write_out

logger = logging.getLogger(__name__)

QUIT_AS_STOP = "Received SIGQUIT, exiting as for SIGTERM (connections drained)."
USER_SIGNAL_IGNORED = (
    "%s ignored: run has no log file to reopen (it writes to stdout and stderr) and nothing else bound to it"
)


HANGUP_WHILE_STARTING = (
    b"WARNING:  SIGHUP ignored: run is still starting, and reads the configuration file as it is now "
    b"(once it serves, SIGHUP reloads it with --workers 2 or more)\n"
)


def hangup_ignored_while_starting() -> None:
    """SIGHUP ignored, with a line, from now until the server or supervisor takes it over: its default
    action ended ``run`` while it loaded its file and started (exit 129, not a line said why), as a
    terminal closing or a reload sent just after a start does.

    The line goes through the log writer (:func:`.log_writer.write_out`), as the rest of the start-up's output:
    written by the handler itself, it waited for a destination that took nothing (a stalled collector), and the
    start-up, interrupted in the main thread, waited with it for as long. Nor does the handler queue it itself:
    it may have interrupted this very thread inside the writer's queue, holding its lock. It only counts the
    signal; a thread of its own hands each line to the writer."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return
    hangups = threading.Semaphore(0)  # released by the handler: no lock this thread may hold is taken

    def say() -> None:
        while True:
            hangups.acquire()
            write_out(2, HANGUP_WHILE_STARTING)

    threading.Thread(target=say, name="sighup-while-starting", daemon=True).start()

    def ignored(signum: int, frame: object) -> None:
        hangups.release()

    signal.signal(signal.SIGHUP, ignored)


def user_signal_ignored(signum: int) -> None:
    logger.warning(USER_SIGNAL_IGNORED, signal.Signals(signum).name)


@contextlib.contextmanager
def other_signals_handled(stop: Callable[[], None], *, quietly: bool) -> Generator[None, None, None]:
    """While serving: SIGQUIT calls ``stop`` (the server's SIGTERM drain), SIGUSR1 and SIGUSR2 are ignored
    unless something bound them before (a plugin, a profiler: ``bench.opcodes``); logged unless ``quietly``
    (a worker of ``--workers`` N: its supervisor logs what it got)."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return

    def quit_(signum: int, frame: object) -> None:
        if not quietly:
            logging.getLogger("uvicorn.error").info(QUIT_AS_STOP)
        stop()

    def user(signum: int, frame: object) -> None:
        if not quietly:
            user_signal_ignored(signum)

    handlers = {signal.SIGQUIT: quit_}
    for signum in (signal.SIGUSR1, signal.SIGUSR2):  # one a plugin or a profiler bound is left to it
        if signal.getsignal(signum) == signal.SIG_DFL:
            handlers[signum] = user
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = [
    "HANGUP_WHILE_STARTING",
    "QUIT_AS_STOP",
    "USER_SIGNAL_IGNORED",
    "hangup_ignored_while_starting",
    "other_signals_handled",
    "user_signal_ignored",
]
