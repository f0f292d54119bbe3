"""The gateway's OTLP span encoder against the SDK's: the same request, parsed back with opentelemetry-proto.

Spans are built directly as ``ReadableSpan`` (every field chosen by hypothesis: attribute value
types, events, links, status, kinds, trace state, remote parents, resources, scopes, dropped
counts); both encoders serialize the same batch, and the parsed messages and the bytes must match.
The exporters are then run against a real OTLP receiver, over gRPC and HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as SdkGrpcSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from asgi_ws_gateway.telemetry import otlp_wire
from asgi_ws_gateway.telemetry.otlp_export import GrpcSpanExporter, HttpSpanExporter
from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder, encode_spans
from support.otlp import OtlpReceiver

EACH_ENCODER = pytest.mark.usefixtures("span_encoder")  # the test with the C encoder, then in Python

INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
TEXT = st.text(max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), TEXT, INT64, st.floats(allow_nan=False), st.binary(max_size=12))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)
"""Every case of AnyValue: the SDK's own spans hold scalars and tuples; nested values reach the encoder
from resources and direct ReadableSpans."""
ATTRIBUTES = st.dictionaries(TEXT, VALUES, max_size=6)
TIMES = st.one_of(st.none(), st.integers(0, (1 << 64) - 1))


@st.composite
def bounded_attributes(draw: st.DrawFn) -> dict[str, Any] | BoundedAttributes:
    """A plain dict, or the SDK's bounded mapping with some attributes dropped (a dropped count)."""
    attributes = draw(ATTRIBUTES)
    if not draw(st.booleans()):
        return attributes
    # The SDK's own mapping: values it refuses (None, dicts) are left out, the overflow is counted.
    bounded = BoundedAttributes(maxlen=draw(st.integers(0, 3)), attributes=attributes, immutable=False)
    return bounded


def _bounded_list(items: list[Any], maxlen: int | None) -> list[Any] | BoundedList[Any]:
    return items if maxlen is None else BoundedList.from_seq(maxlen, items)


# Built once: from_regex compiles its pattern when built, and inside the composite that was on every draw
# (most of these tests' time). The same draws as before.
TRACE_STATES = st.lists(
    st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)),
    max_size=2,
    unique_by=lambda kv: kv[0],
)
TRACE_IDS = st.integers(1, (1 << 128) - 1)
SPAN_IDS = st.integers(1, (1 << 64) - 1)
FLAGS = st.sampled_from([0, 1])


@st.composite
def span_contexts(draw: st.DrawFn) -> SpanContext:
    state = draw(TRACE_STATES)
    return SpanContext(
        draw(TRACE_IDS), draw(SPAN_IDS), draw(st.booleans()), TraceFlags(draw(FLAGS)), TraceState(state),
    )  # fmt: skip


RESOURCES = [Resource({"service.name": "gw", "n": 3}), Resource({"service.name": "gw", "n": 3}),
             Resource({"service.name": "other", "tags": ("a", "b")}, "https://opentelemetry.io/schemas/1.21.0"),
             Resource({})]  # fmt: skip
"""The first two are equal but distinct objects: the SDK groups them as one resource."""
SCOPES = [
    None, InstrumentationScope("asgi_ws_gateway", "1.2.3"), InstrumentationScope("asgi_ws_gateway", "1.2.3"),
    InstrumentationScope("other", None, "https://schema", {"scope.attr": True}), InstrumentationScope(""),
]  # fmt: skip


CODES = st.sampled_from(list(StatusCode))
DESCRIPTIONS = st.one_of(st.none(), TEXT)
EVENT_TIMES = st.integers(0, (1 << 64) - 1)
UP_TO_THREE = st.integers(0, 3)
CONTEXTS = span_contexts()
PARENTS = st.one_of(st.none(), CONTEXTS)
SPAN_ATTRIBUTES = bounded_attributes()
LIST_LIMITS = st.one_of(st.none(), st.integers(0, 2))
KINDS = st.sampled_from(list(SpanKind))
SPAN_RESOURCES = st.sampled_from(RESOURCES)
SPAN_SCOPES = st.sampled_from(SCOPES)


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    code = draw(CODES)
    status = Status(code, draw(DESCRIPTIONS) if code is StatusCode.ERROR else None)
    events = [Event(draw(TEXT), draw(SPAN_ATTRIBUTES), draw(EVENT_TIMES)) for _ in range(draw(UP_TO_THREE))]
    links = [Link(draw(CONTEXTS), draw(SPAN_ATTRIBUTES)) for _ in range(draw(UP_TO_THREE))]
    return ReadableSpan(
        name=draw(TEXT), context=draw(CONTEXTS), parent=draw(PARENTS),
        resource=draw(SPAN_RESOURCES), attributes=draw(SPAN_ATTRIBUTES),
        events=_bounded_list(events, draw(LIST_LIMITS)),
        links=_bounded_list(links, draw(LIST_LIMITS)),
        kind=draw(KINDS), status=status, start_time=draw(TIMES), end_time=draw(TIMES),
        instrumentation_scope=draw(SPAN_SCOPES),
    )  # fmt: skip


def _sdk(batch: list[ReadableSpan]) -> bytes:
    return sdk_encode_spans(batch).SerializeToString()


def _encoders() -> dict[str, SpanEncoder]:
    """A fresh encoder of each kind: the C extension's (when it is built) and the Python one (the reference).
    The hypothesis tests check both on each example they draw: drawing the spans is most of their time, so
    the draws are not made twice (as :func:`span_encoder`'s two runs would)."""
    native = otlp_wire.NATIVE  # not NATIVE_ENCODER: span_encoder's Python run may have it set aside meanwhile
    kinds = {"python": (None, None)} if native is None else {
        "c": (native.encode_span, native.encode_spans), "python": (None, None),
    }  # fmt: skip
    encoders = {}
    for kind, (span, batch) in kinds.items():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(otlp_wire, "NATIVE_ENCODER", span)  # read by each SpanEncoder made
            patch.setattr(otlp_wire, "NATIVE_BATCH_ENCODER", batch)
            encoders[kind] = SpanEncoder()
    return encoders


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=5))
def test_a_batch_encodes_as_the_sdk_encodes_it(batch: list[ReadableSpan]) -> None:
    """Every field of every span, its resource and scope groups: the same message, the same bytes."""
    sdk = sdk_encode_spans(batch)
    for kind, encoder in _encoders().items():
        ours = encoder.encode(batch)
        assert ExportTraceServiceRequest.FromString(ours) == sdk, kind
        assert ours == sdk.SerializeToString(), kind


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(spans(), min_size=1, max_size=3), min_size=2, max_size=4))
def test_the_pair_cache_kept_between_batches_changes_nothing(batches: list[list[ReadableSpan]]) -> None:
    """One encoder over many batches (as an exporter keeps it) gives what a fresh one gives."""
    encoders = _encoders()
    for batch in batches:
        sdk = _sdk(batch)
        for kind, encoder in encoders.items():
            assert encoder.encode(batch) == sdk, kind


@EACH_ENCODER
def test_equal_values_of_different_types_are_not_confused_by_the_cache() -> None:
    """True, 1 and 1.0 are equal dict keys; -0.0 equals 0.0: each keeps its own case."""
    encoder = SpanEncoder()
    for value in (1, True, 1.0, 0.0, -0.0, "1", 0, False):
        batch = [_span({"k": value})]
        assert encoder.encode(batch) == _sdk(batch), value


@EACH_ENCODER
def test_values_that_seldom_repeat_do_not_push_the_others_out_of_the_cache() -> None:
    """A connection's handshake ids (new each time) and byte counts: encoded afresh, not kept, so the
    pairs that do repeat stay cached; every batch still the SDK's bytes."""
    encoder = SpanEncoder()
    for i in range(3000):
        batch = [_span({
            "route": "/ws/chat", "trace_id": f"{i:032x}", "bytes": i * 7919, "long": "x" * (i % 300),
            "text": "é€" * (i % 50) + chr(0x61 + i % 26),  # new values of one UTF-8 length: one head, new bytes
        })]  # fmt: skip
        assert encoder.encode(batch) == _sdk(batch), i
    pairs = encoder._span_pairs
    assert pairs.volatile == {"trace_id", "bytes", "long", "text"}
    assert ("route", "/ws/chat", str) in pairs.encoded and len(pairs.encoded) <= 4 * 256 + 1


def _span(attributes: dict[str, Any]) -> ReadableSpan:
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False)
    return ReadableSpan("s", context, attributes=attributes, start_time=1, end_time=2, resource=RESOURCES[0])


@EACH_ENCODER
@pytest.mark.parametrize(
    "bad", [1 << 63, -(1 << 63) - 1, "\ud800", object()], ids=["int64+1", "int64-1", "surrogate", "object"]
)
def test_an_attribute_that_cannot_be_encoded_is_left_out_as_the_sdk_does(
    bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    batch = [_span({"before": 1, "bad": bad, "after": "kept"})]
    with caplog.at_level(logging.ERROR, "asgi_ws_gateway.telemetry.otlp_attributes"):
        ours = encode_spans(batch)
    assert ours == _sdk(batch)
    (span,) = ExportTraceServiceRequest.FromString(ours).resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in span.attributes] == ["before", "after"]
    assert "bad" in caplog.text


@EACH_ENCODER
def test_an_attribute_whose_key_is_not_a_string_is_left_out_as_the_sdk_does() -> None:
    batch = [_span(cast("dict[str, Any]", {"before": 1, 7: "seven", "after": "kept"}))]
    assert encode_spans(batch) == _sdk(batch)


@EACH_ENCODER
def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_spans([]) == _sdk([]) == b""


# -- the exporters, against a real receiver --------------------------------------------------------


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


GATEWAY_SPAN: dict[str, Any] = {
    "http.request.method": "GET", "http.route": "/ws/chat/{room}", "ws_gateway.api.name": "chat",
    "network.protocol.name": "websocket", "url.scheme": "ws", "url.path": "/ws/chat/lobby",
    "client.address": "10.0.0.7", "user_agent.original": "probe/1.0", "network.protocol.version": "13",
    "server.address": "gw.example", "server.port": 8000, "http.response.status_code": 101,
    "ws_gateway.handshake.outcome": "accepted", "ws_gateway.upstream.attempts": 2, "ratio": 0.25,
    "flag": False, "tags": ("a", "b"), "raw": b"\x00\x01",
}  # fmt: skip


@EACH_ENCODER
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("compression", ["", "gzip"])
def test_the_exporter_delivers_every_attribute(
    otlp: OtlpReceiver, protocol: str, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the SDK's transport (endpoint and compression from OTEL_*), decoded attribute by attribute."""
    if compression:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", compression)
    if protocol == "grpc":
        exporter: GrpcSpanExporter | HttpSpanExporter = GrpcSpanExporter(endpoint=otlp.endpoint("grpc"), insecure=True)
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint("http/protobuf"))
        exporter = HttpSpanExporter()
    assert exporter._encoder is not None
    parent = SpanContext(0x1, 0x2, True)
    span = ReadableSpan(
        "GET /ws/chat/{room}", SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False), parent,
        RESOURCES[0], GATEWAY_SPAN, [Event("message", {"ws_gateway.message.size": 5}, 7)], [Link(parent)],
        SpanKind.SERVER, status=Status(StatusCode.ERROR, "upstream_unreachable"), start_time=10, end_time=20,
        instrumentation_scope=SCOPES[1],
    )  # fmt: skip
    try:
        assert exporter.export([span]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    got = otlp.wait_for_span(lambda s: s.name == "GET /ws/chat/{room}")
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in GATEWAY_SPAN.items()}
    assert got.attributes == expected and got.protocol == protocol
    assert (got.kind, got.status_code, got.parent_span_id, got.start_ns, got.end_ns) == (
        2,
        2,
        "0000000000000002",
        10,
        20,
    )
    assert got.events == [("message", {"ws_gateway.message.size": 5})]
    assert got.links == [("00000000000000000000000000000001", "0000000000000002")]
    assert got.resource == {"service.name": "gw", "n": 3} and got.scope == "asgi_ws_gateway"


@EACH_ENCODER
def test_the_grpc_exporter_reconnects_with_its_bytes_stub(otlp: OtlpReceiver) -> None:
    """The SDK rebuilds channel and stub after UNAVAILABLE: the rebuilt stub still sends the bytes as they are."""
    exporter = GrpcSpanExporter(endpoint=otlp.endpoint("grpc"), insecure=True)
    try:
        exporter._initialize_channel_and_stub()  # what the SDK's retry does
        assert exporter.export([_span({"k": "after reconnect"})]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [s.attributes for s in otlp.spans()] == [{"k": "after reconnect"}]


@EACH_ENCODER
def test_an_sdk_grpc_exporter_it_does_not_fit_keeps_the_sdk_encoder(
    otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An SDK whose exporter never calls the hook that installs the bytes stub: a warning, and spans still arrive."""
    monkeypatch.setattr(
        GrpcSpanExporter, "_initialize_channel_and_stub", SdkGrpcSpanExporter._initialize_channel_and_stub
    )
    with caplog.at_level(logging.WARNING, "asgi_ws_gateway.telemetry.otlp_export"):
        exporter = GrpcSpanExporter(endpoint=otlp.endpoint("grpc"), insecure=True)
    try:
        assert exporter._encoder is None and "its own encoder is used" in caplog.text
        assert exporter.export([_span({"k": "sdk"})]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [s.attributes for s in otlp.spans()] == [{"k": "sdk"}]


@EACH_ENCODER
def test_a_failed_http_export_is_a_failure(otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver answers 404 on another path: the batch fails, as with the SDK's exporter."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2")
    exporter = HttpSpanExporter(endpoint=otlp.endpoint("http/protobuf") + "/v1/elsewhere")
    try:
        assert exporter.export([_span({"k": "v"})]) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert exporter.export([_span({"k": "v"})]) is SpanExportResult.FAILURE  # after shutdown


@EACH_ENCODER
def test_an_http_batch_over_max_request_size_is_dropped_unsent(otlp: OtlpReceiver) -> None:
    exporter = HttpSpanExporter(endpoint=otlp.endpoint("http/protobuf") + "/v1/traces", max_request_size=160)
    try:
        assert exporter.export([_span({"k": "v" * 200})]) is SpanExportResult.FAILURE
        assert exporter.export([_span({"k": "v"})]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert [s.attributes for s in otlp.spans()] == [{"k": "v"}]
