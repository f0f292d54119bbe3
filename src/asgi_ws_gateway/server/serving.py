"""Serving an app under uvicorn for ``asgi-ws-gateway run``, with exit codes an operator can trust.

uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down, so a clean drain ends with
status 143 (or 130); :class:`GracefulServer` ends with 0 instead. A worker or server that could
not start (bind failed, lifespan start-up failed) ends with :data:`EXIT_START_FAILED`: uvicorn's
own 3 is the CLI's "not found".
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from .._types import ASGIApp
from ..errors import ConfigError
from ..management import standalone as managed
from ..management.cli import MANAGEMENT_HOST
from ..management.standalone import bind
from ..standalone import create_app
from ..startup import StartupFailure

if sys.platform != "win32":
    import resource

logger = logging.getLogger(__name__)

EXIT_START_FAILED = 7
"""``run`` could not start serving: the socket could not be bound, or start-up failed."""
EXIT_FORCED = 8
"""``run`` was forced to stop (a second SIGINT, Ctrl+C) before its drain finished: connections were cut."""


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose graceful shutdown on a signal returns instead of dying by that signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals(), _hangup_ignored():
            yield
            # The shutdown that signal asked for is complete: do not re-raise it (exit 0, not 143).
            captured = getattr(self, "_captured_signals", None)  # uvicorn >= 0.29 re-raises what it lists here
            if isinstance(captured, list):
                captured.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:  # uvicorn skipped the wait for connections and the application's shutdown
            logger.warning(
                "forced to quit before the drain finished: %d connection(s) cut without a close frame, the "
                "gateway's shutdown (leases released, telemetry flushed) skipped",
                len(self.server_state.connections),
            )


HANGUP_IGNORED = (
    "SIGHUP ignored: this process keeps serving with the configuration it started with (one process "
    "reloads nothing; change APIs through the management API, or run --workers 2 or more, where SIGHUP "
    "replaces each worker with one that reads the file again)"
)


@contextlib.contextmanager
def _hangup_ignored() -> Generator[None, None, None]:
    """SIGHUP logged and ignored while serving. Its default action ended the process at once: no close
    frame to any client or upstream, leases held until they expire, telemetry never flushed; and an
    operator sends it expecting a reload (``--workers`` >= 2: uvicorn's supervisor replaces the workers)."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, lambda sig, frame: logger.warning(HANGUP_IGNORED))
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def standalone_app() -> ASGIApp:
    """``run``'s application, built in each worker (:func:`~asgi_ws_gateway.standalone.create_app`)."""
    return _or_startup_failure(create_app)


def managed_app() -> ASGIApp:
    """``run --management``'s application, built in each worker."""
    return _or_startup_failure(managed.create_app)


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
    app: str, options: dict[str, Any], *, management_port: int | None = None, management_host: str = MANAGEMENT_HOST
) -> int:
    """Serve the import string ``app`` with uvicorn ``options``; returns the process's exit code.

    Args:
        app: ``module:factory`` of the application.
        options: keyword arguments of :class:`uvicorn.Config`.
        management_port: also listen on this port (the management API's own socket).
        management_host: the address the management port listens on (default :data:`MANAGEMENT_HOST`,
            whatever address the gateway itself listens on).
    """
    config = uvicorn.Config(app, **options)  # configures logging
    raise_open_file_limit()  # before the app is imported: its capacity follows the limit
    sockets = [config.bind_socket()]  # exits STARTUP_FAILURE when the address is taken
    if management_port:
        try:
            sockets.append(bind(management_host, management_port))
        except OSError as exc:
            logger.error("could not bind the management port %s:%d: %s", management_host, management_port, exc)
            return EXIT_START_FAILED
    if config.workers > 1:
        supervisor = Multiprocess(config, sockets=sockets)
        supervisor.run()
        # A worker that could not start stops the supervisor, which returns as if all went well.
        failed = any(worker.process.exitcode == STARTUP_FAILURE for worker in supervisor.processes)
        return EXIT_START_FAILED if failed else 0
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
    "STARTUP_FAILURE",
    "GracefulServer",
    "managed_app",
    "raise_open_file_limit",
    "serve",
    "standalone_app",
]
