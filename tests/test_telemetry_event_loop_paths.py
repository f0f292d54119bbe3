"""The event loop's shorter paths for the gateway's own telemetry give what the longer ones gave.

Each traced connection ends three spans with their last attributes (``end_own``), makes the connection
span's link and context, and names the server an upstream attempt connects to. Each is compared here
with what the SDK, the API or the per-connection parsing makes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from asgi_ws_gateway.config.apis import UpstreamConfig
from asgi_ws_gateway.telemetry import current
from asgi_ws_gateway.telemetry.api_info import BackendInfo, _origin
from asgi_ws_gateway.telemetry.connection import _link
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import end_own
from asgi_ws_gateway.telemetry.otlp_wire import SpanEncoder
from asgi_ws_gateway.telemetry.server_addresses import connected_to
from support.spans import CollectingExporter, span_fields, start_as_gateway

RESOURCE = Resource({"service.name": "event-loop-paths-test"})
REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x")]))  # fmt: skip
LIMITS = {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "4", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5"}


@pytest.fixture(autouse=True)
def no_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*LIMITS, "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                 "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


class _Starts(SpanProcessor):
    """A processor with an ``on_start`` of its own: the tracer then starts owned spans on the checked path."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.started.append(span.name)


def _connection_script(tracer: trace.Tracer) -> None:
    """A connection's three spans as the gateway starts and ends them (and the ends it must refuse)."""

    start = partial(start_as_gateway, tracer)

    handshake = start("GET /ws/echo", None, SpanKind.SERVER, {"http.route": "/ws/echo", "url.path": "/ws/echo/a",
                                                              "server.port": 8000}, [Link(REMOTE)])  # fmt: skip
    attempt = start("upstream connect echo", trace.set_span_in_context(handshake, Context()), SpanKind.CLIENT,
                    {"ws_gateway.attempt": 1, "server.address": "127.0.0.1"})  # fmt: skip
    attempt.set_status(StatusCode.ERROR, "refused")
    end_own(attempt, {"http.response.status_code": 502, "error.type": "refused"})
    end_own(attempt, {"after": "end"})  # the SDK's warnings, nothing changed
    handshake.set_attribute("enduser.id", "alice")  # a policy's, through the API
    handshake.set_attribute("ws_gateway.outcome", "early")  # rewritten below: moves to the end, as in the SDK
    end_own(handshake, {"ws_gateway.outcome": "accepted", "http.response.status_code": 101})
    connection = start("connection echo", Context(), SpanKind.INTERNAL, {"ws_gateway.api": "echo"},
                       (_link(handshake.get_span_context()),))  # fmt: skip
    end_own(connection, {})
    start("many attributes", None, SpanKind.INTERNAL, {"k": "v"}).end()
    many = start("ended with many", None, SpanKind.INTERNAL, {"a": "1", "b": 2})
    end_own(many, {"c": "3", "d": 4, "e": "five characters and more"})


def _spans(make: Callable[[], Any], *, starts: _Starts | None = None) -> list[ReadableSpan]:
    exporter = CollectingExporter()
    provider = make()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("asgi_ws_gateway", "1.0")
    if starts is not None:
        provider.add_span_processor(starts)  # after the tracer was made: its fast start no longer applies
    _connection_script(tracer)
    provider.shutdown()
    return exporter.spans


@pytest.mark.parametrize("limited", [False, True], ids=["default-limits", "tight-limits"])
def test_spans_ended_with_own_attributes_are_the_sdk_spans(monkeypatch: pytest.MonkeyPatch, limited: bool) -> None:
    """``end_own`` (attributes and end in one frame, or the checked path, an ended span's refused): the SDK's
    fields and bytes."""
    for name, value in LIMITS.items() if limited else ():
        monkeypatch.setenv(name, value)
    random.seed(7)  # the default ids, drawn inline by the lean tracer: the same for both
    sdk = _spans(lambda: TracerProvider(resource=RESOURCE, shutdown_on_exit=False))
    random.seed(7)
    lean = _spans(lambda: LeanTracerProvider(resource=RESOURCE))
    assert [span_fields(span) for span in lean] == [span_fields(span) for span in sdk]
    assert SpanEncoder().encode(lean) == sdk_encode_spans(lean).SerializeToString()
    attempt = next(span for span in lean if span.name == "upstream connect echo")
    assert "after" not in (attempt.attributes or {})  # ended: refused, as by the SDK
    handshake = next(span for span in lean if span.name == "GET /ws/echo")
    assert list(handshake.attributes or {})[-2:] == ["ws_gateway.outcome", "http.response.status_code"]


def test_a_processor_with_on_start_added_later_sees_the_owned_spans() -> None:
    """A processor added after the tracer: owned spans start on the checked path, which calls its ``on_start``,
    and end with the SDK's fields."""
    random.seed(3)
    sdk_starts = _Starts()
    sdk = _spans(lambda: TracerProvider(resource=RESOURCE, shutdown_on_exit=False), starts=sdk_starts)
    random.seed(3)
    lean_starts = _Starts()
    lean = _spans(lambda: LeanTracerProvider(resource=RESOURCE), starts=lean_starts)
    assert lean_starts.started == sdk_starts.started and "connection echo" in lean_starts.started
    assert [span_fields(span) for span in lean] == [span_fields(span) for span in sdk]


def test_a_span_s_context_alone_is_the_api_s() -> None:
    """``current.alone(span)``: the context ``trace.set_span_in_context(span, Context())`` makes."""
    span = trace.NonRecordingSpan(REMOTE)
    made = current.alone(span)
    assert type(made) is Context and dict(made) == dict(trace.set_span_in_context(span, Context()))
    assert trace.get_current_span(made) is span


def test_the_connection_span_s_link_is_the_api_s_link() -> None:
    """The connection span's link to its handshake: a ``Link`` as ``Link(context)`` makes it."""
    made, expected = _link(REMOTE), Link(REMOTE)
    assert type(made) is Link and vars(made) == vars(expected)
    assert (made.context, made.attributes, made.dropped_attributes) == (REMOTE, None, 0)


@pytest.mark.parametrize(
    ("label", "origin"),
    [
        ("ws://Chat-1.Example:9000/rooms/{room}", "ws://Chat-1.Example:9000/"),
        ("wss://chat.example/", "wss://chat.example/"),
        ("ws://[::1]:9000/x", "ws://[::1]:9000/"),
        ("ws://127.0.0.1:9/", "ws://127.0.0.1:9/"),
        ("ws://127.0.0.1:9", None),  # no path: a URL under it may go on with its port
        ("ws://user:secret@chat.example/x", None),  # userinfo: never kept
    ],
)
def test_an_attempt_under_its_backend_s_origin_connects_where_its_url_says(label: str, origin: str | None) -> None:
    """The server an attempt names, found once per backend: what ``connected_to`` finds in a URL under it."""
    assert _origin(label) == origin
    if origin is None:
        return
    backend = BackendInfo.of("echo", UpstreamConfig(url=label.replace("{room}", "lobby")))
    assert backend.origin == origin
    for url in (origin, f"{origin}rooms/lobby?x=1", f"{origin}?x=1"):
        assert url.startswith(backend.origin) and backend.connected == connected_to(url)
    assert not "ws://elsewhere.example/".startswith(backend.origin)  # another authority: its own URL is parsed


def test_an_in_process_backend_has_no_origin() -> None:
    """An ASGI app as the backend: no URL, no origin to match."""
    backend = BackendInfo.of("echo", UpstreamConfig(url="asgi:", app=object()))
    assert not backend.network and backend.connected is None
    assert not "asgi:".startswith(backend.origin) and not "ws://x/".startswith(backend.origin)
