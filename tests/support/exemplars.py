"""Spans and exemplar filters the duration-histogram tests record under (the Python records and the C ones)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan

FILTERS: dict[str, type[ExemplarFilter]] = {
    "trace_based": TraceBasedExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "always_off": AlwaysOffExemplarFilter,
}
TEMPORALITIES = {"cumulative": AggregationTemporality.CUMULATIVE, "delta": AggregationTemporality.DELTA}
SAMPLED = NonRecordingSpan(SpanContext(0xA1, 0xB1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
UNSAMPLED = NonRecordingSpan(SpanContext(0xA2, 0xB2, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT)))


class _FixedIds(IdGenerator):
    def __init__(self, trace_id: int, span_id: int) -> None:
        self.ids = trace_id, span_id

    def generate_trace_id(self) -> int:
        return self.ids[0]

    def generate_span_id(self) -> int:
        return self.ids[1]


class _RecordOnly(sampling.Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
        return sampling.SamplingResult(sampling.Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "RecordOnly"


def _lean_span(trace_id: int, span_id: int, sampled: bool) -> trace.Span:
    """A gateway's own span (the histograms read its ids without property calls), sampled or recorded only."""
    sampler = sampling.ALWAYS_ON if sampled else _RecordOnly()
    provider = LeanTracerProvider(resource=Resource({}), sampler=sampler, id_generator=_FixedIds(trace_id, span_id))
    span = provider.get_tracer("t").start_span("s")
    assert isinstance(span, LeanSpan)
    return span


LEAN_SAMPLED = _lean_span(0xA3, 0xB3, True)
LEAN_UNSAMPLED = _lean_span(0xA4, 0xB4, False)
