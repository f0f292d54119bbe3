"""A real OTLP receiver on 127.0.0.1: gRPC and HTTP/protobuf, for traces, metrics and logs.

Built on ``opentelemetry-proto`` and ``grpcio``: it decodes exactly what an OTLP exporter sends
over the wire and keeps it for assertions. Usage::

    with OtlpReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint("grpc")
        ...
        span = receiver.wait_for_span(lambda s: s.name == "GET /ws/echo")
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "Point", "ReceivedLog", "ReceivedSpan"]

Protocol = Literal["grpc", "http/protobuf"]
Attributes = dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> Attributes:
    items: list[KeyValue] = list(pairs)
    return {kv.key: _value(kv.value) for kv in items}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived (ids in lower-case hex, times in ns since the epoch)."""

    name: str
    kind: int
    """OTLP ``SpanKind``: 1 internal, 2 server, 3 client."""
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: Attributes
    status_code: int
    """0 unset, 1 ok, 2 error."""
    links: list[tuple[str, str]]
    events: list[tuple[str, Attributes]]
    resource: Attributes
    scope: str
    protocol: Protocol
    size: int = 0
    """Bytes of the span's OTLP encoding (protobuf), as it arrived."""


@dataclass(frozen=True)
class Point:
    """One metric data point: a sum's ``value`` or a histogram's ``count``/``sum``/``buckets``."""

    metric: str
    unit: str
    kind: str
    """``sum``, ``histogram`` or ``gauge``."""
    monotonic: bool
    attributes: Attributes
    value: float
    count: int
    sum: float
    bounds: list[float]
    buckets: list[int]
    protocol: Protocol
    temporality: int = 0
    """OTLP ``AggregationTemporality`` of a sum or histogram: 1 delta, 2 cumulative (0: a gauge)."""


@dataclass(frozen=True)
class ReceivedLog:
    body: Any
    attributes: Attributes
    trace_id: str
    span_id: str
    event_name: str
    protocol: Protocol


class OtlpReceiver:
    """OTLP/gRPC and OTLP/HTTP (protobuf) on two free ports of 127.0.0.1, in background threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._points: list[Point] = []
        self._logs: list[ReceivedLog] = []
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.http_refusal: int | None = None
        """While set, the HTTP status every OTLP/HTTP export is answered with (a collector failing: 503...)."""

    def endpoint(self, protocol: Protocol) -> str:
        """The value of ``OTEL_EXPORTER_OTLP_ENDPOINT`` for ``protocol``."""
        return f"http://127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    # -- what arrived ---------------------------------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    def points(self) -> list[Point]:
        """Every data point received, in arrival order (cumulative sums: the last one is current)."""
        with self._cond:
            return list(self._points)

    def logs(self) -> list[ReceivedLog]:
        with self._cond:
            return list(self._logs)

    def latest(self, metric: str) -> dict[frozenset[tuple[str, Any]], Point]:
        """The last point of ``metric`` per attribute set."""
        latest: dict[frozenset[tuple[str, Any]], Point] = {}
        for point in self.points():
            if point.metric == metric:
                latest[frozenset(point.attributes.items())] = point
        return latest

    def wait_for_span(self, predicate: Callable[[ReceivedSpan], bool], timeout: float = 10.0) -> ReceivedSpan:
        """Block until a span matching ``predicate`` has arrived; return it.

        Raises:
            TimeoutError: if none arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for span in self._spans:
                    if predicate(span):
                        return span
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = [s.name for s in self._spans]
                    raise TimeoutError(f"no matching span within {timeout} s; received {names}")
                self._cond.wait(remaining)

    # -- decoding -------------------------------------------------------------------------------------

    def _traces(self, request: ExportTraceServiceRequest, protocol: Protocol) -> None:
        spans = []
        for rs in request.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        ReceivedSpan(
                            name=s.name, kind=s.kind, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(), start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano, attributes=_attributes(s.attributes),
                            status_code=s.status.code, links=[(lk.trace_id.hex(), lk.span_id.hex()) for lk in s.links],
                            events=[(e.name, _attributes(e.attributes)) for e in s.events], resource=resource,
                            scope=ss.scope.name, protocol=protocol, size=s.ByteSize(),
                        )
                    )  # fmt: skip
        with self._cond:
            self._spans.extend(spans)
            self._cond.notify_all()

    def _metrics(self, request: ExportMetricsServiceRequest, protocol: Protocol) -> None:
        points = []
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind == "sum":
                        for p in m.sum.data_points:
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            points.append(Point(m.name, m.unit, "sum", m.sum.is_monotonic, _attributes(p.attributes),
                                                value, 0, 0.0, [], [], protocol,
                                                m.sum.aggregation_temporality))  # fmt: skip
                    elif kind == "histogram":
                        for h in m.histogram.data_points:
                            points.append(Point(m.name, m.unit, "histogram", False, _attributes(h.attributes), 0,
                                                h.count, h.sum, list(h.explicit_bounds), list(h.bucket_counts),
                                                protocol, m.histogram.aggregation_temporality))  # fmt: skip
                    elif kind == "gauge":
                        for p in m.gauge.data_points:
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            points.append(Point(m.name, m.unit, "gauge", False, _attributes(p.attributes), value,
                                                0, 0.0, [], [], protocol))  # fmt: skip
        with self._cond:
            self._points.extend(points)
            self._cond.notify_all()

    def _logs_in(self, request: ExportLogsServiceRequest, protocol: Protocol) -> None:
        logs = [
            ReceivedLog(
                _value(r.body), _attributes(r.attributes), r.trace_id.hex(), r.span_id.hex(), r.event_name, protocol
            )
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
        ]
        with self._cond:
            self._logs.extend(logs)
            self._cond.notify_all()

    # -- servers --------------------------------------------------------------------------------------

    def _services(self) -> Iterator[tuple[str, str, type[Message], Message, Callable[[Any, Protocol], None]]]:
        yield "trace", "/v1/traces", ExportTraceServiceRequest, ExportTraceServiceResponse(), self._traces
        yield "metrics", "/v1/metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse(), self._metrics
        yield "logs", "/v1/logs", ExportLogsServiceRequest, ExportLogsServiceResponse(), self._logs_in

    def start(self) -> None:
        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handlers = []
        for signal, _path, request_type, response, handle in self._services():
            service = f"opentelemetry.proto.collector.{signal}.v1.{signal.capitalize()}Service"

            def export(request: Any, context: Any, handle: Any = handle, response: Message = response) -> Message:
                handle(request, "grpc")
                return response

            method = grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=request_type.FromString,
                response_serializer=type(response).SerializeToString,
            )
            handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
        server.add_generic_rpc_handlers(handlers)
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server

        routes = {
            path: (request_type, response, handle) for _s, path, request_type, response, handle in self._services()
        }
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(routes, lambda: self.http_refusal))
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)
        self._http_thread.start()

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OtlpReceiver:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


Route = tuple[type[Message], Message, Callable[[Any, Protocol], None]]


def _http_handler(routes: dict[str, Route], refusal: Callable[[], int | None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            route = routes.get(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            refused = refusal()
            if refused is not None:
                self.send_response(refused)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if route is None or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404 if route is None else 415)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            request_type, response, handle = route
            handle(request_type.FromString(body), "http/protobuf")
            payload = response.SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test output is the gateway's

    return Handler
