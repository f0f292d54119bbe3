"""The process's count of spans, metric points and log records its own OTLP exporters lost, for
``ws_gateway.telemetry.dropped`` (docs/telemetry.md); counted by
:mod:`.counted_exporters`.

While a collector is down, slow or refusing, the SDK's batch processors drop what no longer fits their
queue (``OTEL_BSP_MAX_QUEUE_SIZE``: 2,048 spans) and each failed export loses its batch. The log says so
(throttled: a line per kind and 10 s) but no metric did: the SDK's own processor metrics are off unless
``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` and go to the global meter provider, not the gateway's.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Literal

Signal = Literal["traces", "metrics", "logs"]
Reason = Literal["queue_full", "export_failed"]

REASONS: tuple[tuple[Signal, Reason], ...] = (
    ("traces", "queue_full"), ("traces", "export_failed"), ("metrics", "export_failed"),
    ("logs", "queue_full"), ("logs", "export_failed"),
)  # fmt: skip
"""Every series, observed from 0 so that an alert on an increase sees the first loss."""


class ExportLosses:
    """Items lost so far, by signal and reason; counted from the processors' and the reader's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[Signal, Reason]] = Counter()

    def add(self, signal: Signal, reason: Reason, items: int) -> None:
        with self._lock:
            self._counts[signal, reason] += items

    def counts(self) -> Iterator[tuple[Signal, Reason, int]]:
        with self._lock:
            counts = dict(self._counts)
        for signal, reason in REASONS:
            yield signal, reason, counts.get((signal, reason), 0)


EXPORT_LOSSES = ExportLosses()


__all__ = ["EXPORT_LOSSES", "REASONS", "ExportLosses", "Reason", "Signal"]
