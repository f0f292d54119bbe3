"""Serving an app under uvicorn for ``asgi-ws-gateway run``, with exit codes an operator can trust.

uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down, so a clean drain ends with
status 143 (or 130); :class:`GracefulServer` ends with 0 instead. A worker or server that could
not start (bind failed, lifespan start-up failed) ends with :data:`EXIT_START_FAILED`: uvicorn's
own 3 is the CLI's "not found".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator
from multiprocessing import connection
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

from .._types import ASGIApp
from ..config.gateway import GatewayConfig
from ..errors import ConfigError
from ..management.cli import MANAGEMENT_HOST
from ..standalone import create_app
from ..startup import StartupFailure
from .log_writer import flush_all
from .other_signals import other_signals_handled
from .startup_output import HeldStartup, Holder
from .supervisor import Supervisor
from .unix_socket import DEFAULT_UDS_MODE, claim_socket, remove_socket, warn_of_other_users

if sys.platform != "win32":
    import resource

logger = logging.getLogger(__name__)
_UVICORN_ERROR = logging.getLogger("uvicorn.error")

EXIT_START_FAILED = 7
"""``run`` could not start serving: the socket could not be bound, or start-up failed."""
EXIT_FORCED = 8
"""``run`` was forced to stop (a second SIGINT, Ctrl+C) before its drain finished: connections were cut."""
WORKER_START_GRACE = 60.0
"""Seconds a ``--workers`` worker may take to answer its first health check (its interpreter's start);
uvicorn's ``timeout_worker_healthcheck`` applies from its first answer on."""
SHUTDOWN_MARGIN = 5.0
"""Seconds :func:`graceful_shutdown_timeout` adds to what the connections' closes may take."""


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose graceful shutdown on a signal returns instead of dying by that signal.

    Args:
        config: uvicorn's.
        worker: one of ``--workers`` N's processes: a SIGHUP is its supervisor's to act on (it
            replaces each worker), so the worker ignores it without a word.
    """

    def __init__(self, config: uvicorn.Config, *, worker: bool = False) -> None:
        super().__init__(config)
        self.worker = worker
        self.on_serving: Callable[[], None] | None = None  # called once started, before serving

    async def main_loop(self) -> None:
        if self.on_serving is not None:
            self.on_serving()
        await super().main_loop()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        quit_ = other_signals_handled(lambda: self.handle_exit(signal.SIGTERM, None), quietly=self.worker)
        with super().capture_signals(), _hangup_ignored(quietly=self.worker), quit_:
            yield
            # The shutdown that signal asked for is complete: do not re-raise it (exit 0, not 143).
            captured = getattr(self, "_captured_signals", None)  # uvicorn >= 0.29 re-raises what it lists here
            if isinstance(captured, list):
                captured.clear()
        # Served: what is left is asyncio.run's cleanup (the default executor's threads joined, among them),
        # where a later Ctrl+C raised KeyboardInterrupt with uvicorn's handlers gone (a traceback, exit 1).
        _ended_at_the_next_signal(EXIT_FORCED if self.force_exit else 0)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            super().run(sockets)
        finally:
            _UVICORN_ERROR.removeFilter(_cancellation_unlogged)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:  # uvicorn skipped the wait for connections and the application's shutdown
            # asyncio.run cancels the tasks left (the lifespan's, each connection's) as it returns: the
            # quit that was asked for, not a failure for uvicorn to log with a traceback each.
            _UVICORN_ERROR.addFilter(_cancellation_unlogged)
            # A connection that was sent its close frame (the shutdown's 1012) is not counted as cut.
            connections = self.server_state.connections
            unclosed = sum(not getattr(connection, "close_sent", False) for connection in connections)
            logger.warning(
                "forced to quit before the drain finished: %d connection(s) cut, %d of them without a close "
                "frame, the gateway's shutdown (leases released, telemetry flushed) skipped",
                len(connections),
                unclosed,
            )


def _ended_at_the_next_signal(code: int) -> None:
    """Once the server has returned, a SIGINT or SIGTERM ends the process at once with ``code``
    (:data:`EXIT_FORCED` after a forced quit, else 0: the drain was complete).

    uvicorn gives both signals back their default actions as the server returns, and the process
    still has its connections' tasks to cancel and its default executor to join: with ``--workers``,
    the supervisor's SIGTERM (sent to every worker when it acts on the first SIGINT, which under load
    was after the second) killed a forced worker (-15), and the forced quit, connections cut, exited
    0; a drained worker's second Ctrl+C raised KeyboardInterrupt in that cleanup, the loop closed
    under the executor's joining thread (a traceback).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def end(signum: int, frame: object) -> None:
        with contextlib.suppress(Exception):  # a closed or broken stream: the exit matters more
            flush_all()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, end)


def _cancellation_unlogged(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


class _Worker(multiprocess.Process):
    """One of uvicorn's worker processes, serving with :class:`GracefulServer`: it ignores SIGHUP (sent
    to the whole process group, it ended every worker at once: 1006 for every client, leases held,
    telemetry unflushed) and exits :data:`EXIT_FORCED` when forced to quit (it exited 0).

    A worker answers the supervisor's health checks once its interpreter has imported the gateway; until
    then, for :data:`WORKER_START_GRACE` seconds, it is alive while its process is. uvicorn's 5 s
    (``timeout_worker_healthcheck``) was less than a start takes on a loaded machine: each worker was
    killed as hung, again and again ("Child process [n] died"), and never served; a SIGHUP's restart gave
    up on its replacement and kept the old worker, its clients never told 1012.
    """

    startup_output: Holder | None = None
    """Set by the supervisor on a dead worker's replacement: the file its start-up output is held in until it
    serves, or, failed, for the supervisor to show unless it is the failure shown last (:mod:`.startup_output`)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._started_at = 0.0
        self._first_ping_sent = False
        self._answered = False  # it answered a health check: from then on, uvicorn's checks apply
        # Set by the worker as it starts serving, shared with the supervisor: a worker killed before
        # (OOM in its start-up) had no connection to drop. Health checks come every 0.5 s at best, and
        # a worker may serve, take connections and die in between.
        self._served = multiprocessing.get_context("spawn").RawValue(ctypes.c_bool, False)

    @property
    def served(self) -> bool:
        """Whether the worker started serving (its connections, if any, die with it)."""
        return bool(self._served.value)

    def start(self) -> None:
        self._started_at = time.monotonic()
        with _interrupts_deferred():
            super().start()

    def is_alive(self, timeout: float = 5) -> bool:
        if self._starting():
            return bool(self.process.is_alive())
        return super().is_alive(timeout)

    def wait_until_ready(self, timeout: float, should_exit: threading.Event | None = None) -> bool:
        return super().wait_until_ready(max(timeout, WORKER_START_GRACE), should_exit)

    def _healthcheck(self, timeout: float) -> bool | None:
        """uvicorn's health check (the worker's answer: whether it has started; None if none came in
        ``timeout`` seconds), which also ends when the worker does. The supervisor holds both ends of the
        pipe, so a worker's exit never reads as its end closing: uvicorn's waited out the whole
        ``timeout`` for a worker that had exited (a failed start-up stopped ``run`` 5 s late)."""
        try:
            self.parent_conn.send(b"ping")
            if self.parent_conn not in connection.wait([self.parent_conn, self.process.sentinel], timeout):
                return None
            started: bool = self.parent_conn.recv()
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        return started

    def ping(self, timeout: float = 5) -> bool:
        return self._healthcheck(timeout) is not None  # as uvicorn 0.55 does; older ones gave ping its own body

    def _starting(self) -> bool:
        """Whether the worker has not answered yet, within :data:`WORKER_START_GRACE` of its start. One
        ping waits for its answer meanwhile (not one a look: each would be answered, late, in turn)."""
        if self._answered or time.monotonic() - self._started_at > WORKER_START_GRACE:
            return False
        try:
            if not self._first_ping_sent:
                self.parent_conn.send(b"ping")
                self._first_ping_sent = True
            if not self.parent_conn.poll(0):
                return True
            self.parent_conn.recv()
        except (OSError, EOFError):
            return False  # its pipe is gone: uvicorn's check says what became of it
        self._answered = True
        return False

    @property
    def server(self) -> GracefulServer:
        if not isinstance(self._server, GracefulServer):
            self._server = GracefulServer(self.config, worker=True)
        return self._server

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover  (in the worker)
        _interrupts_unblocked()
        held = HeldStartup(self.startup_output) if self.startup_output is not None else None

        def serving() -> None:
            self._served.value = True
            if held is not None:
                held.release()

        self.server.on_serving = serving
        try:
            super().target(sockets)
        except SystemExit as exc:
            if held is not None and exc.code == STARTUP_FAILURE:
                held.keep()
            raise
        finally:
            if held is not None:
                held.release()  # nothing left once released or kept
        if self.server.force_exit:
            # At once, not sys.exit: the interpreter's finalization gives SIGTERM back its default action
            # (what _ended_at_the_next_signal set is undone), and the supervisor's, sent late, killed it there (-15).
            flush_all()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_FORCED)


@contextlib.contextmanager
def _interrupts_deferred() -> Generator[None, None, None]:
    """A worker spawned with SIGINT ignored (a disposition exec keeps; Python then leaves it so, and
    uvicorn's server takes SIGINT over as it starts serving): a Ctrl+C, sent to every process of the
    group while a worker was still importing the gateway, printed a KeyboardInterrupt traceback from
    each, interleaved, 30 lines apiece. Its supervisor got that SIGINT too, and stops it (SIGTERM).
    The supervisor's own SIGINT is blocked meanwhile, so one that comes then is deferred, not ignored
    (Linux keeps a blocked signal pending whatever its disposition); the worker inherits that mask too,
    and unblocks SIGINT first thing (:func:`_interrupts_unblocked`): a worker left so never took a Ctrl+C."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _interrupts_unblocked() -> None:  # pragma: no cover  (in the worker)
    """In a worker spawned by :func:`_interrupts_deferred`: SIGINT unblocked (still ignored until uvicorn's
    server takes it over; one that came while it started is dropped, its supervisor stops it)."""
    if sys.platform != "win32":
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


HANGUP_IGNORED = (
    "SIGHUP ignored: this process keeps serving with the configuration it started with (one process "
    "reloads nothing; change APIs through the management API, or run --workers 2 or more, where SIGHUP "
    "replaces each worker with one that reads the file again)"
)


@contextlib.contextmanager
def _hangup_ignored(*, quietly: bool = False) -> Generator[None, None, None]:
    """SIGHUP logged (unless ``quietly``) and ignored while serving. Its default action ended the
    process at once: no close frame to any client or upstream, leases held until they expire, telemetry
    never flushed; and an operator sends it expecting a reload (``--workers`` >= 2: uvicorn's supervisor
    replaces the workers)."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.SIG_IGN if quietly else (lambda sig, frame: logger.warning(HANGUP_IGNORED))
    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


_UVICORN_WORKER = multiprocess.Process


def graceful_shutdown_timeout(config: GatewayConfig) -> float:
    """uvicorn's ``timeout_graceful_shutdown`` for ``config``: how long the server's shutdown waits for
    the connections to close before it cancels their tasks. Each closes within its API's
    ``close_timeout`` (the client's side, then the upstream's), ``drain_grace_period`` bounds a drain,
    and a few seconds are margin. Without it a connection that never closed held the shutdown for ever."""
    close_timeout = max((api.close_timeout for api in config.apis), default=0.0)
    return config.drain_grace_period + 2 * close_timeout + SHUTDOWN_MARGIN


UVICORN_WS_MAX_SIZE = 16 * 1024 * 1024
"""uvicorn's own ``ws_max_size`` (16 MiB): what ``run`` reads of a client's message at least."""


def client_message_limit(config: GatewayConfig) -> tuple[int, str | None]:
    """uvicorn's ``ws_max_size`` for ``config``, and the field that set it (None: uvicorn's 16 MiB).

    The server reads no message larger than it from any client, before the gateway sees it; each connection is
    then held to its own API's ``max_message_size`` as it is accepted (``lower_max_size``). At uvicorn's 16 MiB,
    an API configured for 64 MiB closed a client's 20 MiB message with 1009, nothing said: the largest API's
    limit now (1 GiB at most: ``max_message_size``'s own bound), never less than uvicorn's. An API added later
    through the management API is held to what ``run`` started with (docs/deployment.md)."""
    largest = max(range(len(config.apis)), key=lambda i: config.apis[i].max_message_size, default=None)
    if largest is None or config.apis[largest].max_message_size <= UVICORN_WS_MAX_SIZE:
        return UVICORN_WS_MAX_SIZE, None
    return config.apis[largest].max_message_size, f"apis[{largest}].max_message_size"


def standalone_app() -> ASGIApp:
    """``run``'s application, built in each worker (:func:`~asgi_ws_gateway.standalone.create_app`)."""
    return _or_startup_failure(create_app)


def managed_app() -> ASGIApp:
    """``run --management``'s application, built in each worker."""
    # The management API (Starlette, redis-py, its service) is imported by the processes that serve it:
    # a run without --management started them all the same (docs/performance.md, "Start-up").
    from ..management.standalone import create_app as create_managed_app

    return _or_startup_failure(create_managed_app)


def _or_startup_failure(build: Callable[[], ASGIApp]) -> ASGIApp:
    """``build()``, or an app that fails the lifespan start-up with the problems of an invalid file.

    ``run`` checks the file before serving, but a worker reads it again when it starts: after a
    SIGHUP (``--workers`` >= 2: each worker replaced) or a crash, an edited file raised from uvicorn's
    factory call, a 30-line traceback. Failed start-up is one ERROR with every problem, and the
    supervisor keeps the worker it was replacing."""
    try:
        return build()
    except ConfigError as exc:
        return StartupFailure(exc)


def serve(
    app: str,
    options: dict[str, Any],
    *,
    management_port: int | None = None,
    management_host: str = MANAGEMENT_HOST,
    uds_mode: int = DEFAULT_UDS_MODE,
    unix_trusted: bool = False,
    message_limit_from: str | None = None,
) -> int:
    """Serve the import string ``app`` with uvicorn ``options``; returns the process's exit code.

    Args:
        app: ``module:factory`` of the application.
        options: keyword arguments of :class:`uvicorn.Config`.
        management_port: also listen on this port (the management API's own socket).
        management_host: the address the management port listens on (default :data:`MANAGEMENT_HOST`,
            whatever address the gateway itself listens on).
        uds_mode: with ``options["uds"]``: the socket file's mode.
        unix_trusted: whether the configuration's ``trusted_proxies`` lists ``unix:`` (warned of when
            every local user can connect to the socket).
        message_limit_from: the field that set ``options["ws_max_size"]`` above uvicorn's (said at start-up).

    Raises:
        SocketPathUnusable: ``options["uds"]`` cannot be served on.
    """
    config = uvicorn.Config(app, **options)  # configures logging
    if message_limit_from is not None:
        logger.info("clients' messages are read up to %d bytes (%s, the largest API's; each API holds its own "
                    "clients to its max_message_size)", config.ws_max_size, message_limit_from)  # fmt: skip
    raise_open_file_limit()  # before the app is imported: its capacity follows the limit
    if config.uds is not None:  # run --uds: bound here with its mode (uvicorn's is 0666), gone when it stops
        listener, stamp = claim_socket(config.uds, uds_mode, config.backlog)
        _UVICORN_ERROR.info("Uvicorn running on unix socket %s (Press CTRL+C to quit)", config.uds)
        warn_of_other_users(config.uds, unix_trusted=unix_trusted)
        sockets = [listener]
        try:
            return _serve(config, sockets, management_port, management_host)
        finally:
            remove_socket(config.uds, stamp)
    sockets = [config.bind_socket()]  # exits STARTUP_FAILURE when the address is taken
    return _serve(config, sockets, management_port, management_host)


def _serve(
    config: uvicorn.Config, sockets: list[socket.socket], management_port: int | None, management_host: str
) -> int:
    if management_port:
        from ..management.standalone import bind

        try:
            sockets.append(bind(management_host, management_port))
        except OSError as exc:
            logger.error("could not bind the management port %s:%d: %s", management_host, management_port, exc)
            return EXIT_START_FAILED
    if config.workers > 1:
        supervisor = Supervisor(config, sockets=sockets)
        # uvicorn's supervisor builds its workers from its module's Process, for as long as it runs.
        multiprocess.Process = _Worker  # type: ignore[misc]
        try:
            supervisor.run()
        finally:
            multiprocess.Process = _UVICORN_WORKER  # type: ignore[misc]
        # A worker that could not start stops the supervisor, which returns as if all went well.
        codes = supervisor.exit_codes()
        return EXIT_START_FAILED if STARTUP_FAILURE in codes else EXIT_FORCED if EXIT_FORCED in codes else 0
    server = GracefulServer(config)
    server.run(sockets=sockets)
    if not server.started:
        return EXIT_START_FAILED
    return EXIT_FORCED if server.force_exit else 0


def raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one (the workers inherit it), as servers that hold
    many sockets do: the default soft limit of 1024 is about 480 proxied connections."""
    if sys.platform == "win32":
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # a hard limit the kernel caps lower (macOS: OPEN_MAX)
        logger.info("open-file limit left at %d (raising it to %d failed: %s)", soft, hard, exc)
        return
    logger.info("open-file limit raised from %d to %d", soft, hard)


__all__ = [
    "EXIT_FORCED",
    "EXIT_START_FAILED",
    "HANGUP_IGNORED",
    "MANAGEMENT_HOST",
    "SHUTDOWN_MARGIN",
    "STARTUP_FAILURE",
    "UVICORN_WS_MAX_SIZE",
    "GracefulServer",
    "client_message_limit",
    "graceful_shutdown_timeout",
    "managed_app",
    "raise_open_file_limit",
    "serve",
    "standalone_app",
]
