"""The C extensions' entry points fed what an attacker can put in a span or a metric record: huge strings,
lone surrogates, NUL bytes, str and int subclasses whose methods lie or raise, ints past 64 and 128 bits,
negative ones, nested and recursive containers, keys that change a dict while it is read.

Each C function gives what its Python reference gives (the same bytes, text, counts or exception type), or
declines to it; it never crashes. Run here as part of the suite, and under AddressSanitizer and
UndefinedBehaviorSanitizer with many more examples by ``scripts/sanitize_native.sh`` (``NATIVE_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import hex_ids, lean_spans, metric_totals, otlp_wire
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.histograms import OwnHistogram, OwnHistograms
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import DEFAULT_STATUS, LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import NO_ATTRIBUTES, LeanTracer
from asgi_ws_gateway.telemetry.metric_totals import ApiTotals
from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder

native = pytest.mark.skipif(
    otlp_wire.NATIVE is None or metric_totals.NATIVE_RECORDER is None,
    reason="the C extensions are not built, or turned off by ASGI_WS_GATEWAY_PURE_PYTHON",
)
EXAMPLES = int(os.environ.get("NATIVE_FUZZ_EXAMPLES", "40"))
"""Examples per test: a few here, thousands under the sanitizers (scripts/sanitize_native.sh)."""
HOSTILE = settings(
    max_examples=EXAMPLES, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)  # fmt: skip


class LyingStr(str):
    """A str whose hash, equality and length lie: the C code must decline it, never read it as a str."""

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return True

    def __len__(self) -> int:
        return -1 if self.startswith("n") else 1 << 40


class LyingInt(int):
    """An int whose index, hash, truth and to_bytes lie or raise."""

    def __index__(self) -> int:
        raise RuntimeError("index")

    def __hash__(self) -> int:
        return 1

    def __bool__(self) -> bool:
        raise RuntimeError("bool")

    def to_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("to_bytes")


def _recursive() -> list[Any]:
    loop: list[Any] = [1]
    loop.append(loop)
    return loop


BIG = 10 * 1024 * 1024
ANY_CHARACTER = st.characters(exclude_categories=())  # lone surrogates too
LONG_TEXTS = ("a" * BIG, "\u00fc" * (BIG // 2), "\ud800" * 1024, "\x00" * 70000, "")  # 10 MB, 64 KiB+
"""Drawn by index: a strategy's repr shows what it samples, and hypothesis builds and keeps reprs of the
strategies it draws through, so sampling these texts themselves kept ~10 MB an example (2.9 GB at 300)."""
TEXTS = st.one_of(
    st.text(ANY_CHARACTER, max_size=30),
    st.text(st.sampled_from("\x00\ud800\udfff\U0010ffff\u00fc/a"), max_size=30),  # NUL, surrogates, 1-4 bytes
    st.sampled_from(range(len(LONG_TEXTS))).map(LONG_TEXTS.__getitem__),  # by index: see LONG_TEXTS
    st.builds(LyingStr, st.text(max_size=5)),
)
INTS = st.one_of(
    st.integers(-(1 << 70), 1 << 70),
    st.sampled_from([-(1 << 63) - 1, -(1 << 63), (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, 1 << 128, -1 << 999]),
    st.builds(LyingInt, st.integers(-(1 << 65), 1 << 65)),
    st.booleans(),
)
VALUES = st.recursive(
    st.one_of(TEXTS, INTS, st.floats(), st.none(), st.binary(max_size=8), st.builds(_recursive)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(TEXTS, inner, max_size=2)
    ),
    max_leaves=6,
)  # fmt: skip
ATTRIBUTES = st.dictionaries(st.one_of(TEXTS, st.builds(LyingStr, st.text(max_size=3))), VALUES, max_size=6)


def _outcome(function: Any, *args: Any) -> Any:
    """What a call gave: its value, or its exception's type (both sides raise the same way)."""
    try:
        return function(*args)
    except Exception as error:
        return type(error)


@pytest.fixture(scope="module")
def tracer() -> Iterator[LeanTracer]:
    provider = LeanTracerProvider(resource=Resource({"service.name": "hostile"}))
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    yield cast("LeanTracer", provider.get_tracer("asgi_ws_gateway"))
    provider.shutdown()


def _span(tracer: LeanTracer, name: Any, attributes: dict[Any, Any], description: Any) -> LeanSpan:
    """A span started as the gateway starts its own (the C starter: the dict kept unchecked), a status whose
    description is drawn, then ended by the C end_own with more of the drawn attributes."""
    assert otlp_wire.OWNED_STARTER is not None
    span = cast("LeanSpan", otlp_wire.OWNED_STARTER(tracer)(name, None, SpanKind.SERVER, dict(attributes), ()))
    assert type(span) is LeanSpan and span._attributes == attributes and span._name is name
    span._status = Status.__new__(Status)
    span._status._status_code, span._status._description = StatusCode.ERROR, description
    assert otlp_wire.NATIVE is not None and otlp_wire.NATIVE.end_own is not None
    otlp_wire.NATIVE.end_own(span, {"closing": 1})
    return span


def _python_bytes(span: LeanSpan) -> Any:
    encoder = SpanEncoder()
    encoder._native = None
    return _outcome(encoder._lean_span, span)


@native
@HOSTILE
@given(name=TEXTS, attributes=ATTRIBUTES, description=st.one_of(st.none(), TEXTS, INTS))
def test_hostile_spans_encode_as_python_or_are_left_to_it(
    tracer: LeanTracer, name: Any, attributes: dict[Any, Any], description: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One span, then a batch of it and a plain one: the C bytes are Python's, or the span is left to Python."""
    span = _span(tracer, name, attributes, description)
    assert otlp_wire.NATIVE is not None
    written = otlp_wire.NATIVE.encode_span(span, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES)
    if written is not None:
        assert written == _python_bytes(span)
    plain = _span(tracer, "plain", {"url.path": "/ws"}, None)
    python = SpanEncoder()
    python._native = python._native_batch = None
    with caplog.at_level(logging.CRITICAL):  # what Python leaves out is logged, drawn keys in it
        assert _outcome(SpanEncoder().encode, [span, plain, span]) == _outcome(python.encode, [span, plain, span])


CONTEXT_IDS = st.one_of(INTS, st.none(), TEXTS, st.integers(0, (1 << 128) - 1))
FLAGS = st.one_of(st.integers(-2, 300), st.integers(0, 255).map(TraceFlags), st.booleans(), st.none(), st.floats())


HEADER_NAMES = st.one_of(
    st.text(max_size=40), st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", max_size=12),
    st.sampled_from(["traceparent", "b3", "uberctx-x", "ot-baggage-y", "a\nuberctx-b", "\ud800", "x" * 100_000]),
    st.builds(LyingStr, st.sampled_from(["traceparent", "b3", "via"])), st.binary(max_size=8), st.integers(),
)  # fmt: skip
MASKS = st.one_of(
    st.just(None), st.dictionaries(st.sampled_from(["traceparent", "b3", "via"]),
                                   st.one_of(st.integers(), st.integers(2**70, 2**80), st.none(), st.booleans())),
)  # fmt: skip


@native
@HOSTILE
@given(
    headers=st.one_of(st.lists(st.one_of(st.tuples(HEADER_NAMES, st.just("v")), st.tuples(), st.lists(HEADER_NAMES))),
                      st.tuples(st.tuples(HEADER_NAMES, st.just("v")))),
    masks=MASKS,
)  # fmt: skip
def test_hostile_header_names_are_decided_as_python_decides_or_left_to_it(headers: Any, masks: Any) -> None:
    """``trace_names``: any header list and masks give the Python reference's bits (with the gateway's masks), or
    None (left to Python), never an error or a read of what is not an exact ``str``."""
    assert otlp_wire.NATIVE is not None
    from asgi_ws_gateway.telemetry import propagation

    for table in (propagation._DROPPED_MASKS, masks):
        found = otlp_wire.NATIVE.trace_names(headers, table)
        if found is not None and table is propagation._DROPPED_MASKS:
            untrusted, trusted = propagation._filtered(tuple(header[0] for header in headers))
            assert found == untrusted | trusted << 1


@native
@HOSTILE
@given(trace_id=CONTEXT_IDS, span_id=CONTEXT_IDS, flags=FLAGS)
def test_hostile_ids_format_as_python_does(trace_id: Any, span_id: Any, flags: Any) -> None:
    assert otlp_wire.NATIVE is not None
    context = tuple.__new__(SpanContext, (trace_id, span_id, False, flags, None, True))
    assert _outcome(otlp_wire.NATIVE.hex_ids, context) == _outcome(hex_ids._hex_ids, context)
    assert _outcome(otlp_wire.NATIVE.traceparent, context) == _outcome(hex_ids._traceparent, context)


@native
@HOSTILE
@given(before=ATTRIBUTES, after=ATTRIBUTES)
def test_hostile_last_attributes_end_a_span_as_python_does(
    tracer: LeanTracer, before: dict[Any, Any], after: dict[Any, Any]
) -> None:
    """end_own's update (keys rewritten or not, lying keys) leaves the attributes Python's end_own leaves."""
    assert otlp_wire.OWNED_STARTER is not None
    start = otlp_wire.OWNED_STARTER(tracer)
    spans = [cast("LeanSpan", start("s", None, SpanKind.SERVER, dict(before), ())) for _ in range(2)]
    assert otlp_wire.NATIVE is not None and otlp_wire.NATIVE.end_own is not None
    ends = [_outcome(otlp_wire.NATIVE.end_own, spans[0], dict(after)), _outcome(lean_spans.end_own, spans[1], after)]
    assert ends[0] == ends[1]
    assert list(spans[0]._attributes.items()) == list(spans[1]._attributes.items())


class MutatingKey(str):
    """A key that, compared in a dict lookup, empties the dict it is looked up in (once)."""

    target: dict[Any, Any] | None = None

    def __hash__(self) -> int:
        return hash("url.path")

    def __eq__(self, other: object) -> bool:
        if self.target:
            self.target.clear()
            self.target = None
        return str.__eq__(self, other)


@native
def test_a_key_that_empties_the_span_s_attributes_while_they_are_updated_is_no_crash(tracer: LeanTracer) -> None:
    span = cast("LeanSpan", tracer.start_owned("s", None, SpanKind.SERVER, {"url.path": "/a", "n": 1}, ()))
    key = MutatingKey("url.path")
    key.target = span._attributes
    assert otlp_wire.NATIVE is not None and otlp_wire.NATIVE.end_own is not None
    otlp_wire.NATIVE.end_own(span, {key: "/b", "m": 2})
    assert span._end_time is not None


SIZES = st.lists(st.one_of(st.integers(-(1 << 70), 1 << 70), st.builds(LyingInt, st.integers(0, 9))), max_size=30)
COUNT = st.one_of(st.integers(-(1 << 70), 1 << 70), st.builds(LyingInt, st.integers(0, 9)), st.floats(), TEXTS)
COUNTERS = ("messages_in", "binary_in", "messages_out", "binary_out", "bytes_in", "binary_bytes_in", "bytes_out",
            "binary_bytes_out")  # fmt: skip


@native
@HOSTILE
@given(counts=st.lists(COUNT, min_size=8, max_size=8), sizes_in=SIZES, sizes_out=SIZES)
def test_hostile_connection_counters_add_as_python_adds(counts: list[Any], sizes_in: Any, sizes_out: Any) -> None:
    stats = RelayStats(sizes_in=sizes_in, sizes_out=sizes_out)
    for name, value in zip(COUNTERS, counts, strict=True):
        setattr(stats, name, value)
    native_totals, python_totals = ApiTotals(), ApiTotals()
    assert _outcome(metric_totals.add_totals, native_totals, stats) == _outcome(ApiTotals.add, python_totals, stats)
    for name in ("counts", "slots_in", "slots_out", "actions"):  # repr: a NaN counter is not equal to itself
        assert repr(getattr(native_totals, name)) == repr(getattr(python_totals, name))


class ClearingKey(str):
    """A record's key that, compared in the histogram's lookup, empties its points by key (once)."""

    target: dict[Any, Any] | None = None

    def __hash__(self) -> int:
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        if self.target is not None:
            self.target.clear()
            self.target = None
        return str.__eq__(self, other)


def _histogram() -> OwnHistogram:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], Resource({}), AlwaysOnExemplarFilter(), False)
    histogram = OwnHistograms(provider, reader)(provider.get_meter("m"), n.HANDSHAKE_DURATION)
    assert isinstance(histogram, OwnHistogram)
    return histogram


def _points(histogram: OwnHistogram) -> list[tuple[Any, ...]]:
    return [(str.__repr__(key), list(point.counts), point.sum, point.min, point.max,
             sorted((index, exemplar[0], exemplar[3]) for index, exemplar in point.exemplars.items()))
            for key, point in histogram._by_items.items()]  # fmt: skip


RECORDS = st.lists(
    st.tuples(
        st.one_of(st.floats(), st.integers(-2, 1 << 70), st.sampled_from([0.0, 1e308, 5e-324])),
        st.dictionaries(st.text(max_size=3), VALUES, max_size=3),
        st.one_of(st.text(max_size=3), st.builds(LyingStr, st.text(max_size=3)), st.builds(ClearingKey, st.just(""))),
    ),
    max_size=8,
)


@native
@HOSTILE
@given(records=RECORDS)
def test_hostile_records_count_as_python_counts(
    tracer: LeanTracer, records: list[tuple[Any, Any, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """Amounts of any value, any attributes, keys that lie or empty the points while looked up, under a sampled
    lean span (exemplars in C): the same points as Python's record_items."""
    histograms = _histogram(), _histogram()
    span = tracer.start_span("s")
    with trace.use_span(span, end_on_exit=True), caplog.at_level(logging.CRITICAL):  # refused amounts: logged
        for amount, attributes, key in records:
            outcomes = []
            for histogram, record in zip(histograms, (histograms[0].recorder, histograms[1].record_items), strict=True):
                if type(key) is ClearingKey:
                    key = ClearingKey(key)
                    key.target = histogram._by_items
                outcomes.append(_outcome(record, amount, attributes, key))
            assert outcomes[0] == outcomes[1]
    assert _points(histograms[0]) == _points(histograms[1])
