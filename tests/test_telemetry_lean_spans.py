"""The gateway's lean spans record what the SDK's spans record, for the same calls.

Both providers run the same script of OpenTelemetry API calls (with the same ids, from a counting
id generator) into the SDK's in-memory exporter; every field a span exports is compared, dropped
counts included, under the default limits and under tight ``OTEL_*_LIMIT`` variables. The end-to-end
comparison (real gateway, real OTLP receiver) is in ``test_telemetry_lean_e2e.py``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.telemetry import propagation
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import NO_ATTRIBUTES, LeanTracer
from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder
from asgi_ws_gateway.telemetry.providers import ATTRIBUTE_LOGGERS, resolve_providers

RESOURCE = Resource({"service.name": "lean-test"})
REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1), trace_state=TraceState([("client", "1")]))  # fmt: skip
LIMITS = {
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "4", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5",
    "OTEL_SPAN_EVENT_COUNT_LIMIT": "2", "OTEL_SPAN_LINK_COUNT_LIMIT": "1", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "2",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "1",
}  # fmt: skip
LIMIT_VARIABLES = (*LIMITS, "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT")


class CountingIds(IdGenerator):
    """The same ids, in the same order, for both providers."""

    def __init__(self) -> None:
        self.next = 0x1000

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return self.next * 0x9E3779B97F4A7C15 % (1 << 128)  # spread, so ratio samplers see both halves

    def is_trace_id_random(self) -> bool:
        return True


class Opaque:
    """An attribute value of no valid type, with its own ``__str__`` (the SDK stores the string)."""

    def __str__(self) -> str:
        return "opaque"


def _script(tracer: trace.Tracer) -> None:
    """Every Span API call the gateway or a policy makes, and the edge cases of each."""
    attributes: dict[str, Any] = {"a": "a long value", "n": 1, "f": 1.5, "b": True, "list": ["xy", "a long one"],
                                  "none": None, "odd": Opaque(), "": "empty key"}  # fmt: skip
    root = tracer.start_span("GET /ws/{room}", None, SpanKind.SERVER, attributes, [Link(REMOTE, {"k": "v", "j": 2})])
    root.set_attribute("n", 2)  # rewritten: moves to the end
    root.set_attribute("late", "value")
    root.set_attributes({"x1": 1, "x2": (1, 2), 7: "int key"})  # type: ignore[dict-item]
    root.set_attribute("", "dropped")
    root.add_event("first", {"e1": "a long event value", "e2": 2, "e3": 3})
    root.add_event("second")
    root.add_link(REMOTE, {"l1": 1, "l2": 2})
    root.add_link(trace.INVALID_SPAN_CONTEXT)  # not valid, no attributes: ignored
    root.update_name("GET /ws/lobby")
    context = trace.set_span_in_context(root, Context())
    with tracer.start_as_current_span("jwks fetch", context, SpanKind.CLIENT, {"url.full": "http://idp/keys"}):
        child = trace.get_current_span()
        child.add_event("inside")
    with pytest.raises(KeyError), tracer.start_as_current_span("redis hit", context, SpanKind.CLIENT):
        raise KeyError("missing")
    with pytest.raises(ValueError), tracer.start_span("manual", context) as manual:
        manual.set_status(StatusCode.OK)
        raise ValueError("after ok")  # OK is final: the exception's ERROR does not replace it
    try:
        raise RuntimeError("recorded")
    except RuntimeError as error:
        root.record_exception(error, {"extra": "x"})
    root.set_status(StatusCode.ERROR, "first")
    root.set_status(Status(StatusCode.UNSET))  # ignored
    root.set_status(Status(StatusCode.ERROR, "second"), "ignored description")
    root.end()
    root.set_attribute("after", "end")  # ignored, with a warning
    root.add_event("after end")
    root.end()  # a second end: a warning, no second export
    connection = tracer.start_span("connection chat", Context(), SpanKind.INTERNAL, {"api": "chat"},
                                   [Link(root.get_span_context())])  # fmt: skip
    connection.set_status(Status(StatusCode.OK, "fine"))
    connection.end()


def _fields(span: ReadableSpan) -> tuple[Any, ...]:
    def attrs(mapping: Any) -> list[tuple[str, Any]]:
        return list((mapping or {}).items())

    events = [(e.name, attrs(e.attributes), e.dropped_attributes) for e in span.events]
    for event in events:  # the stack trace names the provider's own frames
        event[1][:] = [(k, v) for k, v in event[1] if k != "exception.stacktrace"]
    links = [(link.context, attrs(link.attributes), link.dropped_attributes) for link in span.links]
    return (
        span.name, span.context, span.parent, span.kind, attrs(span.attributes), span.dropped_attributes,
        events, span.dropped_events, links, span.dropped_links, span.status.status_code, span.status.description,
        span.resource, span.instrumentation_scope,
    )  # fmt: skip


def _run(make: Callable[[], Any], script: Callable[[trace.Tracer], None] = _script) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = make()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    script(provider.get_tracer("asgi_ws_gateway", "1.0"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _both(script: Callable[[trace.Tracer], None] = _script) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
    sdk = _run(lambda: TracerProvider(resource=RESOURCE, id_generator=CountingIds(), shutdown_on_exit=False), script)
    lean = _run(lambda: LeanTracerProvider(resource=RESOURCE, id_generator=CountingIds()), script)
    return sdk, lean


@pytest.fixture
def no_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*LIMIT_VARIABLES, "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_limits")
def test_lean_spans_record_what_sdk_spans_record() -> None:
    """Default limits: names, ids, parents, kinds, attributes in order, events, links, status, resource, scope."""
    sdk, lean = _both()
    assert [_fields(span) for span in lean] == [_fields(span) for span in sdk]
    assert len(lean) == 5 and all(isinstance(span, LeanSpan) for span in lean)
    root = next(span for span in lean if span.name == "GET /ws/lobby")
    assert dict(root.attributes or {})["odd"] == "opaque" and root.dropped_attributes == 2  # "" twice
    assert [e.name for e in root.events] == ["first", "second", "exception"]


def test_lean_spans_warn_as_sdk_spans_do(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Tight limits, invalid keys, an ended span: the SDK's warnings, word for word and in order."""
    for name in (*LIMIT_VARIABLES, "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
    for name in ATTRIBUTE_LOGGERS:  # another test's gateway may have throttled them: every line is wanted here
        monkeypatch.setattr(logging.getLogger(name), "filters", [])
    warned = []
    for make in (
        lambda: TracerProvider(resource=RESOURCE, id_generator=CountingIds(), shutdown_on_exit=False),
        lambda: LeanTracerProvider(resource=RESOURCE, id_generator=CountingIds()),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _run(make)
        warned.append([record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING])
    sdk, lean = warned
    assert lean == sdk
    assert any(message.startswith("Attributes dict is full") for message in lean)


def _without_times(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.ClearField("start_time_unix_nano")
                span.ClearField("end_time_unix_nano")
                for event in span.events:
                    event.ClearField("time_unix_nano")
                    for pair in event.attributes:
                        if pair.key == "exception.stacktrace":
                            pair.value.string_value = ""
    return request


@pytest.mark.usefixtures("no_limits")
@pytest.mark.parametrize("limited", [False, True], ids=["default-limits", "tight-limits"])
def test_lean_spans_encode_to_the_sdk_spans_otlp(monkeypatch: pytest.MonkeyPatch, limited: bool) -> None:
    """What reaches the wire: the SDK's encoder and the gateway's give, for lean spans, the SDK spans' OTLP."""
    for name, value in LIMITS.items() if limited else ():
        monkeypatch.setenv(name, value)
    sdk, lean = _both()
    expected = _without_times(sdk_encode_spans(sdk))
    assert _without_times(sdk_encode_spans(lean)) == expected
    assert _without_times(ExportTraceServiceRequest.FromString(SpanEncoder().encode(lean))) == expected


@pytest.mark.usefixtures("no_limits")
def test_lean_spans_respect_the_span_limit_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` and the other limits: the same values kept and the same drops counted."""
    for name, value in LIMITS.items():
        monkeypatch.setenv(name, value)
    sdk, lean = _both()
    assert [_fields(span) for span in lean] == [_fields(span) for span in sdk]
    root = next(span for span in lean if span.name == "GET /ws/lobby")
    assert len(root.attributes or {}) == 4 and root.dropped_attributes > 0
    assert (len(root.events), root.dropped_events, len(root.links), root.dropped_links) == (2, 1, 1, 1)
    assert all(len(v) <= 5 for v in (root.attributes or {}).values() if isinstance(v, str))


@pytest.mark.usefixtures("no_limits")
def test_zero_attribute_limit_drops_every_attribute_as_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "0")
    sdk, lean = _both()
    assert [_fields(span) for span in lean] == [_fields(span) for span in sdk]
    root = next(span for span in lean if span.name == "GET /ws/lobby")
    assert all(not span.attributes for span in lean) and root.dropped_attributes == 8 + 1 + 1 + 3 + 1


@pytest.mark.usefixtures("no_limits")
@pytest.mark.parametrize(
    ("sampler", "argument"),
    [
        ("always_off", None),
        ("traceidratio", "0.5"),
        ("parentbased_traceidratio", "0.5"),
        ("parentbased_always_off", None),
    ],
)
def test_lean_spans_follow_the_sampler_variables(
    monkeypatch: pytest.MonkeyPatch, sampler: str, argument: str | None
) -> None:
    """``OTEL_TRACES_SAMPLER``/``_ARG``: the SDK's sampler decides, span by span, as for the SDK's spans."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if argument is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    decisions: dict[str, list[tuple[bool, bool, int]]] = {}

    def script(tracer: trace.Tracer) -> None:
        seen = decisions.setdefault(type(tracer).__name__, [])
        for i in range(40):
            parent = Context() if i % 2 else trace.set_span_in_context(NonRecordingSpan(REMOTE), Context())
            span = tracer.start_span(f"span {i}", parent)
            seen.append((span.is_recording(), span.get_span_context().trace_flags.sampled,
                         span.get_span_context().trace_flags))  # fmt: skip
            span.end()

    sdk, lean = _both(script)
    assert decisions["LeanTracer"] == decisions["Tracer"]
    assert [_fields(span) for span in lean] == [_fields(span) for span in sdk]
    if sampler.endswith("traceidratio"):
        assert 0 < sum(sampled for _, sampled, _ in decisions["LeanTracer"]) < 40
    elif sampler == "always_off":
        assert lean == [] and not any(recording for recording, _, _ in decisions["LeanTracer"])
    else:  # the remote parent is sampled: its children are; roots are not
        assert [span.name for span in lean] == [f"span {i}" for i in range(0, 40, 2)]


@pytest.mark.usefixtures("no_limits")
def test_the_lean_provider_flushes_its_processors_on_force_flush_and_shutdown() -> None:
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(resource=RESOURCE)
    calls: list[str] = []

    class Recording(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Context | None = None) -> None:
            calls.append(f"start {span.name}")

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            calls.append("flush")
            return True

        def shutdown(self) -> None:
            calls.append("shutdown")
            super().shutdown()

    provider.add_span_processor(Recording(exporter))
    provider.get_tracer("t").start_span("s").end()
    assert provider.force_flush() is True
    provider.shutdown()
    assert calls == ["start s", "flush", "shutdown"] and [s.name for s in exporter.get_finished_spans()] == ["s"]


@pytest.mark.usefixtures("no_limits")
def test_processors_added_after_a_tracer_see_its_spans_in_order() -> None:
    """The tracers call the processors themselves: one added later is called too, after the earlier ones,
    and a batch processor's subclass still has its ``on_start`` called; one added while a span is open sees it end."""
    provider = LeanTracerProvider(resource=RESOURCE)
    tracer = provider.get_tracer("t")
    calls: list[str] = []

    class Recording(SimpleSpanProcessor):
        def __init__(self, label: str) -> None:
            super().__init__(InMemorySpanExporter())
            self.label = label

        def on_start(self, span: Any, parent_context: Context | None = None) -> None:
            calls.append(f"{self.label} start {span.name}")

        def on_end(self, span: ReadableSpan) -> None:
            calls.append(f"{self.label} end {span.name}")

    class Batching(BatchSpanProcessor):
        def on_start(self, span: Any, parent_context: Context | None = None) -> None:
            calls.append(f"batch start {span.name}")

    provider.add_span_processor(Recording("first"))
    tracer.start_span("a").end()
    provider.add_span_processor(Recording("second"))
    provider.add_span_processor(Batching(InMemorySpanExporter()))
    tracer.start_span("b").end()
    open_span = tracer.start_span("c")
    provider.add_span_processor(Recording("third"))  # while "c" is open: it sees "c" end, as with the SDK's spans
    open_span.end()
    provider.shutdown()
    assert calls == [
        "first start a", "first end a",
        "first start b", "second start b", "batch start b", "first end b", "second end b",
        "first start c", "second start c", "batch start c", "first end c", "second end c", "third end c",
    ]  # fmt: skip


# -- traceparent, written directly --------------------------------------------------------------------


@pytest.fixture
def textmap() -> Iterator[None]:
    saved = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(saved)


def _contexts() -> Iterator[tuple[str, Context, trace.Span | None]]:
    sampled = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(3))
    unsampled = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(0))
    with_state = SpanContext(0xABC, 0xDEF, False, TraceFlags(1), TraceState([("a", "1"), ("b", "2")]))
    yield "sampled", trace.set_span_in_context(NonRecordingSpan(sampled), Context()), None
    yield "unsampled", trace.set_span_in_context(NonRecordingSpan(unsampled), Context()), None
    yield "tracestate", trace.set_span_in_context(NonRecordingSpan(with_state), Context()), None
    yield "span given", Context(), NonRecordingSpan(sampled)
    yield "invalid", Context(), None
    too_long = SpanContext(1 << 130, 1 << 70, is_remote=False, trace_flags=TraceFlags(1))  # invalid, still written
    yield "ids out of range", trace.set_span_in_context(NonRecordingSpan(too_long), Context()), None
    yield "baggage", baggage.set_baggage("user", "alice", trace.set_span_in_context(NonRecordingSpan(sampled))), None


@pytest.mark.usefixtures("textmap")
@pytest.mark.parametrize("readable", [True, False], ids=["read-directly", "get_global_textmap"])
@pytest.mark.parametrize(
    "propagators",
    [
        [TraceContextTextMapPropagator(), W3CBaggagePropagator()],  # the default: written directly
        [TraceContextTextMapPropagator()],  # anything else: the global propagator writes
        [W3CBaggagePropagator(), TraceContextTextMapPropagator()],
    ],
    ids=["default", "tracecontext-only", "reordered"],
)
def test_injected_headers_are_the_global_propagators(
    propagators: list[Any], readable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream headers written directly are those ``propagate.inject`` writes, for every kind of context,
    whether the global propagator is read where the API keeps it or through ``get_global_textmap``."""
    assert propagation._TEXTMAP_READABLE  # this API's: the test's other half stands for one without it
    monkeypatch.setattr(propagation, "_TEXTMAP_READABLE", readable)
    propagate.set_global_textmap(CompositePropagator(propagators))
    for name, context, span in _contexts():
        expected: dict[str, str] = {}
        propagate.inject(expected, context if span is None else trace.set_span_in_context(span, context))
        client = [("traceparent", "00-client-01"), ("tracestate", "client=1"), ("x-other", "kept")]
        headers = list(client)
        propagation.inject(headers, context, span)
        assert headers == ([("x-other", "kept"), *expected.items()] if expected else client), name


def test_a_forked_child_s_resource_reaches_the_lean_spans() -> None:
    """The SDK provider updates its resource after a fork (process attributes); lean tracers follow."""
    provider = LeanTracerProvider(resource=RESOURCE)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    provider._update_resource(Resource({"process.pid": 4242}))  # what the SDK's after-fork hook calls
    tracer.start_span("s").end()
    provider.shutdown()
    (span,) = exporter.get_finished_spans()
    assert dict(span.resource.attributes) == {"service.name": "lean-test", "process.pid": 4242}


@pytest.mark.parametrize(("value", "kind"), [("", LeanTracerProvider), ("gateway", LeanTracerProvider),
                                             (" SDK ", TracerProvider)])  # fmt: skip
def test_asgi_ws_gateway_spans_chooses_the_own_provider_s_spans(value: str, kind: type) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_METRICS_EXPORTER": "none",
               "ASGI_WS_GATEWAY_SPANS": value}  # fmt: skip
    providers = resolve_providers(TelemetryConfig(), environ=environ)
    try:
        assert type(providers.tracer) is kind
    finally:
        providers.shutdown(timeout=5.0)


def test_an_unknown_asgi_ws_gateway_spans_value_stops_start_up() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "ASGI_WS_GATEWAY_SPANS": "lean"}
    with pytest.raises(ConfigError, match="ASGI_WS_GATEWAY_SPANS: 'lean' is not supported"):
        resolve_providers(TelemetryConfig(), environ=environ)


def _links_script(tracer: trace.Tracer) -> None:
    """Links given at start (more than a tight limit, without attributes, with empty ones), then added."""
    other = SpanContext(REMOTE.trace_id, REMOTE.span_id + 1, is_remote=True)
    links = [Link(REMOTE), Link(other, {}), Link(trace.INVALID_SPAN_CONTEXT), Link(other, {"k": "v"})]
    span = tracer.start_span("links", Context(), SpanKind.INTERNAL, None, links)
    span.add_link(other, {"late": 1})
    span.end()
    bare = tracer.start_span("one link", Context(), links=[Link(REMOTE)])
    bare.add_link(other)  # after the link given at start, which stays first
    bare.end()


@pytest.mark.usefixtures("no_limits")
@pytest.mark.parametrize("limited", [False, True], ids=["default-limits", "tight-limits"])
def test_links_given_at_start_are_kept_and_counted_as_the_sdk(monkeypatch: pytest.MonkeyPatch, limited: bool) -> None:
    """Start links (kept as a tuple when none is dropped) and later ``add_link``: the SDK's links, drops and OTLP."""
    for name, value in LIMITS.items() if limited else ():
        monkeypatch.setenv(name, value)
    sdk, lean = _both(_links_script)
    assert [_fields(span) for span in lean] == [_fields(span) for span in sdk]
    assert _without_times(ExportTraceServiceRequest.FromString(SpanEncoder().encode(lean))) == _without_times(
        sdk_encode_spans(sdk)
    )
    expected = [(1, 3), (1, 1)] if limited else [(4, 0), (2, 0)]
    assert [(len(span.links), span.dropped_links) for span in lean] == expected


@pytest.mark.usefixtures("no_limits")
@pytest.mark.parametrize("variable", [None, "parentbased_always_on"], ids=["unset", "parentbased_always_on"])
def test_the_default_sampler_decided_in_the_tracer_as_the_sdk(
    monkeypatch: pytest.MonkeyPatch, variable: str | None
) -> None:
    """The default sampler, decided without its call: every kind of parent gives the SDK's decision,
    flags, trace state and span."""
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    if variable is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", variable)
    state = TraceState([("vendor", "x")])
    parents = [
        None, Context(),
        *(trace.set_span_in_context(NonRecordingSpan(SpanContext(REMOTE.trace_id, REMOTE.span_id, remote,
                                                                   TraceFlags(flags), state)), Context())
          for remote in (True, False) for flags in (0, 1, 0x3)),
        trace.set_span_in_context(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT), Context()),
    ]  # fmt: skip
    seen: dict[str, list[tuple[Any, ...]]] = {}

    def script(tracer: trace.Tracer) -> None:
        if isinstance(tracer, LeanTracer):
            assert tracer.parent_or_on  # the tracer decides: the case under test
        for i, parent in enumerate(parents):
            span = tracer.start_span(f"span {i}", parent, attributes={"i": i})
            context = span.get_span_context()
            seen.setdefault(type(tracer).__name__, []).append(
                (
                    span.is_recording(),
                    context.trace_flags,
                    context.trace_state,
                    type(span).__name__ != "NonRecordingSpan",
                )
            )
            span.end()

    sdk, lean = _both(script)
    assert seen["LeanTracer"] == seen["Tracer"]
    assert [_fields(span) for span in lean] == [_fields(span) for span in sdk]
    assert [span.name for span in lean] == ["span 0", "span 1", "span 3", "span 4", "span 6", "span 7", "span 8"]


@pytest.mark.usefixtures("no_limits")
@pytest.mark.parametrize("script", [_script, _links_script], ids=["api-script", "links-script"])
@pytest.mark.parametrize("limited", [False, True], ids=["default-limits", "tight-limits"])
def test_lean_spans_fields_read_directly_encode_to_the_sdk_encoders_bytes(
    monkeypatch: pytest.MonkeyPatch, limited: bool, script: Callable[[trace.Tracer], None]
) -> None:
    """The gateway's encoder reads a lean span's fields without its properties: the SDK encoder's exact bytes."""
    for name, value in LIMITS.items() if limited else ():
        monkeypatch.setenv(name, value)
    _, lean = _both(script)
    assert SpanEncoder().encode(lean) == sdk_encode_spans(lean).SerializeToString()


@pytest.mark.usefixtures("no_limits")
def test_default_ids_are_drawn_as_the_sdk_draws_them() -> None:
    """With the SDK's RandomIdGenerator (drawn inline), the same seed gives the SDK's ids, flags and parents."""

    def ids(provider: TracerProvider) -> list[tuple[Any, ...]]:
        random.seed(7)
        tracer = provider.get_tracer("t")
        root = tracer.start_span("root")
        child = tracer.start_span("child", trace.set_span_in_context(root, Context()))
        return [(s.get_span_context(), cast("ReadableSpan", s).parent) for s in (root, child)]

    sdk = ids(TracerProvider(resource=RESOURCE, shutdown_on_exit=False))
    lean = ids(LeanTracerProvider(resource=RESOURCE))
    assert lean == sdk
    assert lean[1][0].trace_id == lean[0][0].trace_id and lean[0][0].trace_flags.random_trace_id


class _EveryOtherRecordedOnly(Sampler):
    """Samples a span whose name ends in "sampled", records the others without sampling them."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if name.endswith("sampled") else Decision.RECORD_ONLY
        return SamplingResult(decision)

    def get_description(self) -> str:
        return "EveryOtherRecordedOnly"


def test_the_batch_processor_exports_sampled_spans_only_as_the_sdk() -> None:
    """The SDK's ``BatchSpanProcessor`` queues what it is handed straight from a lean span's end: only
    sampled spans; a span recorded but not sampled reaches every other processor, not the export."""

    class Every(SpanProcessor):
        def __init__(self) -> None:
            self.ended: list[str] = []

        def on_end(self, span: ReadableSpan) -> None:
            self.ended.append(span.name)

    def run(make: Callable[[], Any]) -> tuple[list[str], list[str]]:
        batched, every = InMemorySpanExporter(), Every()
        provider = make()
        provider.add_span_processor(BatchSpanProcessor(batched))
        provider.add_span_processor(every)
        tracer = provider.get_tracer("asgi_ws_gateway", "1.0")
        for name in ("one sampled", "two recorded", "three sampled", "four recorded"):
            tracer.start_span(name).end()
        provider.shutdown()
        return [span.name for span in batched.get_finished_spans()], every.ended

    sampler = _EveryOtherRecordedOnly()
    sdk = run(lambda: TracerProvider(resource=RESOURCE, sampler=sampler, shutdown_on_exit=False))
    lean = run(lambda: LeanTracerProvider(resource=RESOURCE, sampler=sampler))
    assert (
        lean
        == sdk
        == (["one sampled", "three sampled"], ["one sampled", "two recorded", "three sampled", "four recorded"])
    )


def _owned_script(tracer: trace.Tracer) -> None:
    """The gateway's own spans: a lean tracer's ``start_owned`` and ``set_plain``, the API's calls for others."""
    lean = isinstance(tracer, LeanTracer)

    def start(name: str, context: Context | None, kind: SpanKind, attributes: dict[str, Any]) -> trace.Span:
        if isinstance(tracer, LeanTracer):
            return tracer.start_owned(name, context, kind, attributes, [Link(REMOTE)])
        return tracer.start_span(name, context, kind, attributes, [Link(REMOTE)])

    def set_plain(span: trace.Span, attributes: dict[str, Any]) -> None:
        if lean:
            cast("LeanSpan", span).set_plain(attributes)
        else:
            span.set_attributes(attributes)

    root = start("GET /ws/{room}", None, SpanKind.SERVER, {"http.route": "/ws/{room}", "server.port": 8000,
                                                           "url.path": "/ws/lobby/long", "a": "x", "b": 2})  # fmt: skip
    child = start("upstream connect", trace.set_span_in_context(root, Context()), SpanKind.CLIENT, {"attempt": 1})
    set_plain(child, {"http.response.status_code": 101, "error.type": "refused-by-upstream"})
    child.end()
    set_plain(root, {"a": "rewritten, so last", "outcome": "accepted", "c": 3})
    root.set_attribute("enduser.id", "alice")  # a policy's, checked: the encoder checks the values again
    root.end()
    set_plain(root, {"after": "end"})  # ignored with the SDK's warning


@pytest.mark.usefixtures("no_limits")
@pytest.mark.parametrize("limited", [False, True], ids=["default-limits", "tight-limits"])
def test_the_gateway_s_own_spans_record_and_encode_as_the_sdk_spans(
    monkeypatch: pytest.MonkeyPatch, limited: bool
) -> None:
    """``start_owned`` and ``set_plain`` (unchecked plain attributes): the SDK's fields, limits and bytes."""
    for name, value in LIMITS.items() if limited else ():
        monkeypatch.setenv(name, value)
    random.seed(11)  # the default ids (drawn inline by the lean tracer): the same for both
    sdk = _run(lambda: TracerProvider(resource=RESOURCE, shutdown_on_exit=False), _owned_script)
    random.seed(11)
    lean = _run(lambda: LeanTracerProvider(resource=RESOURCE), _owned_script)
    assert [_fields(span) for span in lean] == [_fields(span) for span in sdk]
    assert SpanEncoder().encode(lean) == sdk_encode_spans(lean).SerializeToString()
    assert _without_times(ExportTraceServiceRequest.FromString(SpanEncoder().encode(lean))) == _without_times(
        sdk_encode_spans(sdk)
    )
    child = next(span for span in lean if span.name == "upstream connect")
    assert cast("LeanSpan", child)._plain is not limited  # tight limits take the checked path


class _StartWatcher(SpanProcessor):
    """A processor with an ``on_start``: the lean tracer then starts owned spans through its checked path."""

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        pass


@pytest.mark.parametrize("setter", ["set_attribute", "set_attributes", "set_plain"])
def test_an_owned_span_started_without_attributes_takes_them_later(setter: str) -> None:
    """``start_owned`` with an empty dict, under a start processor: the span kept the tracer's shared, immutable
    ``NO_ATTRIBUTES`` (``attributes or NO_ATTRIBUTES``), and every attribute set on it later raised TypeError."""
    provider = LeanTracerProvider(resource=RESOURCE)
    provider.add_span_processor(_StartWatcher())
    tracer = provider.get_tracer("asgi_ws_gateway", "1.0")
    assert isinstance(tracer, LeanTracer)
    span = cast("LeanSpan", tracer.start_owned("s", Context(), SpanKind.INTERNAL, {}, ()))
    if setter == "set_attribute":
        span.set_attribute("outcome", "accepted")
    else:
        getattr(span, setter)({"outcome": "accepted"})
    span.end()
    assert dict(span.attributes or {}) == {"outcome": "accepted"}
    assert dict(NO_ATTRIBUTES) == {}
    provider.shutdown()
