"""The optional C span encoder (``telemetry/_span_wire.c``) against the Python one, its reference.

Lean spans as the gateway makes them, with any str/int attributes hypothesis draws (any Unicode,
surrogates, long strings, ints at and past int64's bounds), parents, links and statuses: the C encoder
gives ``SpanEncoder._lean_span``'s bytes, or declines (None) exactly the spans it leaves to Python,
which still encodes them as the SDK does. Without the extension the import falls back to Python.
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from asgi_ws_gateway.telemetry import otlp_wire
from asgi_ws_gateway.telemetry.environment import PURE_PYTHON_VARIABLE
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import DEFAULT_STATUS, LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import NO_ATTRIBUTES, LeanTracer
from asgi_ws_gateway.telemetry.otlp_export import HttpSpanExporter
from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder
from support.otlp import OtlpReceiver
from support.spans import NO_NATIVE_ENCODER

needs_native = pytest.mark.skipif(otlp_wire.NATIVE_ENCODER is None, reason=NO_NATIVE_ENCODER)
LARGE_DRAWS = [HealthCheck.too_slow, HealthCheck.data_too_large]
"""The health checks spans of long, many attributes fail, each drawn whole."""
LARGE_DRAWS_WITH_FIXTURES = [*LARGE_DRAWS, HealthCheck.function_scoped_fixture]
"""The same, for tests whose fixtures (a provider, a log capture) serve every example alike."""

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
ANY_CHARACTER = st.characters(exclude_categories=())  # lone surrogates too: not valid UTF-8
TEXT = st.one_of(
    st.text(ANY_CHARACTER, max_size=20),
    st.text(st.characters(min_codepoint=0x10000), max_size=6),  # non-BMP only: 4 UTF-8 bytes each
    st.builds(lambda c, n: c * n, ANY_CHARACTER, st.integers(16 * 1024 + 1, 20 * 1024)),  # past 16 KiB
    st.just(""),
)
INTS = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([0, -1, 127, 128, 16383, 16384, INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1, 1 << 200]),
)
OTHERS = st.one_of(st.booleans(), st.floats(allow_nan=False), st.just(("a", "b")))
"""Values the C encoder leaves to Python (a bool is not an int there: True is not 1 on the wire)."""


def _plain(value: object) -> bool:
    """A value the C encoder writes: an exact str that is valid Unicode, an exact int in int64."""
    if type(value) is int:
        return INT64_MIN <= value <= INT64_MAX
    if type(value) is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    return False


@pytest.fixture(scope="module")
def lean() -> Iterator[tuple[LeanTracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(resource=Resource({"service.name": "span-wire-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@dataclass
class Recipe:
    """A lean span to make, drawn by hypothesis; made in the test (ids are drawn from ``random``, which a
    strategy may not use)."""

    name: str
    kind: SpanKind
    attributes: dict[str, Any]
    parent: str  # "none", "local" or "remote"
    remote_parent: SpanContext
    links: list[Link]
    status: Status | StatusCode | None
    event: bool
    dropped: bool


IDS = st.builds(
    SpanContext, st.integers(1, (1 << 128) - 1), st.integers(1, (1 << 64) - 1), st.booleans(), st.just(TraceFlags(1))
)


@st.composite
def recipes(draw: st.DrawFn, others: bool) -> Recipe:
    """``others``: values, events, trace states and dropped attributes the C encoder declines, too."""
    values = st.one_of(TEXT, INTS, OTHERS) if others else st.one_of(TEXT, INTS)
    states = [DEFAULT_TRACE_STATE, TraceState(), *([TraceState([("vendor", "x")])] if others else [])]
    remote = draw(IDS)
    remote = SpanContext(remote.trace_id, remote.span_id, True, remote.trace_flags, draw(st.sampled_from(states)))
    code = draw(st.sampled_from([None, *StatusCode]))
    status: Status | StatusCode | None = code
    if code is StatusCode.ERROR and draw(st.booleans()):
        status = Status(code, draw(st.one_of(st.none(), st.text(max_size=20))))
    return Recipe(
        name=draw(st.text(max_size=30)), kind=draw(st.sampled_from(list(SpanKind))),
        attributes=draw(st.dictionaries(TEXT, values, max_size=40)),
        parent=draw(st.sampled_from(["none", "local", "remote"])), remote_parent=remote,
        links=[Link(context) for context in draw(st.lists(IDS, max_size=3))], status=status,
        event=others and draw(st.booleans()), dropped=others and draw(st.booleans()),
    )  # fmt: skip


def _make(provider: LeanTracerProvider, recipe: Recipe, scope: str = "asgi_ws_gateway") -> LeanSpan:
    """The span, started as the gateway starts its own (``start_owned``: the dict kept as given, any key) when its
    values are plain."""
    tracer = cast("LeanTracer", provider.get_tracer(scope))
    context = None
    if recipe.parent == "local":
        context = trace.set_span_in_context(tracer.start_span("parent"))
    elif recipe.parent == "remote":
        context = trace.set_span_in_context(trace.NonRecordingSpan(recipe.remote_parent))
    links = [Link(link.context) for link in recipe.links]  # the tracer marks a link it keeps: a fresh one
    # start_owned takes str and int values unchecked (its span is marked plain, which the encoders trust: a
    # bool there would meet an int's cached field); any other value is started as start_span checks it.
    plain = all(type(value) in (str, int) for value in recipe.attributes.values())
    start = tracer.start_owned if plain else tracer.start_span
    span = start(recipe.name, context, recipe.kind, dict(recipe.attributes), links)
    assert type(span) is LeanSpan
    if recipe.status is not None:
        span.set_status(recipe.status)
    if recipe.event:
        span.add_event("message", {"size": 5})
    if recipe.dropped:
        span.set_attribute("", 1)  # an invalid key: dropped and counted
    span.end()
    return span


def _declined(span: LeanSpan) -> bool:
    """What the C encoder must leave to Python."""
    state = span._context.trace_state
    return bool(
        span._events or span._dropped or (state is not DEFAULT_TRACE_STATE and state)
        or not all(_plain(key) and _plain(value) for key, value in span._attributes.items())
    )  # fmt: skip


def _python(span: LeanSpan) -> bytes:
    encoder = SpanEncoder()
    encoder._native = None
    return encoder._lean_span(span)


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=LARGE_DRAWS)
@given(data=st.data())
def test_the_c_encoder_writes_the_python_encoders_bytes(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter], data: st.DataObject
) -> None:
    """A span of str/int attributes (any Unicode, long, at int64's bounds and past them), a parent or none,
    remote or local, links, a status or none: the same bytes, or None for exactly those it must decline."""
    span = _make(lean[0], data.draw(recipes(others=False)))
    assert otlp_wire.NATIVE_ENCODER is not None
    native = otlp_wire.NATIVE_ENCODER(span, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES)
    assert (native is None) == _declined(span)
    if native is not None:
        assert native == _python(span)


@needs_native
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=LARGE_DRAWS_WITH_FIXTURES,
)
@given(data=st.data())
def test_a_batch_with_spans_the_c_encoder_declines_encodes_as_the_sdk_does(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter], data: st.DataObject, caplog: pytest.LogCaptureFixture
) -> None:
    """Spans the C encoder writes and spans it leaves to Python (floats, bools, events, trace states,
    dropped counts, values it cannot encode) in one batch, through one encoder kept between batches."""
    encoder = SpanEncoder()
    assert encoder._native is not None
    for _ in range(2):
        batch = [_make(lean[0], recipe) for recipe in data.draw(st.lists(recipes(others=True), max_size=5))]
        # Every logger (the root's level): the encoders' lines name drawn keys, lone surrogates among them,
        # which pytest-xdist cannot send from its worker (an INTERNALERROR that ended the run, 1 in 3 here).
        with caplog.at_level(logging.CRITICAL):
            assert encoder.encode(batch) == sdk_encode_spans(batch).SerializeToString()


@needs_native
def test_a_span_the_c_encoder_declines_is_exported_by_the_python_encoder(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """A lone surrogate and an int past int64 (logged and left out), a float: the span still arrives, with
    its other attributes, beside a span written in C."""
    provider, exporter = lean
    exporter.clear()
    tracer = cast("LeanTracer", provider.get_tracer("asgi_ws_gateway"))
    tracer.start_owned("plain", None, SpanKind.SERVER, {"url.path": "/ws/ü", "n": 1}, ()).end()
    tracer.start_owned(
        "declined", None, SpanKind.SERVER, {"url.path": "/ws/\ud800", "big": 1 << 64, "ratio": 0.5, "kept": "yes"}, ()
    ).end()  # fmt: skip
    plain, declined = cast("tuple[LeanSpan, LeanSpan]", exporter.get_finished_spans())
    assert otlp_wire.NATIVE_ENCODER is not None
    assert otlp_wire.NATIVE_ENCODER(plain, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) is not None
    assert otlp_wire.NATIVE_ENCODER(declined, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) is None
    with OtlpReceiver() as otlp:
        http = HttpSpanExporter(endpoint=otlp.endpoint("http/protobuf") + "/v1/traces")
        with caplog.at_level(logging.ERROR, "asgi_ws_gateway.telemetry.otlp_attributes"):
            try:
                assert http._encoder is not None and http.export([plain, declined]).name == "SUCCESS"
            finally:
                http.shutdown()  # type: ignore[no-untyped-call]
        got = {span.name: span.attributes for span in otlp.spans()}
    assert got == {"plain": {"url.path": "/ws/ü", "n": 1}, "declined": {"ratio": 0.5, "kept": "yes"}}
    assert "failed to encode attribute url.path" in caplog.text and "failed to encode attribute big" in caplog.text


@needs_native
@pytest.mark.parametrize(
    "args", [(), (None, None, None), (None, None, None, None, None)], ids=["none", "three", "five"]
)
def test_the_c_encoder_checks_its_arguments(args: tuple[Any, ...]) -> None:
    assert otlp_wire.NATIVE_ENCODER is not None
    with pytest.raises(TypeError, match="takes 4 positional arguments"):
        otlp_wire.NATIVE_ENCODER(*args)


@needs_native
def test_a_span_without_the_fields_of_a_lean_span_is_an_error_not_a_crash() -> None:
    assert otlp_wire.NATIVE_ENCODER is not None
    with pytest.raises(AttributeError):
        otlp_wire.NATIVE_ENCODER(object(), DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES)  # type: ignore[arg-type]


@pytest.fixture
def rebound() -> Iterator[Any]:
    """The extension module, bound to ``LeanSpan`` again after the test (its binding is the process's), the span
    lifecycle too (``bind`` unbinds it: its functions would raise in the tests that follow)."""
    from asgi_ws_gateway.telemetry import _span_wire

    yield _span_wire
    native = otlp_wire._native()  # bind() and bind_lifecycle(), as at import
    assert native is not None and native.starter is not None


@needs_native
def test_the_c_encoder_reads_a_lean_spans_slots_and_any_other_span_by_attribute(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter], rebound: Any
) -> None:
    """Bound to ``LeanSpan`` (its fields in slots), exactly that type is read at the slots' offsets; a subclass
    (not bound) by attribute lookups: the same bytes either way, and the same with the binding dropped."""

    class Subclass(LeanSpan):
        __slots__ = ()

    span = _make(lean[0], Recipe(
        name="GET /ws/{room}", kind=SpanKind.SERVER, attributes={"url.path": "/ws/ü", "n": -5},
        parent="remote", remote_parent=SpanContext((1 << 128) - 1, (1 << 64) - 1, True, TraceFlags(1)),
        links=[Link(SpanContext(1, 1, False, TraceFlags(1)))], status=None, event=False, dropped=False,
    ))  # fmt: skip
    other = object.__new__(Subclass)
    for name in LeanSpan.__slots__:
        setattr(other, name, getattr(span, name))
    expected = _python(span)
    assert rebound.bind(LeanSpan, otlp_wire._KINDS_BY_VALUE) is True
    assert rebound.encode_span(span, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) == expected
    assert rebound.encode_span(other, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) == expected
    assert rebound.bind(Subclass, otlp_wire._KINDS_BY_VALUE) is False  # no slots of its own: by attribute
    assert rebound.encode_span(span, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) == expected
    assert rebound.encode_span(other, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) == expected


@needs_native
def test_a_lean_span_with_an_empty_slot_is_an_error_not_a_crash() -> None:
    """A ``LeanSpan`` made without its fields (``object.__new__``): AttributeError, as an attribute read gives."""
    assert otlp_wire.NATIVE_ENCODER is not None
    with pytest.raises(AttributeError):
        otlp_wire.NATIVE_ENCODER(object.__new__(LeanSpan), DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES)


@needs_native
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "takes 2 positional arguments"),
        ((LeanSpan,), "takes 2 positional arguments"),
        ((object(), tuple(SpanKind)), "needs the span type"),
        ((LeanSpan, list(SpanKind)), "needs a tuple"),
        ((LeanSpan, (SpanKind.SERVER,)), "needs a tuple"),
    ],
    ids=["none", "one", "not-a-type", "a-list", "one-kind"],
)
def test_the_c_encoders_binding_checks_its_arguments(args: tuple[Any, ...], message: str, rebound: Any) -> None:
    with pytest.raises(TypeError, match=message):
        rebound.bind(*args)


def _pure_python() -> SpanEncoder:
    encoder = SpanEncoder()
    encoder._native = encoder._native_batch = None
    return encoder


@pytest.fixture(scope="module")
def others() -> Iterator[tuple[LeanTracerProvider, TracerProvider]]:
    """Another resource's lean provider, and the SDK's provider (its spans are not lean): what a batch may mix."""
    exporter = InMemorySpanExporter()
    lean_provider = LeanTracerProvider(resource=Resource({"service.name": "other"}))
    sdk_provider = TracerProvider(resource=Resource({"service.name": "sdk"}))
    for provider in (lean_provider, sdk_provider):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield lean_provider, sdk_provider
    lean_provider.shutdown()
    sdk_provider.shutdown()


def _check_parts(batch: list[LeanSpan], parts: list[bytes | LeanSpan]) -> None:
    """``encode_spans``' parts: each declined span as itself, where it was, and runs of the others' fields
    (each what ``encode_span`` gives), one bytes per run."""
    expected: list[bytes | LeanSpan] = []
    for span in batch:
        if _declined(span):
            expected.append(span)
        elif expected and isinstance(expected[-1], bytes):
            expected[-1] += _python(span)
        else:
            expected.append(_python(span))
    assert len(parts) == len(expected)
    for part, wanted in zip(parts, expected, strict=True):
        assert part is wanted if isinstance(wanted, LeanSpan) else part == wanted


@needs_native
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=LARGE_DRAWS_WITH_FIXTURES,
)
@given(data=st.data())
def test_a_batch_in_one_c_call_gives_the_python_encoders_and_the_sdks_bytes(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter],
    others: tuple[LeanTracerProvider, TracerProvider],
    data: st.DataObject,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Batches of lean spans (some declined, anywhere), mixed or not with another scope, another resource or an
    SDK span, or empty: ``encode_spans`` takes exactly the batches of one type, resource and scope, and the
    request is the same bytes as the pure-Python encoder's and the SDK's, through one encoder kept between
    batches."""
    encoder, python = SpanEncoder(), _pure_python()
    assert encoder._native_batch is not None
    other_lean, sdk = others
    for _ in range(2):
        recipes_drawn = data.draw(st.lists(recipes(others=True), max_size=6))
        batch: list[ReadableSpan] = [_make(lean[0], recipe) for recipe in recipes_drawn]
        mixed = data.draw(st.sampled_from(["none", "scope", "resource", "sdk"]))
        if mixed != "none":
            where = data.draw(st.integers(0, len(batch)))
            if mixed == "sdk":
                extra: ReadableSpan = cast("ReadableSpan", sdk.get_tracer("sdk").start_span("sdk", attributes={"a": 1}))
                cast("Any", extra).end()
            else:
                provider = other_lean if mixed == "resource" else lean[0]
                extra = _make(provider, data.draw(recipes(others=True)), "other-scope")
            batch.insert(where, extra)
        native = encoder._native_batch(batch, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES)
        if not batch or mixed == "sdk" or (mixed != "none" and recipes_drawn):  # a lone other span: one group
            assert native is None
        else:
            assert native is not None
            resource, scope, parts = native
            first = cast("LeanSpan", batch[0])
            assert resource is first._resource and scope is first._instrumentation_scope
            _check_parts(cast("list[LeanSpan]", batch), parts)
        with caplog.at_level(logging.CRITICAL):  # as above: drawn keys in the encoders' lines
            request = encoder.encode(batch)
            assert request == python.encode(batch) == sdk_encode_spans(batch).SerializeToString()
            assert encoder.encode(tuple(batch)) == request


@needs_native
def test_a_batch_with_declined_spans_in_the_middle_keeps_their_places(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """Two declined spans amid written ones: three runs of bytes around them, and the SDK's request."""
    tracer = cast("LeanTracer", lean[0].get_tracer("asgi_ws_gateway"))

    def span(attributes: dict[str, Any]) -> LeanSpan:
        started = tracer.start_owned("s", None, SpanKind.SERVER, attributes, ())
        started.end()
        return cast("LeanSpan", started)

    batch = [span({"n": 1}), span({"ratio": 0.5}), span({"n": 2}), span({"n": 3}), span({"big": 1 << 64}), span({})]
    encode_spans = otlp_wire.NATIVE_BATCH_ENCODER
    assert encode_spans is not None
    native = encode_spans(batch, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES)
    assert native is not None
    parts = native[2]
    assert [type(part) for part in parts] == [bytes, LeanSpan, bytes, LeanSpan, bytes]
    assert parts[1] is batch[1] and parts[3] is batch[4]
    assert parts[2] == _python(batch[2]) + _python(batch[3])
    with caplog.at_level(logging.CRITICAL):
        assert SpanEncoder().encode(batch) == sdk_encode_spans(batch).SerializeToString()


@needs_native
def test_an_empty_batch_or_another_sequence_is_left_to_python(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter],
) -> None:
    encode_spans = otlp_wire.NATIVE_BATCH_ENCODER
    assert encode_spans is not None
    spans: Any
    for spans in ([], (), iter([])):
        assert encode_spans(spans, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) is None
    assert SpanEncoder().encode([]) == b"" == sdk_encode_spans([]).SerializeToString()
    with pytest.raises(TypeError, match="takes 4 positional arguments"):
        encode_spans([])  # type: ignore[call-arg]


@needs_native
def test_a_batch_whose_resource_changes_while_encoded_is_grouped_by_python(
    lean: tuple[LeanTracerProvider, InMemorySpanExporter],
) -> None:
    """Code a span's encoding runs (a mapping's ``__bool__``) gives a later span another resource: the C call
    returns None rather than group it under the first, and the encoder gives the Python encoder's request."""
    tracer = cast("LeanTracer", lean[0].get_tracer("asgi_ws_gateway"))
    first, second = (tracer.start_owned(name, None, SpanKind.SERVER, {"n": 1}, ()) for name in ("a", "b"))
    first.end()
    second.end()
    other = Resource({"service.name": "moved"})

    class Moving(dict[str, Any]):
        def __bool__(self) -> bool:
            cast("LeanSpan", second)._resource = other
            return False

    cast("LeanSpan", first)._attributes = Moving()
    batch = cast("list[LeanSpan]", [first, second])
    encode_spans = otlp_wire.NATIVE_BATCH_ENCODER
    assert encode_spans is not None
    assert encode_spans(batch, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) is None
    request = SpanEncoder().encode(batch)
    assert request == _pure_python().encode(batch)
    assert request.count(b"moved") == 1


@needs_native
def test_encoding_batches_leaks_no_references(lean: tuple[LeanTracerProvider, InMemorySpanExporter]) -> None:
    """Many batches (written spans, declined ones, batches left to Python): the spans', resource's and scope's
    reference counts and the number of objects are as before."""
    tracer = cast("LeanTracer", lean[0].get_tracer("asgi_ws_gateway"))
    batch = []
    attribute_sets: list[dict[str, Any]] = [{"n": 1, "path": "/ws/ü"}, {"ratio": 0.5}, {"n": 2}]
    for attributes in attribute_sets:
        started = tracer.start_owned("s", None, SpanKind.SERVER, attributes, ())
        started.end()
        batch.append(cast("LeanSpan", started))
    mixed = [*batch, _make(lean[0], Recipe(
        name="x", kind=SpanKind.CLIENT, attributes={}, parent="none", remote_parent=batch[0]._context, links=[],
        status=None, event=False, dropped=False,
    ), "other-scope")]  # fmt: skip
    encode_spans = otlp_wire.NATIVE_BATCH_ENCODER
    assert encode_spans is not None
    watched = [*batch, batch[0]._resource, batch[0]._instrumentation_scope]

    def run() -> None:
        for _ in range(500):
            assert encode_spans(batch, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) is not None
            assert encode_spans(mixed, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) is None

    run()
    gc.collect()
    counts, objects = [sys.getrefcount(thing) for thing in watched], len(gc.get_objects())
    tracemalloc.start()
    try:
        run()  # 500 batches' bytes kept (100 B or more each) would be 50 KiB or more
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(thing) for thing in watched] == counts
    assert len(gc.get_objects()) <= objects + 10
    assert held < 16 * 1024


def test_without_the_extension_the_encoder_is_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not built (the import fails), built from other sources (another FORMAT), or turned off by
    ASGI_WS_GATEWAY_PURE_PYTHON: no native encoder, and spans still encode as the SDK does."""
    monkeypatch.delenv(PURE_PYTHON_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "asgi_ws_gateway.telemetry._span_wire", None)  # import raises ImportError
    assert otlp_wire._native_encoder() is None
    monkeypatch.setitem(sys.modules, "asgi_ws_gateway.telemetry._span_wire", type(sys)("_span_wire"))  # no FORMAT
    assert otlp_wire._native_encoder() is None
    monkeypatch.delitem(sys.modules, "asgi_ws_gateway.telemetry._span_wire")
    monkeypatch.setenv(PURE_PYTHON_VARIABLE, "1")
    assert otlp_wire._native_encoder() is None


def test_a_process_without_the_extension_exports_in_python() -> None:
    """A fresh interpreter whose import of the extension fails: otlp_wire imports, and encodes as the SDK."""
    script = """
import sys
sys.modules["asgi_ws_gateway.telemetry._span_wire"] = None
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from asgi_ws_gateway.telemetry import otlp_wire
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
assert otlp_wire.NATIVE_ENCODER is None
span = LeanTracerProvider(resource=Resource({})).get_tracer("t").start_span("s", attributes={"k": "v", "n": 1})
span.end()
assert otlp_wire.SpanEncoder().encode([span]) == encode_spans([span]).SerializeToString()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
