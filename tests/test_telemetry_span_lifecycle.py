"""The C span lifecycle (``_span_wire``'s ``starter``, ``end_own``, ``queue_into``) against the Python one, its
reference: the same spans from the same calls, and Python's path wherever that leaves its fast path.

Each case runs both on twin inputs (fresh dicts and links, the same ``random`` state) and compares every field a
span has, the ids drawn (the ``random`` state after), what the processors were handed and what was logged.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from asgi_ws_gateway.telemetry import current, lean_provider, lean_spans, otlp_wire
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import CHILD_FLAGS, NO_ATTRIBUTES, ROOT_FLAGS, LeanTracer
from support.spans import CollectingExporter

needs_lifecycle = pytest.mark.skipif(
    otlp_wire.OWNED_STARTER is None,
    reason="the C span lifecycle (telemetry/_span_wire.c) is not built or turned off by ASGI_WS_GATEWAY_PURE_PYTHON",
)
pytestmark = needs_lifecycle
native_module: Any = None
if otlp_wire.OWNED_STARTER is not None:
    from asgi_ws_gateway.telemetry import _span_wire as native_module

RESOURCE = Resource({"service.name": "lifecycle-test"})
REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x")]))  # fmt: skip
LIMIT_VARIABLES = ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT",
                   "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_TRACES_SAMPLER",
                   "OTEL_TRACES_SAMPLER_ARG")  # fmt: skip


class Recording(SpanProcessor):
    """A processor that records the spans handed to it (at start and end)."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[Any] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.started.append(span)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


PROVIDERS = ("usual", "on_start", "count-limit", "length-limit", "no-links", "sampler")


def _provider(kind: str, monkeypatch: pytest.MonkeyPatch) -> tuple[LeanTracerProvider, Recording]:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if kind == "count-limit":
        monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
    if kind == "length-limit":
        monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    if kind == "no-links":
        monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "0")
    provider = LeanTracerProvider(resource=RESOURCE, sampler=ALWAYS_ON if kind == "sampler" else None)
    recording = Recording()
    if kind == "on_start":
        provider.add_span_processor(recording)  # an on_start to call: start_owned's slow path
    else:  # the usual batch processor, its queue read afterwards
        provider.add_span_processor(BatchSpanProcessor(CollectingExporter(), schedule_delay_millis=3_600_000))
    return provider, recording


def _tracer(provider: LeanTracerProvider) -> LeanTracer:
    tracer = provider.get_tracer("lifecycle")
    assert type(tracer) is LeanTracer
    return tracer


def _span_state(span: Any) -> tuple[Any, ...]:
    """Every field of a started span (times: whether set), flags' identity and the links' own attributes."""
    if type(span) is tuple:  # an error raised
        return span
    if type(span) is not LeanSpan:
        return (type(span), span.get_span_context())
    context = span._context
    return (
        type(span), span._name, context, type(context), id(context[3]), id(context[4]), span._kind,
        id(span._instrumentation_scope), span._parent, id(span._resource), id(span._tracer), span._end_time,
        span._status, span._dropped, span._events, type(span._links),
        [(type(link), link.context, link._attributes is NO_ATTRIBUTES, dict(link.attributes or {}))
         for link in span._links],
        span._plain, type(span._attributes), list(span._attributes.items()), span._record_exception,
        span._set_status_on_exception, sorted(vars(span)),
    )  # fmt: skip


PARENTS = ("none", "lean", "lean-unsampled", "lean-invalid", "remote", "sdk-span", "no-span-in-context")
LINKS = ("none", "usual", "usual-list", "with-attributes", "two", "invalid", "generator-of-one")


def _parent_context(tracer: LeanTracer, parent: str) -> Context | None:
    """A context holding a parent of the given kind (None: no context, the current one read)."""
    if parent == "none":
        return None
    if parent == "no-span-in-context":
        return Context({"other": 1})
    if parent == "remote":
        return trace.set_span_in_context(NonRecordingSpan(REMOTE), Context())
    if parent == "sdk-span":
        sdk = TracerProvider(resource=RESOURCE).get_tracer("sdk").start_span("sdk parent")
        return trace.set_span_in_context(sdk, Context())
    span = tracer.start_span("lean parent")
    assert type(span) is LeanSpan
    if parent == "lean-unsampled":  # as a lean span under an unsampled decision would carry
        span._context = tuple.__new__(SpanContext, (*span._context[:3], TraceFlags(2), *span._context[4:]))
    if parent == "lean-invalid":
        span._context = tuple.__new__(SpanContext, (*span._context[:5], False))
    return trace.set_span_in_context(span, Context())


def _links(kind: str) -> Any:
    local = SpanContext(0x1F, 0x2F, is_remote=False, trace_flags=TraceFlags(1))
    return {
        "none": (),
        "usual": (Link(REMOTE),),
        "usual-list": [Link(REMOTE)],
        "with-attributes": (Link(REMOTE, {"k": "v"}),),
        "two": (Link(REMOTE), Link(local)),
        "invalid": (Link(SpanContext(0, 0, is_remote=False)),),
        "generator-of-one": (link for link in (Link(REMOTE),)),
    }[kind]


values = st.one_of(st.text(max_size=6), st.integers(-(2**70), 2**70))
attribute_dicts = st.dictionaries(st.text(min_size=1, max_size=6), values, max_size=6)


def _start_both(
    tracer: LeanTracer, name: str, parent: str, attached: bool, kind: SpanKind, attributes: dict[str, Any],
    links: str, seed: int,
) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """The same start in C and in Python: each span, and the ``random`` state after each."""
    out = []
    native = otlp_wire.owned_starter(tracer)
    for start in (native, tracer.start_owned):
        random.seed(seed)  # the parent's ids too
        context = _parent_context(tracer, parent)
        given = dict(attributes)
        token = current.attach(context) if attached and context is not None else None
        span: Any
        try:
            span = start(name, None if attached else context, kind, given, _links(links))
        except TypeError as error:  # links Python cannot take: the same error
            span = (type(error), str(error))
        finally:
            after = random.getstate()
            if token is not None:
                current.detach(token)
        assert type(span) is not LeanSpan or (span._attributes is given) == (span._plain is True)
        out += [span, after]
    return out[0], out[1], out[2], out[3]


@pytest.mark.parametrize("provider_kind", PROVIDERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(max_size=10),
    parent=st.sampled_from(PARENTS),
    attached=st.booleans(),
    kind=st.sampled_from(list(SpanKind)),
    attributes=attribute_dicts,
    links=st.sampled_from(LINKS),
    seed=st.integers(0, 2**32),
)
def test_a_span_started_in_c_is_the_python_span(
    monkeypatch: pytest.MonkeyPatch, provider_kind: str, name: str, parent: str, attached: bool, kind: SpanKind,
    attributes: dict[str, Any], links: str, seed: int,
) -> None:  # fmt: skip
    provider, recording = _provider(provider_kind, monkeypatch)
    tracer = _tracer(provider)
    native, native_random, python, python_random = _start_both(
        tracer, name, parent, attached, kind, attributes, links, seed
    )
    assert _span_state(native) == _span_state(python)
    assert native_random == python_random  # the same ids drawn, as many
    if provider_kind == "on_start" and type(native) is LeanSpan:  # each handed to on_start
        assert native in recording.started and python in recording.started
    provider.shutdown()


def test_the_owned_dict_is_the_span_s_and_the_usual_link_gets_no_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ = _provider("usual", monkeypatch)
    tracer = _tracer(provider)
    given, link = {"a": 1}, Link(REMOTE)
    span = otlp_wire.owned_starter(tracer)("s", None, SpanKind.SERVER, given, (link,))
    assert type(span) is LeanSpan and span._attributes is given and span._links == (link,)
    assert link._attributes is NO_ATTRIBUTES and span._plain is True
    assert type(span.get_span_context()[3]) is TraceFlags and span._start_time is not None
    provider.shutdown()


def test_a_processor_added_later_is_seen_by_a_starter_made_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The starter reads the tracer's ``owned_room`` at each call: a start processor added later is called."""
    provider, _ = _provider("usual", monkeypatch)
    tracer = _tracer(provider)
    start = otlp_wire.owned_starter(tracer)
    recording = Recording()
    provider.add_span_processor(recording)
    span = start("s", None, SpanKind.INTERNAL, {"a": 1}, ())
    assert recording.started == [span]
    lean_spans.end_own(span, {})
    assert recording.ended == [span]
    provider.shutdown()


def test_wrong_calls_raise_as_the_python_method(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ = _provider("usual", monkeypatch)
    tracer = _tracer(provider)
    start: Callable[..., Any] = otlp_wire.owned_starter(tracer)
    method: Callable[..., Any] = tracer.start_owned
    calls: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...] = (
        ((), {}), (("s", None, SpanKind.INTERNAL, {}), {}), (("s",), {"x": 1})
    )  # fmt: skip
    for args, kwargs in calls:
        with pytest.raises(TypeError) as native:
            start(*args, **kwargs)
        with pytest.raises(TypeError) as python:
            method(*args, **kwargs)
        assert str(native.value) == str(python.value)
    with pytest.raises(AttributeError):  # a context that is not a Context: Python's path, its error
        start("s", object(), SpanKind.INTERNAL, {}, ())
    provider.shutdown()


def test_another_runtime_context_is_python_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bound without the runtime context's variable (another runtime context), the C starter takes Python's path."""
    args = [SpanContext, NonRecordingSpan, Link, NO_ATTRIBUTES, lean_spans.DEFAULT_STATUS, DEFAULT_TRACE_STATE,
            ROOT_FLAGS, CHILD_FLAGS, Context]  # fmt: skip
    tail = [_SPAN_KEY, random, lean_spans.end_own]
    provider, _ = _provider("usual", monkeypatch)
    tracer = _tracer(provider)
    calls: list[str] = []

    def start_owned(self: LeanTracer, *args: Any) -> Any:
        calls.append(args[0])
        return "python"

    monkeypatch.setattr(LeanTracer, "start_owned", start_owned)
    try:
        assert native_module.bind_lifecycle(*args, None, *tail)
        assert otlp_wire.OWNED_STARTER is not None
        started: Any = otlp_wire.OWNED_STARTER(tracer)("s", None, SpanKind.INTERNAL, {}, ())
        assert started == "python"
        assert calls == ["s"]
    finally:
        assert native_module.bind_lifecycle(*args, current.VARIABLE, *tail)
    provider.shutdown()


# -- end_own --------------------------------------------------------------------------------------------------

ENDS = ("usual", "two-processors", "added-later", "count-limit", "length-limit", "on_start")


def _end_provider(kind: str, monkeypatch: pytest.MonkeyPatch) -> tuple[LeanTracerProvider, list[Recording]]:
    provider, recording = _provider({"two-processors": "usual", "added-later": "usual"}.get(kind, kind), monkeypatch)
    recordings = [recording]
    if kind == "two-processors":
        provider.add_span_processor(second := Recording())
        recordings.append(second)
    return provider, recordings


@pytest.mark.parametrize("provider_kind", ENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=attribute_dicts,
    end=attribute_dicts,
    rewrite=st.booleans(),
    ended=st.booleans(),
    unsampled=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_a_span_ended_in_c_is_the_python_span(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, provider_kind: str, start: dict[str, Any],
    end: dict[str, Any], rewrite: bool, ended: bool, unsampled: bool, seed: int,
) -> None:  # fmt: skip
    if rewrite and start:
        end = {next(iter(start)): "rewritten", **end}  # a key already there: moved to the end
    for name in (lean_spans.__name__, "opentelemetry.sdk._shared_internal", "opentelemetry.attributes"):
        monkeypatch.setattr(logging.getLogger(name), "filters", [])  # each warning logged, none throttled
    results = []
    for end_own in (otlp_wire.END_OWN, lean_spans.end_own):
        provider, recordings = _end_provider(provider_kind, monkeypatch)
        tracer = _tracer(provider)
        random.seed(seed)
        span = tracer.start_owned("s", None, SpanKind.INTERNAL, dict(start), ())
        assert type(span) is LeanSpan
        if unsampled:
            span._context = tuple.__new__(SpanContext, (*span._context[:3], TraceFlags(0), *span._context[4:]))
        if ended:
            span.end()
        if provider_kind == "added-later":
            provider.add_span_processor(later := Recording())
            recordings.append(later)
        caplog.clear()
        end_own(span, dict(end))
        queued = [list(p._batch_processor._queue) for p in provider._active_span_processor._span_processors
                  if isinstance(p, BatchSpanProcessor)]  # fmt: skip
        fields = [_span_state(span)[i] for i in (0, 1, 2, 6, 8)]
        results.append((
            fields, span._end_time is not None, span._dropped, list(span._attributes.items()),
            [[s is span for s in r.ended] for r in recordings], [[s is span for s in q] for q in queued],
            [(r.name, r.levelname, r.getMessage()) for r in caplog.records],
        ))  # fmt: skip
        provider.shutdown()
    assert results[0] == results[1]


def test_a_span_of_another_tracer_is_ended_as_python_ends_it() -> None:
    assert otlp_wire.END_OWN is not lean_spans.end_own
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(recording := Recording())
    span = provider.get_tracer("sdk").start_span("sdk span", attributes={"a": 1})
    otlp_wire.END_OWN(span, {"b": "x"})
    assert [ended.name for ended in recording.ended] == ["sdk span"] and not span.is_recording()
    assert dict(recording.ended[0].attributes or {}) == {"a": 1, "b": "x"}
    with pytest.raises(TypeError):
        otlp_wire.END_OWN(span)  # type: ignore[call-arg]


# -- the batch queue ------------------------------------------------------------------------------------------


def _processor() -> BatchSpanProcessor:
    return BatchSpanProcessor(CollectingExporter(), max_queue_size=4, max_export_batch_size=3,
                              schedule_delay_millis=3_600_000)  # fmt: skip


QUEUES: dict[str, Callable[..., Callable[[Any], None]]] = {
    "c": lambda batch, emit: otlp_wire.QUEUE_INTO(batch, emit, lean_provider._PROCESS),  # type: ignore[misc]
    "python": lambda batch, emit: lean_provider._queue_in_python(batch, emit),
}


def _queued(which: str, case: str) -> tuple[Any, ...]:
    """What one queue does with a few spans: what it holds, whether the worker was woken, what went to emit."""
    processor = _processor()
    inner = processor._batch_processor
    emitted: list[Any] = []

    def emit(span: Any) -> None:
        emitted.append(span)
        inner.emit(span)

    queue = QUEUES[which](inner, emit)
    if case == "shut":
        inner._shutdown = True
    if case == "forked":  # a forked child whose _PROCESS is not reset yet: the same list, read per span
        lean_provider._PROCESS[0] = -1
    # An event the worker does not wait on (it waits on the one it read): woken, it would export meanwhile.
    watched, inner._worker_awaken = inner._worker_awaken, threading.Event()
    spans = [object() for _ in range(6 if case == "full" else 2)]
    woken = []
    try:
        for span in spans:
            queue(span)
            woken.append(inner._worker_awaken.is_set())
    finally:
        lean_provider._PROCESS[0] = os.getpid()
        inner._worker_awaken = watched
    result = ([spans.index(s) for s in inner._queue], woken, [spans.index(s) for s in emitted])
    inner._shutdown = False
    processor.shutdown()  # type: ignore[no-untyped-call]
    return result


@pytest.mark.parametrize("case", ["room", "shut", "forked", "full"])
def test_the_c_queue_is_the_python_queue(case: str) -> None:
    native = _queued("c", case)
    assert native == _queued("python", case)
    assert native[2] == {"room": [], "shut": [0, 1], "forked": [0, 1], "full": [4, 5]}[case]
    assert native[1][-1] is (case == "full")


def test_the_queue_returns_none_and_takes_one_span() -> None:
    processor = _processor()
    queue = QUEUES["c"](processor._batch_processor, lambda span: 1)
    assert queue(object()) is None
    with pytest.raises(TypeError):
        queue()  # type: ignore[call-arg]
    processor.shutdown()  # type: ignore[no-untyped-call]


# -- no leak --------------------------------------------------------------------------------------------------


def test_starting_and_ending_in_c_leaks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, _ = _provider("usual", monkeypatch)
    tracer = _tracer(provider)
    start, end = otlp_wire.owned_starter(tracer), otlp_wire.END_OWN
    inner = provider._active_span_processor._span_processors[0]._batch_processor  # type: ignore[attr-defined]
    parent = start("parent", None, SpanKind.SERVER, {"a": 1}, (Link(REMOTE),))
    context = trace.set_span_in_context(parent, Context())

    def rounds(count: int) -> None:
        for i in range(count):
            child = start("child", context, SpanKind.CLIENT, {"n": i, "s": "x"}, ())
            end(child, {"b": 2, "n": 3})
            root = start("root", None, SpanKind.INTERNAL, {}, [Link(REMOTE)])
            end(root, {})
            inner._queue.clear()

    rounds(2_000)
    gc.collect()
    before = sys.getallocatedblocks()
    rounds(50_000)
    gc.collect()
    assert sys.getallocatedblocks() - before < 200
    provider.shutdown()


def test_wrong_lifecycle_arguments_raise() -> None:
    with pytest.raises(TypeError):
        native_module.bind_lifecycle(1, 2)
    with pytest.raises(TypeError):
        native_module.bind_lifecycle(*range(13))
    with pytest.raises(AttributeError):
        native_module.queue_into(object(), print, [0])  # no queue sizes
