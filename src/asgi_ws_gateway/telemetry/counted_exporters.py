"""The gateway's own OTLP exporters and batch processors, counting what they lose in
:data:`~.export_losses.EXPORT_LOSSES` (``ws_gateway.telemetry.dropped``).

The wrappers only count: exporting, retries and timeouts stay the wrapped exporter's. The queue's drops are
read through the SDK batch processor's metrics object (1.45), a private member: an SDK without it keeps
its log line of them, uncounted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .export_losses import EXPORT_LOSSES, Signal


class _QueueDrops:
    """The SDK batch processor's metrics object (1.45: ``drop_items``, ``finish_items``, ``register_queue_size``),
    counting what it drops for a full queue, and passing every call on to the SDK's own (its processor metrics,
    with ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``; a no-op else)."""

    def __init__(self, signal: Signal, sdk: Any) -> None:
        self._signal: Signal = signal
        self._sdk = sdk

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        if error_type == "queue_full":  # not "already_shutdown": what came after the exporters closed
            EXPORT_LOSSES.add(self._signal, "queue_full", count)
        self._sdk.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        self._sdk.finish_items(count)

    def register_queue_size(self, get_queue_size: Any) -> None:
        self._sdk.register_queue_size(get_queue_size)


def count_queue_drops(processor: object, signal: Signal) -> bool:
    """Count what a ``BatchSpanProcessor``'s or ``BatchLogRecordProcessor``'s queue drops; False when this SDK's
    processor is not the one known (its drops are then logged only)."""
    batch = getattr(processor, "_batch_processor", None)
    if batch is None or not hasattr(batch, "_metrics"):
        return False
    batch._metrics = _QueueDrops(signal, batch._metrics)
    return True


Result = TypeVar("Result")


def _counted(signal: Signal, items: int | Callable[[], int], export: Callable[[], Result], success: Result) -> Result:
    """``export()``'s result, its ``items`` counted as lost unless it is ``success`` (an exception too)."""
    result: Result | None = None  # None: it raised, the batch lost all the same (counted, then raised as it was)
    try:
        result = export()
        return result
    finally:
        if result is not success:  # points are counted only then: a walk of the collection
            EXPORT_LOSSES.add(signal, "export_failed", items if isinstance(items, int) else items())


class CountedSpanExporter(SpanExporter):
    """``exporter``, counting the spans of each batch it failed to export."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return _counted("traces", len(spans), lambda: self.exporter.export(spans), SpanExportResult.SUCCESS)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountedLogExporter(LogRecordExporter):
    """``exporter``, counting the records of each batch it failed to export."""

    def __init__(self, exporter: LogRecordExporter) -> None:
        self.exporter = exporter

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return _counted("logs", len(batch), lambda: self.exporter.export(batch), LogRecordExportResult.SUCCESS)

    def shutdown(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def _points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )


class CountedMetricExporter(MetricExporter):
    """``exporter``, counting the points of each collection it failed to export (its temporality and
    aggregation are the reader's, read from it)."""

    def __init__(self, exporter: MetricExporter) -> None:
        super().__init__(exporter._preferred_temporality, exporter._preferred_aggregation)
        self.exporter = exporter

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        def export() -> MetricExportResult:
            return self.exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

        return _counted("metrics", lambda: _points(metrics_data), export, MetricExportResult.SUCCESS)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


__all__ = ["CountedLogExporter", "CountedMetricExporter", "CountedSpanExporter", "count_queue_drops"]
