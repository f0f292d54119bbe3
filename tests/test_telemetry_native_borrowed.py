"""The C extensions hold what they read across any Python code they run: an object that code drops is not used
after it is freed (found by the sanitized audit, docs/telemetry.md "How the C was audited").

Each case drops the last other reference to what the C code had just read, from code that read runs, and checks
the object outlived the call (before the fix it was freed there, then used: a use after free).
"""

from __future__ import annotations

import gc
import weakref
from typing import Any, ClassVar, cast

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from asgi_ws_gateway.telemetry import metric_totals, otlp_wire
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.histograms import OwnHistogram, OwnHistograms
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import LeanTracer


class Freed:
    """Whether an object was freed, told by a weak reference's callback."""

    def __init__(self, watched: object) -> None:
        self.freed = False
        self._ref = weakref.ref(watched, self._gone)

    def _gone(self, _: object) -> None:
        self.freed = True


class SelfDroppingContext:
    """A span's context whose flags, once read, drop the span's reference to it (the last one)."""

    def __init__(self, span: LeanSpan) -> None:
        self.span: LeanSpan | None = span

    def __getitem__(self, index: int) -> int:
        if self.span is not None:
            self.span._context = None  # type: ignore[assignment]
            self.span = None
        return 1  # sampled


@pytest.mark.skipif(metric_totals.NATIVE_RECORDER is None, reason="the C metric records are not built")
def test_a_span_context_dropped_while_its_flags_are_read_outlives_the_record() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], Resource({}), AlwaysOnExemplarFilter(), False)
    histogram = OwnHistograms(provider, reader)(provider.get_meter("m"), n.HANDSHAKE_DURATION)
    assert isinstance(histogram, OwnHistogram) and type(histogram.recorder).__name__ == "Recorder"
    histogram.recorder(0.5, {}, "")  # the first record (Python's) lists the histogram: the next ones are C's
    span = cast("LeanSpan", LeanTracerProvider(resource=Resource({})).get_tracer("t").start_span("s"))
    context = SelfDroppingContext(span)
    span._context = context  # type: ignore[assignment]
    freed = Freed(context)
    del context
    with trace.use_span(span, end_on_exit=False):
        histogram.recorder(0.5, {}, "")
    assert not freed.freed  # held by the exemplar: (amount, time, attributes, ids)
    assert [type(exemplar[3]).__name__ for exemplar in histogram._by_items[""].exemplars.values()] == [
        "SelfDroppingContext"
    ]
    provider.shutdown()


class LinkDroppingTracer(LeanTracer):
    """A tracer whose max_links, read by the C starter after it found the usual link, empties the links list."""

    links: ClassVar[list[Link]] = []

    @property
    def max_links(self) -> Any:  # type: ignore[override]  # the instance attribute, a property for the test
        LinkDroppingTracer.links.clear()
        return None


@pytest.mark.skipif(otlp_wire.OWNED_STARTER is None, reason="the C span lifecycle is not built")
def test_a_link_dropped_while_the_tracer_is_read_outlives_the_start() -> None:
    tracer = LeanTracerProvider(resource=Resource({})).get_tracer("asgi_ws_gateway")
    del tracer.__dict__["max_links"]
    tracer.__class__ = LinkDroppingTracer
    link = Link(SpanContext(1, 2, True, TraceFlags(1)))
    freed = Freed(link)
    LinkDroppingTracer.links = [link]
    del link
    assert otlp_wire.OWNED_STARTER is not None
    span = otlp_wire.OWNED_STARTER(cast("LeanTracer", tracer))("s", None, SpanKind.SERVER, {}, LinkDroppingTracer.links)
    gc.collect()
    assert not freed.freed  # kept by the span, as Python's start_owned keeps it
    assert type(span) is LeanSpan and [type(kept) for kept in span._links] == [Link]
