"""The providers one gateway uses (:class:`Providers`), and the shutdown of those it made itself:
flushed within a timeout on a daemon thread; past it, their exporters closed, what they held dropped
with one WARNING, and what the SDK then logs about the closing silenced.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .metrics import HistogramFactory

logger = logging.getLogger(__name__)


class _Owned(Protocol):
    def force_flush(self, timeout_millis: int = ...) -> bool: ...

    def shutdown(self) -> None: ...


class _Exporter(Protocol):
    def shutdown(self) -> None: ...


@dataclass
class Providers:
    """The providers one gateway uses; ``owned`` are those it created (and flushes and shuts down).

    ``histograms`` makes the duration histograms when they are the gateway's own (its own meter
    provider, :mod:`.histograms`); None: the SDK's instruments on ``meter``.
    """

    tracer: TracerProvider | None = None
    meter: MeterProvider | None = None
    logger: LoggerProvider | None = None
    owned: list[_Owned] = field(default_factory=list)
    histograms: HistogramFactory | None = None
    exporters: list[_Exporter] = field(default_factory=list)
    """The exporters of the ``owned`` providers: closed early when their flush outlasts the shutdown timeout."""
    threads: list[threading.Thread] = field(default_factory=list)
    """The threads the ``owned`` providers started (the SDK's batch processors and metric reader): what they
    log about closed exporters is silenced once the shutdown timeout gave up on them."""

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        for provider in self.owned:
            provider.force_flush(timeout_millis)

    def shutdown(self, timeout: float) -> bool:
        """Flush and stop the owned providers within ``timeout`` seconds (blocking); False when they did not.

        Their exporters retry for up to ``OTEL_EXPORTER_OTLP_TIMEOUT`` each (10 s) when the collector is
        down or never answers, one signal after another: so the flush runs on a daemon thread, and past
        ``timeout`` the exporters are closed (a gRPC channel's close ends its call at once; HTTP at its
        own timeout) and what they held is dropped, with one WARNING, rather than hold a draining process.
        What the SDK and the exporters then log about the closing, on the threads that flush or export for
        these providers (gRPC's cancelled call as an ERROR, "Exporter already shutdown" once per signal),
        is not logged: it would repeat the WARNING on every deploy while the collector is down.
        """
        owned, self.owned = self.owned, []
        exporters, self.exporters = self.exporters, []
        if not owned:
            return True
        done = threading.Thread(target=_shut_down, args=(owned,), name="telemetry shutdown", daemon=True)
        done.start()
        done.join(timeout)
        if not done.is_alive():
            return True
        for provider in owned:  # the SDK's own shutdown at exit would close the closed exporters again
            atexit.unregister(provider.shutdown)
        quiet = _GivenUp([*self.threads, done])
        quiet.install()
        with quiet.on(threading.current_thread()):  # closing an exporter the provider closed already warns
            for exporter in exporters:
                try:
                    exporter.shutdown()  # the provider's own shutdown of it, later, then only logs that it was
                except Exception:
                    logger.exception("telemetry exporter shutdown failed")
        done.join(_CLOSE_GRACE)
        logger.warning(
            "telemetry: the OTLP exporters did not send what they held within %.3g s (telemetry.shutdown_timeout), "
            "the collector is down or slow: closed them, unsent spans, metrics and log records are dropped%s",
            timeout,
            "; one still blocks, left to end with the process" if done.is_alive() else "",
        )
        return False


_CLOSE_GRACE = 1.0
"""Seconds the flush thread gets to end once its exporters are closed."""

_SILENCED = ("opentelemetry.", "asgi_ws_gateway.telemetry.otlp_")
"""The loggers of the SDK, its exporters and the gateway's exporter subclasses."""


class _GivenUp(logging.Filter):
    """Drops the records logged on some threads while they live: those of providers given up on at shutdown.

    On the SDK's and exporters' loggers (:data:`_SILENCED`) only, so an application's own errors still show,
    and only from these threads, so its own SDK pipeline's exporters, which run on theirs, still log.
    """

    def __init__(self, threads: list[threading.Thread]) -> None:
        super().__init__()
        self._threads = {thread.ident: thread for thread in threads}

    def filter(self, record: logging.LogRecord) -> bool:
        thread = self._threads.get(record.thread)
        return thread is None or not thread.is_alive()  # a dead thread's ident may be another's later

    def install(self) -> None:
        # A logger's filters see only the records logged on that logger, not its children's: so each one.
        # The SDK's and exporters' modules were imported when the providers were made.
        for name, found in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(found, logging.Logger) and name.startswith(_SILENCED):
                found.addFilter(self)

    @contextmanager
    def on(self, thread: threading.Thread) -> Iterator[None]:
        """Silence ``thread`` too for the duration (copy on write: other threads read the mapping meanwhile)."""
        self._threads = {**self._threads, thread.ident: thread}
        try:
            yield
        finally:
            self._threads = {ident: t for ident, t in self._threads.items() if ident != thread.ident}


def _shut_down(owned: list[_Owned]) -> None:
    for provider in owned:
        try:
            provider.shutdown()
        except Exception:  # an exporter failing at exit must not break the application's shutdown
            logger.exception("telemetry provider shutdown failed")


__all__ = ["Providers"]
