"""The C extension's id generator (``_span_wire.Ids``), the gateway's own provider's: valid ids of their widths,
drawn by the C starter without touching ``random``, the same spans as Python's path but for the ids drawn, and a
stream of its own in each forked process."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from asgi_ws_gateway.telemetry import otlp_wire, providers
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider, own_id_generator
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import ROOT_FLAGS, LeanTracer
from support.spans import CollectingExporter

pytestmark = pytest.mark.skipif(
    otlp_wire.OWNED_STARTER is None or otlp_wire.NATIVE_IDS is None,
    reason="the C span lifecycle (telemetry/_span_wire.c) is not built or turned off by ASGI_WS_GATEWAY_PURE_PYTHON",
)

RESOURCE = Resource({"service.name": "own-ids-test"})
REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1))  # fmt: skip


def _provider(sampler: Any = None) -> LeanTracerProvider:
    provider = LeanTracerProvider(resource=RESOURCE, sampler=sampler, id_generator=own_id_generator())
    provider.add_span_processor(BatchSpanProcessor(CollectingExporter(), schedule_delay_millis=3_600_000))
    return provider


def _tracer(provider: LeanTracerProvider) -> LeanTracer:
    tracer = provider.get_tracer("own-ids")
    assert type(tracer) is LeanTracer
    return tracer


def test_the_gateway_s_provider_draws_its_ids_in_c_leaving_random_alone() -> None:
    """The gateway's own provider has the extension's generator; its three spans of a connection (a root, a child,
    a root linked to the first) are drawn from it by the C starter, not from ``random``."""
    provider = providers._own_tracer_provider(CollectingExporter(), RESOURCE, {})
    assert type(provider) is LeanTracerProvider and type(provider.id_generator) is otlp_wire.NATIVE_IDS
    assert provider.own_ids and isinstance(provider.id_generator, IdGenerator)
    start = otlp_wire.owned_starter(_tracer(provider))
    before = random.getstate()
    handshake = start("GET /ws", None, SpanKind.SERVER, {"a": "b"}, ())
    attempt = start("upstream connect", trace.set_span_in_context(handshake, Context()), SpanKind.CLIENT, {}, ())
    connection = start("connection", Context(), SpanKind.INTERNAL, {}, (Link(handshake.get_span_context()),))
    assert random.getstate() == before
    spans = (handshake, attempt, connection)
    assert all(type(span) is LeanSpan for span in spans)
    contexts = [span.get_span_context() for span in spans]
    assert all(context.is_valid and context.trace_flags == ROOT_FLAGS for context in contexts)
    assert contexts[1].trace_id == contexts[0].trace_id and contexts[2].trace_id != contexts[0].trace_id
    assert len({context.span_id for context in contexts}) == 3
    provider.shutdown()


def test_ids_are_valid_ints_of_their_widths() -> None:
    """Span ids from 1 to 2**64 - 1, trace ids from 1 to 2**128 - 1, every bit drawn, each an ordinary int."""
    ids = own_id_generator()
    assert ids is not None and ids.is_trace_id_random()
    for bits, draw in ((64, ids.generate_span_id), (128, ids.generate_trace_id)):
        drawn = [draw() for _ in range(20_000)]
        assert all(type(value) is int and 0 < value < 2**bits for value in drawn)
        assert len(set(drawn)) == len(drawn)
        assert max(value.bit_length() for value in drawn) == bits  # the top bit set in some
        assert min(value.bit_length() for value in drawn) < bits - 8  # and small ids too
        for value in drawn[:1000]:  # built as the int it is (3.11: its digits written in C)
            assert value == int(f"{value:x}", 16) and hash(value) == hash(int(str(value)))
            assert int.from_bytes(value.to_bytes(bits // 8, "big"), "big") == value


PARENTS = ("none", "lean", "lean-unsampled", "remote")
LINKS = ("none", "usual", "two")


def _parent(tracer: LeanTracer, kind: str) -> Context | None:
    if kind == "none":
        return None
    if kind == "remote":
        return trace.set_span_in_context(NonRecordingSpan(REMOTE), Context())
    span = tracer.start_span("lean parent")
    assert type(span) is LeanSpan
    if kind == "lean-unsampled":
        span._context = tuple.__new__(SpanContext, (*span._context[:3], TraceFlags(2), *span._context[4:]))
    return trace.set_span_in_context(span, Context())


def _links(kind: str) -> tuple[Link, ...]:
    local = SpanContext(0x1F, 0x2F, is_remote=False, trace_flags=TraceFlags(1))
    return {"none": (), "usual": (Link(REMOTE),), "two": (Link(REMOTE), Link(local))}[kind]


def _without_ids(span: Any, parent: Context | None) -> tuple[Any, ...]:
    """A started span's fields, its own ids replaced by whether they are valid (and the trace its parent's), its
    parent by whether it is the one given."""
    context = span.get_span_context()
    parent_context = trace.get_current_span(parent).get_span_context() if parent is not None else None
    inherited = parent_context is not None and parent_context.is_valid
    ids = (
        0 < context.span_id < 2**64, 0 < context.trace_id < 2**128,
        context.trace_id == parent_context.trace_id if inherited and parent_context is not None else None,
    )  # fmt: skip
    if type(span) is not LeanSpan:
        return (type(span), ids, context[2:])
    return (
        ids, context[2:], span._name, span._kind, span._parent is not None and span._parent == parent_context,
        span._end_time, span._status, span._events,
        [(link.context, dict(link.attributes or {})) for link in span._links], span._plain,
        list(span._attributes.items()),
    )  # fmt: skip


@pytest.mark.parametrize("sampler", ["default", "always_on"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parent=st.sampled_from(PARENTS),
    links=st.sampled_from(LINKS),
    attributes=st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 9) | st.text(max_size=4), max_size=4),
)
def test_a_span_started_in_c_with_own_ids_is_the_python_span_but_its_ids(
    sampler: str, parent: str, links: str, attributes: dict[str, Any]
) -> None:
    """With the extension's ids the C starter and Python's ``start_owned`` (and its checked path, under another
    sampler) make the same span, each drawing from the extension's stream and none from ``random``."""
    provider = _provider(ALWAYS_ON if sampler == "always_on" else None)
    tracer = _tracer(provider)
    spans = []
    for start in (otlp_wire.owned_starter(tracer), tracer.start_owned):
        context = _parent(tracer, parent)
        before = random.getstate()
        span = start("s", context, SpanKind.INTERNAL, dict(attributes), _links(links))
        assert random.getstate() == before
        spans.append((span, context))
    (native, native_parent), (python, python_parent) = spans
    assert _without_ids(native, native_parent) == _without_ids(python, python_parent)
    assert native.get_span_context().span_id != python.get_span_context().span_id
    provider.shutdown()


def _drawn_in_child(ids: IdGenerator) -> list[int]:
    """The ids a forked child draws first (two span ids, a trace id)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: draw, report and leave at once (no test teardown, no atexit)
        try:
            drawn = (ids.generate_span_id(), ids.generate_span_id(), ids.generate_trace_id())
            os.write(write, " ".join(map(str, drawn)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return [int(value) for value in text.split()]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_processes_draw_their_own_ids() -> None:
    """A forked child is seeded again at its first draw: two children and their parent draw different ids, not the
    parent's next ones."""
    ids = own_id_generator()
    assert ids is not None
    ids.generate_span_id()  # the parent's stream seeded before the forks
    first, second = _drawn_in_child(ids), _drawn_in_child(ids)
    parent = [ids.generate_span_id(), ids.generate_span_id(), ids.generate_trace_id()]
    assert len(first) == len(second) == 3
    assert len({*first, *second, *parent}) == 9
