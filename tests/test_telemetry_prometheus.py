"""The metric names a Prometheus user queries, pinned: OTLP as the gateway exports it, then the
Collector's OTLP → Prometheus translation (OpenTelemetry's Prometheus compatibility specification).

The translation, as the Collector's ``prometheus`` exporter applies it with its defaults
(docs/telemetry.md, "An OpenTelemetry Collector"): characters outside ``[a-zA-Z0-9_:]`` become
``_``; the unit, if it is a UCUM unit and not a ``{annotation}``, is spelled out (``s`` → ``seconds``,
``By`` → ``bytes``) and appended unless the name ends with it; a monotonic cumulative sum is a
Prometheus counter and gets ``_total``; a non-monotonic sum is a gauge (no ``_total``); a histogram
is ``<name>_bucket``/``_sum``/``_count``. Delta temporality would be dropped by that exporter, so
every point must be cumulative.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_ws_gateway.telemetry import names as n
from support.clients import connect, expect_status
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, Point, Protocol
from support.servers import UvicornServer
from support.telemetry import a_server_refusal, export_to, telemetry_config, with_narrowed_cookie, with_unchecked
from support.upstream import UpstreamServer

DOCS = Path(__file__).parent.parent / "docs" / "telemetry.md"
CUMULATIVE = 2
UCUM_UNITS = {"s": "seconds", "By": "bytes"}
"""The UCUM units the gateway uses, with the Prometheus unit word the translation appends."""

PROMETHEUS = {
    "ws_gateway.active_connections": ("gauge", "ws_gateway_active_connections"),
    "ws_gateway.upstream.connections": ("gauge", "ws_gateway_upstream_connections"),
    "ws_gateway.handshakes": ("counter", "ws_gateway_handshakes_total"),
    "ws_gateway.handshake.duration": ("histogram", "ws_gateway_handshake_duration_seconds"),
    "ws_gateway.upstream.connect.duration": ("histogram", "ws_gateway_upstream_connect_duration_seconds"),
    "ws_gateway.upstream.connect.failures": ("counter", "ws_gateway_upstream_connect_failures_total"),
    "ws_gateway.upstream.address.failures": ("counter", "ws_gateway_upstream_address_failures_total"),
    "ws_gateway.connection.duration": ("histogram", "ws_gateway_connection_duration_seconds"),
    "ws_gateway.connection.closes": ("counter", "ws_gateway_connection_closes_total"),
    "ws_gateway.messages": ("counter", "ws_gateway_messages_total"),
    "ws_gateway.io": ("counter", "ws_gateway_io_bytes_total"),
    "ws_gateway.message.size_distribution": ("counter", "ws_gateway_message_size_distribution_total"),
    "ws_gateway.policy.denials": ("counter", "ws_gateway_policy_denials_total"),
    "ws_gateway.policy.actions": ("counter", "ws_gateway_policy_actions_total"),
    "ws_gateway.policy.unchecked": ("counter", "ws_gateway_policy_unchecked_total"),
    "ws_gateway.cookies.changed": ("counter", "ws_gateway_cookies_changed_total"),
    "ws_gateway.connections.shed": ("counter", "ws_gateway_connections_shed_total"),
    "ws_gateway.store.failures": ("counter", "ws_gateway_store_failures_total"),
    "ws_gateway.server.refusals": ("counter", "ws_gateway_server_refusals_total"),
    "ws_gateway.jwks.failures": ("counter", "ws_gateway_jwks_failures_total"),
    "ws_gateway.log.dropped": ("counter", "ws_gateway_log_dropped_total"),
    "ws_gateway.telemetry.dropped": ("counter", "ws_gateway_telemetry_dropped_total"),
    "ws_gateway.config.file_changed": ("gauge", "ws_gateway_config_file_changed"),
}
"""What users write in PromQL (and docs/telemetry.md lists): the translation's result, written out."""


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def prometheus_type(point: Point) -> str:
    if point.kind == "histogram":
        return "histogram"
    return "counter" if point.kind == "sum" and point.monotonic else "gauge"


def prometheus_name(point: Point) -> str:
    """The Collector's translation of one OTLP metric into a Prometheus metric name."""
    name = re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9_:]", "_", point.metric))
    unit = re.sub(r"\{[^}]*\}", "", point.unit)  # annotations carry no unit
    word = UCUM_UNITS.get(unit, unit)
    if word and not name.endswith(f"_{word}"):
        name = f"{name}_{word}"
    if prometheus_type(point) == "counter":
        name += "_total"
    return name


def prometheus_label(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_metric_names_units_and_kinds_as_prometheus_gets_them(
    otlp: OtlpReceiver, protocol: Protocol, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every instrument: UCUM unit, cumulative, the Prometheus type and name; ``_total`` only on counters."""
    export_to(monkeypatch, otlp, protocol)
    gateway = ProbedGateway(with_narrowed_cookie(with_unchecked(telemetry_config(upstream)), upstream))
    with UvicornServer(gateway) as server:
        async with await connect(server.url("/ws/echo")) as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
        async with await connect(server.url("/ws/filtered")) as filtered:  # a message policy drops it
            await filtered.send("more than ten bytes")
            await filtered.recv()
        assert (await expect_status(server.url("/ws/guarded")))[0] == 403
        assert (await expect_status(server.url("/ws/down")))[0] == 502
        async with await connect(server.url("/ws/unchecked")):  # admitted: its limit's store is down
            pass
        async with await connect(server.url("/ws/cookies")):  # its upstream's cookie held to the API's path
            pass
        await a_server_refusal()
        await gateway.settle()
        await asyncio.to_thread(gateway.gateway.telemetry.force_flush)
    points = otlp.points()
    assert {p.metric for p in points} == set(PROMETHEUS) == {spec.name for spec in n.INSTRUMENTS}
    for point in points:
        kind, name = PROMETHEUS[point.metric]
        assert point.unit in UCUM_UNITS or re.fullmatch(r"\{[a-z_]+\}", point.unit), (point.metric, point.unit)
        assert point.temporality == CUMULATIVE, point.metric
        assert (prometheus_type(point), prometheus_name(point)) == (kind, name), point.metric
        assert name.endswith("_total") == (kind == "counter"), name
        assert not re.search(r"_total_|(seconds|bytes)_(seconds|bytes)", name), name
        for key in point.attributes:
            assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", prometheus_label(key)) and not key.startswith("__")
    labels = {prometheus_label(key) for p in points for key in p.attributes}
    assert {"ws_gateway_api_name", "http_route", "http_response_status_code", "error_type"} <= labels


def test_translation_rules_on_made_up_metrics() -> None:
    """The rules themselves: unit words appended once, annotations dropped, ``_total`` on counters only."""

    def point(metric: str, unit: str, kind: str, monotonic: bool) -> Point:
        return Point(metric, unit, kind, monotonic, {}, 0, 0, 0.0, [], [], "grpc", CUMULATIVE)

    assert prometheus_name(point("a.b", "s", "sum", True)) == "a_b_seconds_total"
    assert prometheus_name(point("a.b_seconds", "s", "histogram", False)) == "a_b_seconds"
    assert prometheus_name(point("a.b", "{thing}", "sum", False)) == "a_b"
    assert prometheus_name(point("a-b..c", "By", "sum", True)) == "a_b_c_bytes_total"
    assert prometheus_type(point("a", "1", "sum", False)) == "gauge"


def test_docs_list_the_prometheus_names() -> None:
    docs = DOCS.read_text()
    assert not [name for _kind, name in PROMETHEUS.values() if f"`{name}" not in docs]
