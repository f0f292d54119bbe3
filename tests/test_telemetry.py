"""Telemetry logic without sockets: provider resolution, the hooks policies use, the off switch, counters."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import metrics, trace
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import ConfigError, GatewayConfig, TelemetryConfig, load_config
from asgi_ws_gateway.relay.pumps import Relay
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import Telemetry, TracedConnector, current_connection, current_handshake
from asgi_ws_gateway.telemetry import metrics as metrics_module
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.counted_exporters import CountedSpanExporter
from asgi_ws_gateway.telemetry.lean_provider import LeanTracerProvider
from asgi_ws_gateway.telemetry.lean_spans import LeanSpan
from asgi_ws_gateway.telemetry.metrics import Metrics
from asgi_ws_gateway.telemetry.otlp_export import GrpcSpanExporter, HttpSpanExporter
from asgi_ws_gateway.telemetry.providers import ENCODER_VARIABLE, resolve_providers
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.inprocess import InProcessConnector
from asgi_ws_gateway.upstream.request import build_request
from support.apps import echo_app
from support.configs import build_config

DOCS = Path(__file__).parent.parent / "docs" / "telemetry.md"
SCOPE: dict[str, Any] = {
    "type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
    "client": ("10.1.2.3", 4567), "server": ("127.0.0.1", 8000),
    "headers": [(b"host", b"gw.example:8000"), (b"user-agent", b"probe/1")],
}  # fmt: skip


def _config(**telemetry: Any) -> GatewayConfig:
    return load_config(build_config("ws://127.0.0.1:9/echo", telemetry=telemetry))


# -- providers -------------------------------------------------------------------------------------


def test_nothing_is_exported_unless_asked() -> None:
    providers = resolve_providers(TelemetryConfig(), environ={})
    assert (providers.tracer, providers.meter, providers.logger, providers.owned) == (None, None, None, [])
    assert not Telemetry(_config()).enabled


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_endpoint_in_the_environment_starts_own_exporters(protocol: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               "OTEL_METRICS_EXPORTER": "none"}  # fmt: skip
    providers = resolve_providers(TelemetryConfig(export_logs=True), environ=environ)
    try:
        assert isinstance(providers.tracer, TracerProvider) and providers.meter is None
        assert providers.logger is not None and len(providers.owned) == 2
        assert providers.tracer.resource.attributes["service.name"] == "asgi-ws-gateway"
        exporter = _span_exporter(providers.tracer)
        assert isinstance(exporter, GrpcSpanExporter if protocol == "grpc" else HttpSpanExporter)
        assert exporter._encoder is not None  # this SDK's exporter is one the gateway's encoder fits
    finally:
        providers.shutdown(timeout=5.0)


def _span_exporter(provider: TracerProvider) -> object:
    processor = provider._active_span_processor._span_processors[0]
    counted = processor._batch_processor._exporter  # type: ignore[attr-defined]
    assert isinstance(counted, CountedSpanExporter)  # what it loses counted in ws_gateway.telemetry.dropped
    return counted.exporter


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_sdk_encoder_can_be_chosen_instead(protocol: str) -> None:
    """ASGI_WS_GATEWAY_OTLP_ENCODER=sdk: the SDK's own exporter, unchanged (the escape hatch)."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               "OTEL_METRICS_EXPORTER": "none", ENCODER_VARIABLE: "sdk"}  # fmt: skip
    providers = resolve_providers(TelemetryConfig(), environ=environ)
    try:
        assert isinstance(providers.tracer, TracerProvider)
        exporter = _span_exporter(providers.tracer)
        assert type(exporter).__name__ == "OTLPSpanExporter"
        assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.")
    finally:
        providers.shutdown(timeout=5.0)


def test_an_unknown_encoder_is_a_config_error() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", ENCODER_VARIABLE: "fast"}
    with pytest.raises(ConfigError, match=ENCODER_VARIABLE):
        resolve_providers(TelemetryConfig(), environ=environ)


def test_service_name_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-gateway")
    providers = resolve_providers(TelemetryConfig(exporter="otlp", export_logs=False), environ={})
    try:
        assert isinstance(providers.tracer, TracerProvider)
        assert providers.tracer.resource.attributes["service.name"] == "edge-gateway"
    finally:
        providers.shutdown(timeout=5.0)


@pytest.mark.parametrize(
    ("config", "environ"),
    [
        (TelemetryConfig(exporter="none"), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}),
        (TelemetryConfig(enabled=False), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}),
        (TelemetryConfig(exporter="otlp"), {"OTEL_SDK_DISABLED": "true"}),
        # (OTEL_METRICS_EXPORTER=console refused it too, silently: a ConfigError now, test_telemetry_environment)
        (TelemetryConfig(), {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}),
    ],
)
def test_exporting_can_be_refused(config: TelemetryConfig, environ: dict[str, str]) -> None:
    providers = resolve_providers(config, environ=environ)
    assert (providers.tracer, providers.meter, providers.owned) == (None, None, [])


def test_an_unsupported_protocol_is_a_config_error() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' is not supported"):
        resolve_providers(TelemetryConfig(), environ=environ)


def test_global_providers_are_used_when_the_application_set_them(
    monkeypatch: pytest.MonkeyPatch,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", spans[0])
    monkeypatch.setattr(metrics._internal, "_METER_PROVIDER", reader[0])
    assert not isinstance(metrics.get_meter_provider(), _ProxyMeterProvider)
    providers = resolve_providers(TelemetryConfig(), environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert (providers.tracer, providers.meter, providers.owned) == (spans[0], reader[0], [])


def test_explicit_providers_win_and_are_not_shut_down_by_the_gateway(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    telemetry = Telemetry(_config(), tracer_provider=spans[0])
    assert telemetry.tracer is not None and telemetry.metrics is None
    telemetry.shutdown()
    with spans[0].get_tracer("still-open").start_as_current_span("after"):
        pass
    assert [s.name for s in spans[1].get_finished_spans()] == ["after"]


# -- the hooks policies use ------------------------------------------------------------------------


def test_policies_identify_the_caller_and_trace_their_io(
    spans: tuple[TracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """``identify`` names subject and subscription on the spans and the access log; ``io_span`` nests."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    config = _config(access_log="json")
    telemetry = Telemetry(config, tracer_provider=spans[0])
    handshake = telemetry.handshake(config.apis[0], SCOPE)
    assert current_handshake() is handshake
    with handshake.io_span("jwks fetch", attributes={"server.address": "idp.example"}):
        handshake.identify(subject="user-42", subscription="gold")
    stats = Relay(_never, _never, None, max_message_size=1).stats  # type: ignore[arg-type]
    connection = handshake.accepted("ws://127.0.0.1:9/echo", "chat.v2", stats)
    assert current_handshake() is None and current_connection() is connection
    connection.closed(stats)
    finished = {s.name: s for s in spans[1].get_finished_spans()}
    io, hs, conn = finished["jwks fetch"], finished["GET /ws/echo"], finished["connection echo"]
    assert io.parent is not None and io.parent.span_id == hs.context.span_id
    assert io.kind == trace.SpanKind.CLIENT
    assert hs.attributes is not None and conn.attributes is not None
    assert (hs.attributes[n.ENDUSER_ID], hs.attributes[n.SUBSCRIPTION]) == ("user-42", "gold")
    assert (conn.attributes[n.ENDUSER_ID], conn.attributes[n.SUBSCRIPTION]) == ("user-42", "gold")
    assert hs.attributes[n.SUBPROTOCOL] == "chat.v2" and hs.attributes[n.CLIENT_ADDRESS] == "10.1.2.3"
    assert hs.attributes[n.USER_AGENT] == "probe/1" and conn.attributes[n.SUBPROTOCOL] == "chat.v2"
    (line,) = [r.getMessage() for r in caplog.records]
    assert '"subject":"user-42","subscription":"gold"' in line and '"close_code":1006' in line


@pytest.mark.parametrize("error", [None, ValueError("store down"), asyncio.CancelledError()],
                         ids=["ok", "error", "cancelled"])  # fmt: skip
def test_io_span_is_current_records_and_ends_as_start_as_current_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], error: BaseException | None
) -> None:
    """Inside ``io_span`` its span is current; an exception (not a cancellation) is recorded with an error
    status; the span ends and the handshake's is current again: what ``start_as_current_span`` does."""
    config = _config()
    handshake = Telemetry(config, tracer_provider=spans[0]).handshake(config.apis[0], SCOPE)
    assert handshake.span is not None
    reference = spans[0].get_tracer("reference")

    def run(manager: Any) -> None:
        try:
            with manager as span:
                assert trace.get_current_span() is span
                if error is not None:
                    raise error
        except BaseException as exc:
            assert exc is error
        assert trace.get_current_span() is handshake.span

    try:
        run(handshake.io_span("redis get", attributes={"db.system": "redis"}))
        run(reference.start_as_current_span("redis get", trace.set_span_in_context(handshake.span),
                                            trace.SpanKind.CLIENT, {"db.system": "redis"}))  # fmt: skip
    finally:
        handshake.abandoned("test over")  # its context no longer current (later tests would see its span)

    def fields(span: Any) -> tuple[Any, ...]:
        events = [(e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
                  for e in span.events]  # fmt: skip
        return (span.kind, span.parent.span_id, dict(span.attributes), span.status.status_code,
                span.status.description, events, span.end_time is not None)  # fmt: skip

    ours, expected = (s for s in spans[1].get_finished_spans() if s.name == "redis get")
    assert fields(ours) == fields(expected)
    assert ours.parent is not None and handshake.span is not None
    assert ours.parent.span_id == handshake.span.get_span_context().span_id
    assert (ours.status.status_code == trace.StatusCode.ERROR) is isinstance(error, ValueError)


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "sdk"])
@pytest.mark.parametrize("error", [None, ValueError("store down"), asyncio.CancelledError()],
                         ids=["ok", "error", "cancelled"])  # fmt: skip
async def test_store_call_is_traced_as_io_span_traces_it_with_the_gateways_own_span(
    error: BaseException | None, lean: bool
) -> None:
    """A store's call (``store_call``) gets the span ``start_as_current_span`` makes around it (current while it
    runs, an exception but a cancellation recorded, ended), from the gateway's provider or an application's; on
    the gateway's, started as one of its own: its attributes plain (the encoder reads them unchecked), not through
    the SDK's checks a policy's ``io_span`` takes."""
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(resource=Resource({})) if lean else TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = _config()
    handshake = Telemetry(config, tracer_provider=provider).handshake(config.apis[0], SCOPE)
    assert handshake.span is not None
    parent = trace.set_span_in_context(handshake.span)
    reference = provider.get_tracer("reference")
    inside: list[trace.Span] = []

    async def call() -> str:
        inside.append(trace.get_current_span())
        if error is not None:
            raise error
        return "answer"

    async def run(awaitable: Any) -> None:
        try:
            assert await awaitable == "answer"
        except BaseException as exc:
            assert exc is error
        assert trace.get_current_span() is handshake.span

    async def as_current() -> str:
        attributes = {"db.system": "redis", "db.operation": "hit"}
        with reference.start_as_current_span("redis hit", parent, trace.SpanKind.CLIENT, attributes):
            return await call()

    try:
        await run(handshake.store_call("redis", "hit", call))
        await run(as_current())
    finally:
        handshake.abandoned("test over")
        provider.shutdown()
    ours, expected = (s for s in exporter.get_finished_spans() if s.name == "redis hit")
    assert [span.get_span_context().span_id for span in inside] == [ours.context.span_id, expected.context.span_id]
    assert _span_fields(ours) == _span_fields(expected)
    assert ours.parent is not None and ours.parent.span_id == handshake.span.get_span_context().span_id
    assert (ours.status.status_code == trace.StatusCode.ERROR) is isinstance(error, ValueError)
    if lean:
        assert isinstance(ours, LeanSpan) and ours._plain and not expected._plain  # type: ignore[attr-defined]


def test_store_call_with_tracing_off_is_the_call_itself() -> None:
    """Not traced, a store's call is awaited as it is: no coroutine of telemetry's around it."""
    config = _config()
    handshake = Telemetry(config).handshake(config.apis[0], SCOPE)
    answer: Any = object()
    try:
        assert handshake.store_call("redis", "hit", lambda: answer) is answer
    finally:
        handshake.abandoned("test over")


def _span_fields(span: Any) -> tuple[Any, ...]:
    """What a finished span records, but its ids, times and the exception's stack trace."""
    events = [(e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
              for e in span.events]  # fmt: skip
    return (span.name, span.kind, span.parent.span_id, dict(span.attributes), span.status.status_code,
            span.status.description, events, span.end_time is not None)  # fmt: skip


async def _never() -> Any:  # pragma: no cover - the relay is never run in these tests
    raise AssertionError


def test_message_policy_actions_are_counted_without_a_metric_call(
    reader: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    config = _config()
    telemetry = Telemetry(config, meter_provider=reader[0])
    stats = Relay(_never, _never, None, max_message_size=1).stats  # type: ignore[arg-type]
    connection = telemetry.handshake(config.apis[0], SCOPE).accepted("b", None, stats)
    for _ in range(3):
        connection.policy_action("rate", "drop", "outbound", "too_fast")
    data = reader[1].get_metrics_data()
    assert data is not None
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                 if m.name == n.POLICY_ACTIONS.name]  # fmt: skip
    (point,) = metric.data.data_points
    assert isinstance(point, NumberDataPoint) and point.value == 3
    assert point.attributes is not None and point.attributes[n.POLICY] == "rate"
    assert (point.attributes[n.DIRECTION], point.attributes[n.POLICY_REASON]) == (n.TO_CLIENT, "too_fast")
    connection.closed(stats)


async def test_with_telemetry_off_the_connector_is_a_pass_through() -> None:
    """No span, no metric, no header written: the upstream request is the one built."""
    seen: list[UpstreamRequest] = []
    sentinel: Any = object()

    class Recording:
        async def connect(self, request: UpstreamRequest) -> Any:
            seen.append(request)
            return sentinel

    config = _config()
    telemetry = Telemetry(config)
    handshake = telemetry.handshake(config.apis[0], SCOPE)
    assert not handshake.instrumented and handshake.span is None
    request = build_request(config.apis[0], config.apis[0].upstreams[0], SCOPE, {})
    headers = list(request.headers)
    connector = TracedConnector(Recording(), "echo", config.apis[0].upstreams[0])
    assert await connector.connect(request) is sentinel
    assert seen == [request] and request.headers == headers and handshake.attempts == 0
    handshake.abandoned("test over")


# -- relay counters and configuration --------------------------------------------------------------


async def test_relay_counts_types_and_size_slots() -> None:
    """Per-type counts and bit-length size slots, both ways, through an in-process echo upstream."""
    api = load_config({"apis": [{"name": "a", "path": "/a", "upstreams": [{"app": echo_app}]}]}).apis[0]
    upstream = await InProcessConnector(api, api.upstreams[0]).connect(build_request(api, api.upstreams[0], SCOPE, {}))
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"text": "abc"}, {"bytes": b"\x00" * 100}, {"text": "é" * 40}):
        inbox.put_nowait({"type": "websocket.receive", **message})
    echoed: list[Any] = []

    async def send(message: Any) -> None:
        echoed.append(message)
        if len(echoed) == 3:
            inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    stats = await Relay(inbox.get, send, upstream, max_message_size=1024).run()
    for counts in ((stats.messages_in, stats.bytes_in, stats.binary_in, stats.binary_bytes_in),
                   (stats.messages_out, stats.bytes_out, stats.binary_out, stats.binary_bytes_out)):  # fmt: skip
        assert counts == (3, 3 + 100 + 80, 1, 100)
    for sizes in (stats.sizes_in, stats.sizes_out):
        assert len(sizes) == 12 and sizes[2] == 1 and sizes[7] == 2 and sum(sizes) == 3


@pytest.mark.parametrize(("slot", "label"), [(0, "0-63"), (6, "0-63"), (7, "64-255"), (9, "256-1023"),
                                             (20, "262144-1048575"), (21, "1048576+"), (40, "1048576+")])  # fmt: skip
def test_size_slots_map_to_power_of_four_classes(slot: int, label: str) -> None:
    assert n.SIZE_CLASSES[n.size_class_index(slot)] == label


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 10**6), max_size=65), st.booleans()), max_size=6))
def test_message_size_counts_of_connections_with_any_slot_count(connections: list[tuple[list[int], bool]]) -> None:
    """What ``ws_gateway.message.sizes`` reports: each size slot in its class, whatever the slot lists'
    lengths (one per API's size limit, none for a connection that counted nothing), open or closed."""
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    metrics_ = Metrics(meter, [("a", "/a")])
    expected = {direction: [0] * len(n.SIZE_CLASSES) for direction in (n.TO_UPSTREAM, n.TO_CLIENT)}
    for slots, still_open in connections:
        live = metrics_.opened("a", RelayStats(sizes_in=list(slots), sizes_out=list(reversed(slots))))
        if not still_open:
            metrics_.closed(live, "client", 1000, 0.1)
        for direction, counted in ((n.TO_UPSTREAM, slots), (n.TO_CLIENT, slots[::-1])):
            for slot, count in enumerate(counted):
                expected[direction][n.size_class_index(slot)] += count
    points: dict[tuple[str, str], int] = {}
    for metric in _metrics(reader):
        if metric.name == n.MESSAGE_SIZES.name:
            for point in metric.data.data_points:
                points[str(point.attributes[n.DIRECTION]), str(point.attributes[n.SIZE_CLASS])] = int(point.value)
    for direction in (n.TO_UPSTREAM, n.TO_CLIENT):
        reported = [points.get((direction, size_class), 0) for size_class in n.SIZE_CLASSES]
        assert reported == expected[direction]


def test_metric_series_follow_a_changed_route_and_stay_counted_past_the_series_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Metrics`` makes each series' attributes once: a changed route makes them again, and more
    distinct series than it keeps made are all counted, each once per record."""
    reader = InMemoryMetricReader()
    metrics_ = Metrics(MeterProvider(metric_readers=[reader]).get_meter("test"), [("a", "/a")])
    metrics_.handshake("a", "accepted", 101, None, None, 0.01)
    metrics_.add_api("a", "/b")
    metrics_.handshake("a", "accepted", 101, None, None, 0.01)
    monkeypatch.setattr(metrics_module, "_SERIES_LIMIT", 50)
    reasons = 120  # past the series made and kept: the cache starts again, twice
    for i in range(reasons + 50):  # two policies: each keeps 64 reasons as metric values (action_keys)
        metrics_.handshake("a", "denied", 403, f"reason_{i % reasons}", f"series-{i % reasons % 2}", 0.01)
    backends: list[dict[str, str | int]] = [{n.API: "a", n.BACKEND: f"ws://b{i}/"} for i in range(3)]
    for i in range(30):
        metrics_.upstream_attempt(backends[i % 3], 0.01, None, 101)
    counted: dict[tuple[Any, ...], int] = {}
    recorded: dict[tuple[Any, ...], int] = {}
    for metric in _metrics(reader):
        for point in metric.data.data_points:
            attrs = point.attributes
            key = (attrs.get(n.HTTP_ROUTE), attrs.get(n.OUTCOME), attrs.get(n.ERROR_TYPE), attrs.get(n.BACKEND))
            if metric.name == n.HANDSHAKES.name:
                counted[key] = int(point.value)
            elif metric.name in (n.HANDSHAKE_DURATION.name, n.UPSTREAM_CONNECT_DURATION.name):
                recorded[key] = point.count
    assert counted[("/a", "accepted", None, None)] == counted[("/b", "accepted", None, None)] == 1
    assert recorded[("/a", "accepted", None, None)] == recorded[("/b", "accepted", None, None)] == 1
    denied = {key: value for key, value in counted.items() if key[1] == "denied"}
    assert len(denied) == reasons and sum(denied.values()) == reasons + 50
    assert (
        denied[("/b", "denied", "reason_0", None)] == 2 and denied[("/b", "denied", f"reason_{reasons - 1}", None)] == 1
    )
    assert sum(value for key, value in recorded.items() if key[1] == "denied") == reasons + 50
    assert [recorded[(None, None, None, f"ws://b{i}/")] for i in range(3)] == [10, 10, 10]


def _metrics(reader: InMemoryMetricReader) -> list[Any]:
    data = reader.get_metrics_data()  # None: nothing was recorded or observed
    if data is None:
        return []
    return [metric for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics]


def test_telemetry_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"telemetry": {"message_events": 2, "access_log": "xml", "connection_parent": "child"}})
    assert sorted(p.split(":")[0] for p in info.value.problems) == [
        "telemetry.access_log", "telemetry.connection_parent", "telemetry.message_events"
    ]  # fmt: skip


def test_docs_list_every_span_attribute_and_instrument() -> None:
    """docs/telemetry.md documents every name ``names.py`` defines, and each instrument's unit."""
    docs = DOCS.read_text()
    values = [v for k, v in vars(n).items() if k.isupper() and isinstance(v, str) and k not in {"DEFAULT_PROTOCOL"}]
    missing = [v for v in values if f"`{v}" not in docs]
    assert not missing
    for spec in n.INSTRUMENTS:
        row = re.search(rf"^\| `{re.escape(spec.name)}` \|.*$", docs, re.MULTILINE)
        assert row is not None and f"`{spec.unit}`" in row.group(0), spec.name
        assert all(
            f"`{key}`" in row.group(0) for key in spec.attributes if key not in (n.API, n.HTTP_ROUTE, n.PROTOCOL_NAME)
        ), spec.name


def test_a_client_behind_a_trusted_proxy_is_named_on_spans_and_the_access_log(
    spans: tuple[TracerProvider, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    """``client``: the reported address is ``client.address``; the proxy is ``network.peer.address`` and ``peer``."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    config = _config(access_log="json")
    telemetry = Telemetry(config, tracer_provider=spans[0])
    peer = "{}:{}".format(*SCOPE["client"])
    handshake = telemetry.handshake(config.apis[0], SCOPE, client="198.51.100.7")
    stats = Relay(_never, _never, None, max_message_size=1).stats  # type: ignore[arg-type]
    handshake.accepted("ws://127.0.0.1:9/echo", None, stats).closed(stats)
    finished = {s.name: s for s in spans[1].get_finished_spans()}
    hs, conn = finished[f"GET {config.apis[0].path}"], finished["connection echo"]
    assert hs.attributes is not None and conn.attributes is not None
    assert (hs.attributes[n.CLIENT_ADDRESS], hs.attributes[n.NETWORK_PEER_ADDRESS]) == (
        "198.51.100.7",
        SCOPE["client"][0],
    )
    assert conn.attributes[n.CLIENT_ADDRESS] == "198.51.100.7"
    (line,) = [r.getMessage() for r in caplog.records]
    assert '"client":"198.51.100.7"' in line and f'"peer":"{peer}"' in line


def test_the_upstream_gets_one_traceparent_whatever_case_the_request_headers_use() -> None:
    """The upstream request's own trace headers (from the client, or a set-header policy, in any case)
    are replaced by the gateway's; other headers stay, the same tuples in the same order."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from asgi_ws_gateway.telemetry import propagation

    context = trace.set_span_in_context(NonRecordingSpan(SpanContext(0xAB, 0xCD, False, TraceFlags(1))))
    host, agent = ("host", "example"), ("User-Agent", "test")
    headers = [host, ("TraceParent", "00-forged-01"), agent, ("TRACESTATE", "client=1")]
    propagation.inject(headers, context)
    assert headers[:2] == [host, agent] and headers[0] is host and headers[1] is agent
    assert headers[2:] == [("traceparent", f"00-{0xAB:032x}-{0xCD:016x}-01")]
    plain = [host, agent]
    propagation.inject(plain, context)
    assert plain[:2] == [host, agent] and [name for name, _ in plain] == ["host", "User-Agent", "traceparent"]
