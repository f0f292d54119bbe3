"""A span context's ids as hex text (``hex_ids``, ``traceparent``): the C extension's functions against the Python
reference, on every id and flag value hypothesis draws, in range or not, and against the API's own formatting."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from asgi_ws_gateway.telemetry import hex_ids, otlp_wire

native = pytest.mark.skipif(
    otlp_wire.NATIVE is None,
    reason="the C extension (telemetry/_span_wire.c) is not built or turned off by ASGI_WS_GATEWAY_PURE_PYTHON",
)

ids = st.one_of(
    st.integers(1, 2**64 - 1), st.integers(1, 2**128 - 1), st.sampled_from([0, 2**64, 2**128 - 1, 2**128, -1]),
    st.integers(-(2**130), 2**130), st.booleans(), st.none(),
)  # fmt: skip
flags = st.one_of(st.integers(-2, 300), st.integers(0, 255).map(TraceFlags), st.booleans(), st.none())


def _context(trace_id: Any, span_id: Any, flag: Any) -> SpanContext:
    """A SpanContext as the tuple it is, whatever its values (its constructor's checks left out)."""
    return tuple.__new__(SpanContext, (trace_id, span_id, False, flag, None, True))


def _outcome(function: Any, context: SpanContext) -> Any:
    try:
        return function(context)
    except Exception as error:  # compared: the same exception type, raised by both
        return type(error)


@native
@given(trace_id=ids, span_id=ids, flag=flags)
def test_the_c_functions_are_the_python_functions(trace_id: Any, span_id: Any, flag: Any) -> None:
    assert otlp_wire.NATIVE is not None
    context = _context(trace_id, span_id, flag)
    assert _outcome(otlp_wire.NATIVE.hex_ids, context) == _outcome(hex_ids._hex_ids, context)
    assert _outcome(otlp_wire.NATIVE.traceparent, context) == _outcome(hex_ids._traceparent, context)


@given(trace_id=st.integers(1, 2**128 - 1), span_id=st.integers(1, 2**64 - 1), flag=st.integers(0, 255))
def test_a_valid_context_s_ids_are_the_api_s(trace_id: int, span_id: int, flag: int) -> None:
    """The ids as ``trace.format_trace_id``/``format_span_id`` write them, the header as the W3C propagator does."""
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flag))
    assert hex_ids.hex_ids(context) == (trace.format_trace_id(trace_id), trace.format_span_id(span_id))
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(context)))
    assert hex_ids.traceparent(context) == carrier["traceparent"]
