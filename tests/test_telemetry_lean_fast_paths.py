"""The lean provider's fast paths for the gateway's own spans give what their slow paths give.

Under the gateway's usual provider (the default sampler and ids, the SDK's ``BatchSpanProcessor``
alone), ``LeanTracer.start_owned`` makes a span in one frame and a sampled span goes straight into
the batch queue. Each is compared here with the SDK's own provider for the same calls: the spans'
fields and encoded bytes, and the queue's rules (a shut-down processor, a full queue, a full batch).
The tests in ``test_telemetry_lean_spans.py`` run with a ``SimpleSpanProcessor``, whose ``on_start``
takes the slow path.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, cast

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from asgi_ws_gateway.log_throttle import RepeatFilter
from asgi_ws_gateway.telemetry import propagation
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import LeanTracer
from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder
from support.spans import CollectingExporter, span_fields, start_as_gateway

RESOURCE = Resource({"service.name": "fast-path-test"})
STATE = TraceState([("vendor", "x")])
REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1), trace_state=STATE)  # fmt: skip
LIMITS = {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "4", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5"}
LIMIT_VARIABLES = (*LIMITS, "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                   "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")  # fmt: skip


@pytest.fixture(autouse=True)
def no_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sdk_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The SDK batch queue's log lines, each seen afresh: its logger drops a line repeated within 20 s, and
    the gateway's export-failure throttle, on it once a test of the same process built the gateway's own
    providers, within 10 s (taken off for the test, put back after)."""
    sdk_logger = logging.getLogger(_SDK_LOGGER)
    throttles = [found for found in sdk_logger.filters if isinstance(found, RepeatFilter)]
    for found in throttles:
        sdk_logger.removeFilter(found)
    for other in sdk_logger.filters:
        vars(other).pop("last_log", None)
    yield caplog
    for found in throttles:
        sdk_logger.addFilter(found)


_SDK_LOGGER = "opentelemetry.sdk._shared_internal"


def _owned_script(tracer: trace.Tracer) -> None:
    """A connection's spans as the gateway starts them, under each kind of parent."""

    start = partial(start_as_gateway, tracer)

    def set_plain(span: trace.Span, attributes: dict[str, Any]) -> None:
        if isinstance(span, LeanSpan):
            span.set_plain(attributes)
        else:
            span.set_attributes(attributes)

    handshake = start("GET /ws/echo", None, SpanKind.SERVER, {"http.route": "/ws/echo", "url.path": "/ws/echo/long",
                                                              "server.port": 8000}, [Link(REMOTE)])  # fmt: skip
    context = trace.set_span_in_context(handshake, Context())
    connect = start("upstream connect echo", context, SpanKind.CLIENT, {"ws_gateway.attempt": 1, "a": "b"})
    set_plain(connect, {"http.response.status_code": 502, "error.type": "refused"})
    connect.set_status(StatusCode.ERROR, "refused")
    connect.end()
    set_plain(handshake, {"url.path": "rewritten, so last", "ws_gateway.outcome": "accepted"})
    handshake.end()
    connection = start("connection echo", Context(), SpanKind.INTERNAL, {"ws_gateway.api": "echo"},
                       [Link(handshake.get_span_context())])  # fmt: skip
    set_plain(connection, {"ws_gateway.close.code": 1000})
    connection.end()
    for flags in (0, 1):  # another tracer's span as the parent: remote, with a trace state; not sampled, sampled
        parent = NonRecordingSpan(SpanContext(REMOTE.trace_id, REMOTE.span_id, True, TraceFlags(flags), STATE))
        start(f"under a remote parent {flags}", trace.set_span_in_context(parent, Context()), SpanKind.SERVER,
              {"k": "v"}).end()  # fmt: skip
    start("no attributes", None, SpanKind.INTERNAL, {}).end()


def _batched(make: Callable[[], Any], script: Callable[[trace.Tracer], None]) -> list[ReadableSpan]:
    exporter = CollectingExporter()
    provider = make()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    script(provider.get_tracer("asgi_ws_gateway", "1.0"))
    provider.shutdown()
    return exporter.spans


@pytest.mark.parametrize("limited", [False, True], ids=["default-limits", "tight-limits"])
def test_owned_spans_under_a_batch_processor_are_the_sdk_spans(monkeypatch: pytest.MonkeyPatch, limited: bool) -> None:
    """``start_owned`` in one frame (no processor's ``on_start``), and its fallbacks (limits, another
    tracer's parent): the SDK provider's fields, ids and encoded bytes."""
    for name, value in LIMITS.items() if limited else ():
        monkeypatch.setenv(name, value)
    random.seed(5)  # the default ids, drawn inline by the lean tracer: the same for both
    sdk = _batched(lambda: TracerProvider(resource=RESOURCE, shutdown_on_exit=False), _owned_script)
    random.seed(5)
    lean = _batched(lambda: LeanTracerProvider(resource=RESOURCE), _owned_script)
    assert [span_fields(span) for span in lean] == [span_fields(span) for span in sdk]
    assert [span.name for span in lean] == [
        "upstream connect echo", "GET /ws/echo", "connection echo", "under a remote parent 1", "no attributes",
    ]  # fmt: skip
    assert SpanEncoder().encode(lean) == sdk_encode_spans(lean).SerializeToString()
    handshake = cast("LeanSpan", next(span for span in lean if span.name == "GET /ws/echo"))
    assert handshake._plain is not limited  # tight limits: the checked path


def test_the_fast_start_is_the_usual_one() -> None:
    """Under a ``BatchSpanProcessor`` alone, the tracer calls no ``on_start``: the one-frame start applies."""
    provider = LeanTracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    tracer = cast("LeanTracer", provider.get_tracer("asgi_ws_gateway"))
    assert tracer.starts == () and tracer.parent_or_on_random and tracer.max_length is None
    span = tracer.start_owned("s", None, SpanKind.INTERNAL, {"a": "b"}, ())
    assert type(span) is LeanSpan and span._plain and span.attributes == {"a": "b"}
    span.end()
    provider.shutdown()


def _ended(make: Callable[[], Any], processor: BatchSpanProcessor, names: Sequence[str], *, shut: bool) -> None:
    provider = make()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("asgi_ws_gateway")
    if shut:
        processor.shutdown()  # type: ignore[no-untyped-call]
    for name in names:
        tracer.start_span(name).end()


@pytest.mark.parametrize("provider", ["sdk", "lean"])
def test_a_span_ended_after_shutdown_is_not_queued(provider: str, sdk_log: pytest.LogCaptureFixture) -> None:
    """A shut-down batch processor takes no span (the SDK's log line), through the lean queue as the SDK's."""
    exporter = CollectingExporter()
    processor = BatchSpanProcessor(exporter)
    make = _maker(provider)
    with sdk_log.at_level(logging.INFO, logger=_SDK_LOGGER):
        _ended(make, processor, ["late"], shut=True)
    assert exporter.spans == []
    assert not processor._batch_processor._queue
    assert [record.getMessage() for record in sdk_log.records] == ["Shutdown called, ignoring Span."]


@pytest.mark.parametrize("provider", ["sdk", "lean"])
def test_a_full_queue_drops_its_oldest_span_with_the_sdk_s_warning(
    provider: str, sdk_log: pytest.LogCaptureFixture
) -> None:
    """A queue at ``max_queue_size`` warns and drops its oldest span, through the lean queue as the SDK's."""
    exporter = CollectingExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=2, max_export_batch_size=2, schedule_delay_millis=600_000)
    processor._batch_processor._worker_awaken.set = lambda: None  # type: ignore[method-assign]  # no export here
    with sdk_log.at_level(logging.WARNING, logger=_SDK_LOGGER):
        _ended(_maker(provider), processor, ["one", "two", "three"], shut=False)
    assert [span.name for span in processor._batch_processor._queue] == ["three", "two"]
    assert [record.getMessage() for record in sdk_log.records] == ["Queue full, dropping Span."]
    del processor._batch_processor._worker_awaken.set  # the worker woken again, to shut down
    processor._batch_processor._queue.clear()
    processor.shutdown()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("provider", ["sdk", "lean"])
def test_a_full_batch_wakes_the_exporting_thread(provider: str) -> None:
    """A batch's worth of queued spans is exported at once, not after the schedule delay (10 minutes here)."""
    exporter = CollectingExporter()
    processor = BatchSpanProcessor(exporter, max_export_batch_size=2, schedule_delay_millis=600_000)
    _ended(_maker(provider), processor, ["one", "two"], shut=False)
    assert exporter.exported.wait(30)  # a hang guard: the export starts at once
    assert [span.name for span in exporter.spans] == ["one", "two"]
    processor.shutdown()  # type: ignore[no-untyped-call]


def _maker(provider: str) -> Callable[[], Any]:
    if provider == "sdk":
        return lambda: TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    return lambda: LeanTracerProvider(resource=RESOURCE)


@pytest.mark.parametrize(
    "names",
    [
        set(),
        {"host", "user-agent", "x-forwarded-for", "sec-websocket-key"},
        {"host", "uberctx-user"},
        {"ot-baggage-user", "origin"},
        {"x-uberctx-user", "baggage-ot-baggage-"},  # the prefixes inside a name: not prefixed
        {"uberctx-"},
    ],
)
def test_the_untrusted_prefix_check_is_the_per_name_check(names: set[str]) -> None:
    """Upstream headers named as Jaeger's or OpenTracing's baggage items are found as ``startswith`` finds them."""
    assert propagation._any_untrusted_prefixed(names) == any(map(propagation._UNTRUSTED_PREFIXED, names))
