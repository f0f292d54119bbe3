"""The traced connection the in-process telemetry benches drive (``telemetry_handshake_cpu.py`` in CPU time,
``telemetry_connection_instructions.py`` in instructions): the gateway's own ``HandshakeTrace`` and
``ConnectionTrace`` through handshake → one upstream attempt → accept → close, a task each, as uvicorn
runs each connection; no sockets, no relay."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter

    from asgi_ws_gateway.config.gateway import GatewayConfig
    from asgi_ws_gateway.telemetry import Telemetry

SCOPE: dict[str, Any] = {
    "type": "websocket", "path": "/ws/echo", "query_string": b"", "scheme": "ws", "subprotocols": [],
    "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000),
    "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"python/websockets"), (b"sec-websocket-version", b"13"),
                (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
                (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")],
}  # fmt: skip
"""The client's handshake, as uvicorn's scope holds it."""

CONFIG: dict[str, Any] = {"apis": [{"name": "echo", "path": "/ws/echo", "upstreams": ["ws://127.0.0.1:9/echo"]}]}
"""The API the connections go to (its upstream is never contacted)."""


def discarding_metric_exporter() -> MetricExporter:
    """A metric exporter that exports nothing (for the gateway's own meter provider: ``providers._metric_exporter``)."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

    class Discard(MetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    return Discard()


async def run_connections(telemetry: Telemetry, config: GatewayConfig, count: int, *, messages: bool = False) -> None:
    """``count`` traced connections to ``config``'s first API, one after another; ``messages``: each relays one
    64 B message each way (counted as the relay counts them)."""
    from asgi_ws_gateway.relay.stats import RelayStats
    from asgi_ws_gateway.telemetry import TracedConnector
    from asgi_ws_gateway.upstream.base import UpstreamConnection, UpstreamRequest
    from asgi_ws_gateway.upstream.request import build_request

    class Upstream:
        async def connect(self, request: UpstreamRequest) -> UpstreamConnection:
            return object()  # type: ignore[return-value]  # never used: no relay runs

    api, backend = config.apis[0], config.apis[0].upstreams[0]
    connector = TracedConnector(Upstream(), api.name, backend)

    async def connection() -> None:
        handshake = telemetry.handshake(api, SCOPE)
        await connector.connect(build_request(api, backend, SCOPE, {}))
        stats = RelayStats(sizes_in=[0] * 21, sizes_out=[0] * 21)
        trace = handshake.accepted(backend.label, None, stats)
        if messages:
            stats.count_in(64, False)
            stats.count_out(64, False)
        stats.closed_by, stats.close_code = "client", 1000
        trace.closed(stats)

    for _ in range(count):
        await asyncio.create_task(connection())
