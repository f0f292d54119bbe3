"""A limit whose store fails and that fails open: every handshake admitted, each named and counted, few log lines.

During a Redis outage under load a fail-open limit used to write a WARNING per handshake (a flood
as large as the traffic) and no metric said how many went unchecked.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.errors import HandshakeDenied
from asgi_ws_gateway.policies.limits import StoreFailed
from asgi_ws_gateway.standalone import not_found
from asgi_ws_gateway.state.base import StoreUnavailable
from asgi_ws_gateway.telemetry import names as n
from support.clients import connect
from support.redis import RedisServer, unique_prefix
from support.servers import UvicornServer
from support.upstream import UpstreamServer

LIMITS = {
    "rate-limit-by-key": {"key": "{client.ip}", "limit": 1000, "window": 60},
    "quota-by-key": {"key": "{client.ip}", "limit": 1000},
    "limit-concurrency": {"key": "{client.ip}", "max": 1000},
}


def _unchecked_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    data = reader.get_metrics_data()
    assert data is not None
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == n.POLICY_UNCHECKED.name for p in m.data.data_points]  # fmt: skip
    assert all(isinstance(p, NumberDataPoint) and p.attributes is not None for p in points)
    return {(str(p.attributes[n.API]), str(p.attributes[n.POLICY])): int(p.value) for p in points}  # type: ignore[index, union-attr]


@pytest.mark.parametrize("policy", LIMITS)
async def test_a_store_outage_admits_names_and_counts_each_handshake_in_one_log_line(
    policy: str,
    upstream: UpstreamServer,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    reader: tuple[MeterProvider, InMemoryMetricReader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    with RedisServer() as redis:
        store = {"type": "redis", "url": redis.url, "prefix": unique_prefix(), "timeout": 0.5}
        settings: dict[str, Any] = {**LIMITS[policy], "on_store_error": "open"}
        api = {"name": "limited", "path": "/ws/limited", "upstreams": [upstream.url("/echo")],
               "policies": [{policy: settings}]}  # fmt: skip
        gateway = WebSocketGateway(
            not_found, config={"apis": [api], "store": store}, tracer_provider=spans[0], meter_provider=reader[0]
        )
        with UvicornServer(gateway) as server:
            redis.stop()
            for _ in range(25):
                async with await connect(server.url("/ws/limited")) as ws:
                    await ws.send("through")
                    assert await ws.recv() == "through"
    handshakes = [s for s in spans[1].get_finished_spans() if s.kind.name == "SERVER"]
    assert len(handshakes) == 25
    assert all(s.attributes is not None and s.attributes[n.UNCHECKED_POLICIES] == (policy,) for s in handshakes)
    assert _unchecked_counts(reader[1]) == {("limited", policy): 25}
    lines = [r.getMessage() for r in caplog.records if "unchecked (fail-open)" in r.getMessage()]
    assert lines == [f"API limited: {policy} admitted a handshake unchecked (fail-open): Redis failed: ConnectionError"]


def test_fail_open_logs_the_first_at_once_then_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    failed = StoreFailed("rate-limit-by-key", "open", clock=lambda: now[0])
    outage = StoreUnavailable("Redis failed: TimeoutError")
    for step in range(30):  # 3 s apart: lines at 0, 12 (4 more since), 24 (4 more)
        now[0] = 100.0 + 3 * step
        failed("chat", outage)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "API chat: rate-limit-by-key admitted a handshake unchecked (fail-open): Redis failed: TimeoutError",
        *["API chat: rate-limit-by-key admitted 4 handshakes unchecked (fail-open) since its last such line: "
          "Redis failed: TimeoutError"] * 7,
    ]  # fmt: skip
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_fail_closed_refuses_with_503_and_retry_after() -> None:
    with pytest.raises(HandshakeDenied) as info:
        StoreFailed("quota-by-key", "closed")("chat", StoreUnavailable("Redis failed: ConnectionError"))
    assert (info.value.status, info.value.reason) == (503, "store_unavailable")
    assert (b"retry-after", b"1") in info.value.headers
