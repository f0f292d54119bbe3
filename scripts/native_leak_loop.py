"""Calls each C entry point of the telemetry extensions on its usual, declined and error paths many times and
reports what memory grew (tracemalloc: every PyMem/PyObject allocation, so a reference leaked on any path
shows as growth). A release build has no sys.gettotalrefcount: this is how leaks on error paths are seen.

    PYTHONPATH=src python scripts/native_leak_loop.py [calls per case, default 100000]

Exit status 1 when a case grew by more than ``LIMIT`` bytes (run on the normal build; see docs/telemetry.md
"How the C was audited").
"""

from __future__ import annotations

import logging
import math
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import metric_totals, otlp_wire
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import DEFAULT_STATUS, LeanSpan
from asgi_ws_gateway.telemetry.lean_tracer import NO_ATTRIBUTES, LeanTracer
from asgi_ws_gateway.telemetry.metric_totals import ApiTotals
from asgi_ws_gateway.telemetry.propagation import _DROPPED_MASKS

LIMIT = 64 * 1024
"""Bytes a case may grow by (caches filled once, an interned string); a leak of one object a call is megabytes."""


def _raising(call: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        try:
            return call()
        except Exception as error:  # the error path is the point: its result dropped
            return type(error)

    return run


def cases() -> dict[str, Callable[[], object]]:
    native = otlp_wire.NATIVE
    if native is None or native.starter is None or native.end_own is None or metric_totals.NATIVE_RECORDER is None:
        raise SystemExit("the C extensions are not built (or ASGI_WS_GATEWAY_PURE_PYTHON is set)")
    end_own = native.end_own
    tracer = cast("LeanTracer", LeanTracerProvider(resource=Resource({})).get_tracer("asgi_ws_gateway"))
    start = native.starter(tracer)

    def span(attributes: dict[str, Any]) -> LeanSpan:
        made = cast("LeanSpan", start("s", None, SpanKind.SERVER, attributes, ()))
        made._end_time = made._start_time
        return made

    plain, surrogate, huge = span({"url.path": "/ws/\u00fc", "n": -1}), span({"k": "\ud800"}), span({"k": 1 << 70})
    encode = native.encode_span
    defaults = (DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES)
    bad_ids = tuple.__new__(SpanContext, (1, -1, False, 1 << 70, None, True))  # the span id raises
    totals, stats, float_stats = ApiTotals(), RelayStats(sizes_in=[1, 0, 2]), RelayStats()
    float_stats.bytes_in = 1.5  # type: ignore[assignment]  # declined: ApiTotals.add in Python
    from asgi_ws_gateway.telemetry._span_wire import Ids, bind

    ids = Ids()
    return {
        "encode_span written": lambda: encode(plain, *defaults),
        "encode_span declined (surrogate)": lambda: encode(surrogate, *defaults),
        "encode_span declined (int past int64)": lambda: encode(huge, *defaults),
        "encode_span error (no fields)": _raising(lambda: encode(object(), *defaults)),  # type: ignore[arg-type]
        "encode_spans mixed batch": lambda: native.encode_spans([plain, surrogate, plain], *defaults),
        "hex_ids error (negative id)": _raising(lambda: native.hex_ids(bad_ids)),
        "traceparent declined": lambda: native.traceparent(bad_ids),
        "trace_names decided": lambda: native.trace_names([("via", "v"), ("b3", "v")], _DROPPED_MASKS),
        "trace_names declined": lambda: native.trace_names([("via", "v"), ("B3", "v")], _DROPPED_MASKS),
        "trace_names declined (a mask past a long)": lambda: native.trace_names([("b3", "v")], {"b3": 1 << 70}),
        "starter + end_own": lambda: end_own(start("s", None, SpanKind.SERVER, {"a": 1}, ()), {"b": "c"}),
        "end_own of an ended span (Python)": lambda: end_own(plain, {"b": "c"}),
        "Ids": lambda: (ids.generate_trace_id(), ids.generate_span_id()),
        "bind error": _raising(lambda: bind(cast("Any", 1), ())),
        "add_totals": lambda: metric_totals.add_totals(totals, stats),
        "add_totals declined": lambda: metric_totals.add_totals(totals, float_stats),
        "Recorder declined (NaN)": lambda: _recorder()(math.nan, {}, ""),
        "Recorder recorded": lambda: _recorder()(0.5, {"a": "b"}, "a=b"),
    }


_RECORDER: list[Any] = []


def _recorder() -> Any:
    """One histogram's C recorder, made once (its histogram listed by a first record)."""
    if not _RECORDER:
        from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from asgi_ws_gateway.telemetry import names as n
        from asgi_ws_gateway.telemetry.histograms import OwnHistogram, OwnHistograms

        reader = InMemoryMetricReader()
        provider = MeterProvider([reader], Resource({}), AlwaysOnExemplarFilter(), False)
        histogram = OwnHistograms(provider, reader)(provider.get_meter("m"), n.HANDSHAKE_DURATION)
        assert isinstance(histogram, OwnHistogram)
        _RECORDER.append(histogram.recorder)
        _RECORDER[0](0.5, {"a": "b"}, "a=b")
    return _RECORDER[0]


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    failed = 0
    logging.disable(logging.CRITICAL)  # the refused NaN is logged per record
    tracemalloc.start()
    for name, call in cases().items():
        for _ in range(1000):  # caches and free lists filled first
            call()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(calls):
            call()
        grew = tracemalloc.get_traced_memory()[0] - before
        failed += grew > LIMIT
        print(f"{'LEAK' if grew > LIMIT else 'ok  '} {grew:>10} bytes after {calls} calls: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
