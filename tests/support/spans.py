"""Spans in process: started as the gateway starts its own, an exporter that keeps them, and the fields two
providers' spans of one script must share."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind

from asgi_ws_gateway.telemetry.lean_tracer import LeanTracer
from asgi_ws_gateway.telemetry.otlp_wire import owned_starter

NO_NATIVE_ENCODER = (
    "the C span encoder (telemetry/_span_wire.c) is not built: no compiler at install, ASGI_WS_GATEWAY_NO_NATIVE "
    "set, or turned off by ASGI_WS_GATEWAY_PURE_PYTHON"
)
"""Why the tests of the C span encoder are skipped."""


class CollectingExporter(SpanExporter):
    """Keeps every span exported to it; ``exported`` is set at the first export."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += spans
        self.exported.set()
        return SpanExportResult.SUCCESS


def span_fields(span: ReadableSpan) -> tuple[Any, ...]:
    """Every exported field of ``span`` but the times' values."""
    links = [(link.context, dict(link.attributes or {}), link.dropped_attributes) for link in span.links]
    return (
        span.name, span.context, span.parent, span.kind, list((span.attributes or {}).items()),
        span.dropped_attributes, links, span.dropped_links, span.status.status_code, span.status.description,
        span.resource, span.instrumentation_scope, span.start_time is not None, span.end_time is not None,
    )  # fmt: skip


def start_as_gateway(
    tracer: trace.Tracer, name: str, context: Context | None, kind: SpanKind, attributes: dict[str, Any],
    links: Sequence[Link] = (),
) -> trace.Span:  # fmt: skip
    """A span started as the gateway starts its own: ``start_owned`` on a lean tracer (in C when the extension is
    loaded, as :class:`Telemetry` starts them), ``start_span`` on another."""
    if isinstance(tracer, LeanTracer):
        return owned_starter(tracer)(name, context, kind, attributes, links)
    return tracer.start_span(name, context, kind, attributes, links)
