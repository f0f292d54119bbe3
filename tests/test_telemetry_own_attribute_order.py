"""``end_own`` leaves a lean span's attributes in the order the SDK's span leaves them.

Its one-frame path merges the last attributes first and looks for a rewritten key after (the dict grew
by less than it was given); a rewritten key then moves to the end, in the order given, as the SDK's
``set_attributes`` moves it. Compared here with the SDK's span for attribute sets that overlap anywhere.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan, end_own
from asgi_ws_gateway.telemetry.lean_tracer import LeanTracer
from support.spans import CollectingExporter

RESOURCE = Resource({"service.name": "own-attribute-order-test"})
keys = st.sampled_from(["a", "b", "c", "d", "e", "url.path", "ws_gateway.outcome", "http.response.status_code"])
values = st.one_of(st.text(max_size=3), st.integers(-5, 5))
attribute_sets = st.dictionaries(keys, values, max_size=8)


def _lean_tracer() -> LeanTracer:
    provider = LeanTracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(CollectingExporter()))  # no on_start: the one-frame paths
    tracer = provider.get_tracer("asgi_ws_gateway", "1.0")
    assert isinstance(tracer, LeanTracer)
    return tracer


LEAN = _lean_tracer()
SDK = TracerProvider(resource=RESOURCE, shutdown_on_exit=False).get_tracer("asgi_ws_gateway", "1.0")


@settings(max_examples=300, deadline=None)
@given(first=attribute_sets, last=attribute_sets)
def test_end_own_orders_rewritten_keys_as_the_sdk(first: dict[str, str | int], last: dict[str, str | int]) -> None:
    lean = LEAN.start_owned("s", Context(), SpanKind.INTERNAL, dict(first), ())
    assert type(lean) is LeanSpan
    end_own(lean, last)
    sdk = SDK.start_span("s", Context(), SpanKind.INTERNAL, first)
    sdk.set_attributes(last)
    sdk.end()
    assert isinstance(sdk, ReadableSpan)
    assert list((lean.attributes or {}).items()) == list((sdk.attributes or {}).items())


def test_a_rewritten_key_before_the_last_moves_to_the_end() -> None:
    span = LEAN.start_owned("s", Context(), SpanKind.INTERNAL, {"outcome": "early", "subject": "alice"}, ())
    assert type(span) is LeanSpan
    end_own(span, {"outcome": "accepted", "status": 101})
    assert list((span.attributes or {}).items()) == [("subject", "alice"), ("outcome", "accepted"), ("status", 101)]
