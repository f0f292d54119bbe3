"""The encoder's attribute blocks (``otlp_attributes.Blocks``): a lean span's ``str``/``int`` attributes kept
encoded as one block by key order and the values that repeat, the values of volatile keys encoded between
its pieces. Every batch must be the SDK encoder's bytes, whatever the cache holds: blocks kept between
batches, keys turning volatile, the cache emptied when full, shapes that stop grouping, values that
cannot be encoded (logged each time, never kept), and spans with links, events and status beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from asgi_ws_gateway.telemetry import otlp_attributes
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan
from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder

KEYS = ["http.route", "url.path", "client.address", "ws_gateway.close.code", "é.clé", "n"]
TEXTS = st.one_of(  # values that repeat, non-ASCII ones, a lone surrogate (left out and logged), any text
    st.sampled_from(["/ws/chat", "", "10.0.0.7", "ünï€😀", "x" * 200, "\ud800"]), st.text(max_size=8)
)
INTS = st.one_of(
    st.sampled_from([0, 1, 127, 128, 1000, -1, (1 << 63) - 1, -(1 << 63), 1 << 63, -(1 << 63) - 1, 1 << 200]),
    st.integers(-(1 << 70), 1 << 70),  # beyond int64 too: left out and logged, as the SDK does
)
ATTRIBUTES = st.dictionaries(st.sampled_from(KEYS), st.one_of(TEXTS, INTS), max_size=6)

pytestmark = pytest.mark.usefixtures("span_encoder")  # each test with the C encoder, then in Python


@pytest.fixture
def provider() -> Iterator[tuple[LeanTracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    lean = LeanTracerProvider(resource=Resource({"service.name": "blocks-test"}))
    lean.add_span_processor(SimpleSpanProcessor(exporter))
    yield lean, exporter
    lean.shutdown()


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits small enough for a test to cross them: keys turn volatile, blocks and shapes are forgotten."""
    monkeypatch.setattr(otlp_attributes, "CACHE_LIMIT", 8)
    monkeypatch.setattr(otlp_attributes, "_VOLATILE_AFTER", 3)
    monkeypatch.setattr(otlp_attributes, "_SHAPE_MISSES", 6)
    monkeypatch.setattr(otlp_attributes, "_SHAPES_LIMIT", 4)


def _spans(
    provider: LeanTracerProvider, exporter: InMemorySpanExporter, attribute_sets: list[dict[str, Any]]
) -> list[ReadableSpan]:
    exporter.clear()
    tracer = provider.get_tracer("asgi_ws_gateway")
    for attributes in attribute_sets:
        tracer.start_span("GET /ws/chat", kind=SpanKind.SERVER, attributes=attributes).end()
    spans = list(exporter.get_finished_spans())
    assert all(type(span) is LeanSpan for span in spans)
    return spans


def _same_as_sdk(encoder: SpanEncoder, batch: list[ReadableSpan]) -> None:
    assert encoder.encode(batch) == sdk_encode_spans(batch).SerializeToString()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(ATTRIBUTES, min_size=1, max_size=6), min_size=1, max_size=8))
def test_blocks_kept_between_batches_give_the_sdk_bytes(
    provider: tuple[LeanTracerProvider, InMemorySpanExporter], small_cache: None, batches: list[list[dict[str, Any]]]
) -> None:
    """Any str/int values (non-ASCII, invalid Unicode, ints past int64), over batches that repeat key
    orders and values, with limits small enough that keys turn volatile and the cache is emptied."""
    encoder = SpanEncoder()
    for attribute_sets in batches * 2:  # each batch twice: the second from the blocks kept
        _same_as_sdk(encoder, _spans(*provider, attribute_sets))
    blocks = encoder._span_blocks
    assert blocks.kept <= otlp_attributes.CACHE_LIMIT and len(blocks.shapes) <= otlp_attributes._SHAPES_LIMIT


def test_a_volatile_value_is_encoded_between_the_pieces_of_its_block(
    provider: tuple[LeanTracerProvider, InMemorySpanExporter],
) -> None:
    """A handshake id new every time, amid values that repeat: its key turns volatile, the block is kept
    around it, and the order of the attributes is the span's."""
    encoder = SpanEncoder()
    for i in range(400):
        attributes = {"http.route": "/ws/chat", "trace_id": f"{i:032x}", "ws_gateway.close.code": 1000,
                      "bytes": i * 7919, "é": "ü€"}  # fmt: skip
        _same_as_sdk(encoder, _spans(*provider, [attributes]))
    if encoder._native is not None:
        return  # the C encoder wrote these spans (the same bytes): the blocks are the Python path's
    shape = encoder._span_blocks.shapes[("http.route", "trace_id", "ws_gateway.close.code", "bytes", "é")]
    assert shape.volatile == (1, 3) and shape.grouped
    assert list(shape.blocks) == [("/ws/chat", 1000, "ü€")] and len(next(iter(shape.blocks.values()))) == 3


def test_values_whose_combinations_do_not_repeat_are_looked_up_one_by_one(
    provider: tuple[LeanTracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two keys cycling through few values each (never volatile), many combinations: the shape stops
    keeping blocks, and the bytes stay the SDK's."""
    monkeypatch.setattr(otlp_attributes, "_SHAPE_MISSES", 6)
    encoder = SpanEncoder()
    for i in range(60):
        _same_as_sdk(encoder, _spans(*provider, [{"a": f"a{i % 3}", "b": i % 7, "c": "same"}]))
    if encoder._native is not None:
        return  # as above: written in C
    shape = encoder._span_blocks.shapes["a", "b", "c"]
    assert not shape.grouped and not encoder._span_pairs.volatile


def test_the_cache_is_emptied_when_full(
    provider: tuple[LeanTracerProvider, InMemorySpanExporter], small_cache: None
) -> None:
    """Client-chosen values (paths) fill it: it stays bounded, blocks and shapes alike."""
    encoder = SpanEncoder()
    blocks = encoder._span_blocks
    for i in range(50):
        _same_as_sdk(encoder, _spans(*provider, [{f"k{i % 9}": "v", "path": f"/ws/{i % 5}"}]))
        assert blocks.kept <= 8 and len(blocks.shapes) <= 4
        assert sum(len(shape.blocks) for shape in blocks.shapes.values()) <= 8


@pytest.mark.parametrize("bad", [1 << 63, -(1 << 63) - 1, "\udc80"], ids=["int64+1", "int64-1", "surrogate"])
def test_an_attribute_that_cannot_be_encoded_is_logged_every_time(
    provider: tuple[LeanTracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture, bad: object
) -> None:
    """Left out as the SDK does, and never kept in a block: each span logs it."""
    encoder = SpanEncoder()
    with caplog.at_level(logging.ERROR, "asgi_ws_gateway.telemetry.otlp_attributes"):
        for _ in range(3):
            _same_as_sdk(encoder, _spans(*provider, [{"before": 1, "bad": bad, "after": "kept"}]))
    assert sum("failed to encode attribute bad" in record.getMessage() for record in caplog.records) == 3


def test_spans_with_links_events_and_status_beside_blocks(
    provider: tuple[LeanTracerProvider, InMemorySpanExporter],
) -> None:
    """The gateway's span kinds in one batch, twice: a link without attributes and one with, an event,
    an error status, a remote parent; their attributes in blocks where they are str/int."""
    lean, exporter = provider
    tracer = lean.get_tracer("asgi_ws_gateway")
    encoder = SpanEncoder()
    for _ in range(2):
        exporter.clear()
        handshake = tracer.start_span("GET /ws/chat", kind=SpanKind.SERVER, attributes={"http.route": "/ws/chat"})
        linked = handshake.get_span_context()
        handshake.set_status(Status(StatusCode.ERROR, "upstream_unreachable"))
        handshake.end()
        remote = SpanContext(0x1, 0x2, is_remote=True)
        tracer.start_span("upstream connect chat", kind=SpanKind.CLIENT, attributes={"server.port": 8000},
                          links=[Link(remote)]).end()  # fmt: skip
        connection = tracer.start_span("connection chat", attributes={"ws_gateway.close.code": 1000, "ratio": 0.5},
                                       links=[Link(linked, {"why": "handshake", "n": 2})])  # fmt: skip
        connection.add_event("message", {"ws_gateway.message.size": 5})
        connection.end()
        _same_as_sdk(encoder, list(exporter.get_finished_spans()))
