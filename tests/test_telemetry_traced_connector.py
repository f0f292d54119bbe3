"""``TracedConnector`` adds no coroutine of its own between the pool and the connector.

Each of ``connect`` and ``open`` was a coroutine awaiting the next: two coroutines made and stepped
through per upstream attempt, telemetry on or off. Now each hands back the coroutine to await: the
connector's own (telemetry off), or the traced attempt's (``HandshakeTrace.connect_upstream``); what is
traced, counted and raised is unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from asgi_ws_gateway import load_config
from asgi_ws_gateway.config.gateway import GatewayConfig
from asgi_ws_gateway.errors import UpstreamUnreachable
from asgi_ws_gateway.telemetry import HandshakeTrace, Telemetry, TracedConnector
from asgi_ws_gateway.upstream.base import UpstreamRequest
from asgi_ws_gateway.upstream.request import build_request
from support.configs import build_config

SCOPE: dict[str, Any] = {
    "type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
    "client": ("10.1.2.3", 4567), "server": ("127.0.0.1", 8000), "headers": [(b"host", b"gw.example:8000")],
}  # fmt: skip
CONNECTED: Any = object()


class Backend:
    """A connector answering ``CONNECTED``, or raising ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.requests: list[UpstreamRequest] = []

    async def connect(self, request: UpstreamRequest) -> Any:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return CONNECTED


def _config() -> GatewayConfig:
    return load_config(build_config("ws://127.0.0.1:9/echo"))


def _telemetry(mode: str, config: GatewayConfig) -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider(resource=Resource({}))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    if mode == "off":
        return Telemetry(config), exporter, reader
    if mode == "metrics":
        return Telemetry(config, meter_provider=meter_provider), exporter, reader
    return Telemetry(config, tracer_provider=tracer_provider, meter_provider=meter_provider), exporter, reader


def _attempts(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    if data is None:
        return 0
    return sum(
        int(getattr(point, "count", 0))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "ws_gateway.upstream.connect.duration"
        for point in metric.data.data_points
    )


@pytest.mark.parametrize("mode", ["off", "metrics", "traces"])
async def test_connect_hands_back_the_coroutine_that_does_the_work(mode: str) -> None:
    config = _config()
    telemetry, exporter, reader = _telemetry(mode, config)
    handshake = telemetry.handshake(config.apis[0], SCOPE)
    backend = Backend()
    connector = TracedConnector(backend, "echo", config.apis[0].upstreams[0])
    request = build_request(config.apis[0], config.apis[0].upstreams[0], SCOPE, {})
    pending = connector.connect(request)
    expected = Backend.connect if mode == "off" else HandshakeTrace.connect_upstream
    assert pending.cr_code is expected.__code__  # type: ignore[attr-defined]
    assert await pending is CONNECTED
    assert backend.requests == [request]
    assert handshake.attempts == (0 if mode == "off" else 1)
    assert _attempts(reader) == (0 if mode == "off" else 1)
    assert [span.name for span in exporter.get_finished_spans()] == (
        ["upstream connect echo"] if mode == "traces" else []
    )
    handshake.abandoned("test over")


async def test_a_failed_attempt_is_traced_and_raised_as_before() -> None:
    config = _config()
    telemetry, exporter, reader = _telemetry("traces", config)
    handshake = telemetry.handshake(config.apis[0], SCOPE)
    connector = TracedConnector(Backend(UpstreamUnreachable("down")), "echo", config.apis[0].upstreams[0])
    with pytest.raises(UpstreamUnreachable):
        await connector.connect(build_request(config.apis[0], config.apis[0].upstreams[0], SCOPE, {}))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "upstream_unreachable"
    assert _attempts(reader) == 1
    handshake.abandoned("test over")


async def test_open_hands_back_the_given_connect_s_coroutine_with_telemetry_off() -> None:
    config = _config()
    telemetry, _, _ = _telemetry("off", config)
    handshake = telemetry.handshake(config.apis[0], SCOPE)
    backend = Backend()
    connector = TracedConnector(Backend(), "echo", config.apis[0].upstreams[0])
    request = build_request(config.apis[0], config.apis[0].upstreams[0], SCOPE, {})
    pending = connector.open(backend.connect, request)
    assert pending.cr_code is Backend.connect.__code__  # type: ignore[attr-defined]
    assert await pending is CONNECTED and backend.requests == [request]
    handshake.abandoned("test over")
