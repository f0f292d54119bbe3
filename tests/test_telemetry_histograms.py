"""The gateway's own duration histograms (``telemetry/histograms.py``) export what the SDK's export.

One script of records (every bucket and its bounds, several attribute sets, the same set in another
key order, with no span, a sampled and an unsampled one) runs through the SDK's histograms on one
meter provider and through the own ones on another, in lockstep under one pinned clock; after each
of several collections the two ``MetricsData`` must encode (the SDK's OTLP metrics encoder) to the
same bytes, for each temporality and exemplar filter. Then: the cardinality limit's overflow set, a
gateway exporting to a real OTLP receiver with either implementation, ``ASGI_WS_GATEWAY_HISTOGRAMS``
and the fallback to the SDK's instruments (exponential histograms).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal import _view_instrument_match, instrument, metric_reader_storage
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

from asgi_ws_gateway.config.settings import TelemetryConfig
from asgi_ws_gateway.errors import ConfigError
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import histograms as own_module
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.histograms import OwnHistogram, OwnHistograms
from asgi_ws_gateway.telemetry.metrics import Attrs, DurationHistogram, Metrics, sdk_histogram
from asgi_ws_gateway.telemetry.providers import resolve_providers
from support.clients import connect, expect_status
from support.exemplars import FILTERS, LEAN_SAMPLED, LEAN_UNSAMPLED, SAMPLED, TEMPORALITIES, UNSAMPLED
from support.gateway import ProbedGateway
from support.otlp import OtlpReceiver, Point
from support.servers import UvicornServer
from support.telemetry import export_to, telemetry_config
from support.upstream import UpstreamServer

SPECS = (n.HANDSHAKE_DURATION, n.UPSTREAM_CONNECT_DURATION, n.CONNECTION_DURATION_METRIC)
ACCEPTED: Attrs = {n.API: "echo", n.HTTP_ROUTE: "/ws/echo", n.PROTOCOL_NAME: "websocket", n.OUTCOME: "accepted",
            n.HTTP_STATUS: 101}  # fmt: skip
ACCEPTED_REORDERED = dict(reversed(ACCEPTED.items()))  # the same set: the SDK's, not the dict's order
DENIED: Attrs = {**ACCEPTED, n.OUTCOME: "denied", n.HTTP_STATUS: 403, n.ERROR_TYPE: "origin_missing"}
OTHER: Attrs = {n.API: "other", n.HTTP_ROUTE: "/ws/other", n.PROTOCOL_NAME: "websocket", n.CLOSE_SIDE: "client"}


def _values(bounds: tuple[float, ...]) -> list[float]:
    """Zero, each bound, a value inside each bucket, and two above the last bound."""
    inside = [(low + high) / 2 for low, high in zip((0.0, *bounds), bounds, strict=False)]
    return [0.0, *bounds, *inside, bounds[-1] * 1.5, bounds[-1] * 3]


class Clock:
    """``time_ns`` for the SDK's metric modules and the own histograms alike: moved by the test only."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        return self.now

    def tick(self, ns: int = 1000) -> None:
        self.now += ns


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    for module in (instrument, _view_instrument_match, metric_reader_storage, own_module):
        monkeypatch.setattr(module, "time_ns", clock)
    return clock


class Pair:
    """Two meter providers, one reader each: histograms the SDK's on one, the gateway's own on the other."""

    def __init__(self, temporality: AggregationTemporality, exemplar_filter: str, limit: int | None = None) -> None:
        self.sides = []
        for own in (False, True):
            reader = InMemoryMetricReader(
                preferred_temporality={Histogram: temporality},
                cardinality_limits={Histogram: limit} if limit else None,
            )
            provider = MeterProvider(
                [reader], Resource({"service.name": "histograms-test"}), FILTERS[exemplar_filter](), False
            )
            factory: Callable[..., DurationHistogram] = OwnHistograms(provider, reader) if own else sdk_histogram
            self.sides.append((provider, reader, factory))
        self.meters = [provider.get_meter(n.SCOPE, "1.0") for provider, _, _ in self.sides]

    def histograms(self, spec: n.Instrument) -> list[DurationHistogram]:
        return [factory(meter, spec) for meter, (_, _, factory) in zip(self.meters, self.sides, strict=True)]

    def observe_from(self, collection: int) -> None:
        """An observable counter on both, yielding from the ``collection``-th collection on (the metrics' order)."""
        calls = [0, 0]

        def callback(side: int) -> Callable[[CallbackOptions], Iterator[Observation]]:
            def observe(options: CallbackOptions) -> Iterator[Observation]:
                calls[side] += 1
                if calls[side] >= collection:
                    yield Observation(calls[side], {"k": "v"})

            return observe

        for side, meter in enumerate(self.meters):
            meter.create_observable_counter("observed", [callback(side)], "1", "")

    def collect(self) -> tuple[bytes, bytes, MetricsData | None]:
        sdk, own = (reader.get_metrics_data() for _, reader, _ in self.sides)
        encoded = [encode_metrics(data).SerializeToString(deterministic=True) if data else b"" for data in (sdk, own)]
        return encoded[0], encoded[1], own

    def shutdown(self) -> None:
        for provider, _, _ in self.sides:
            provider.shutdown()


def _record(histograms: list[DurationHistogram], clock: Clock, value: float, attrs: Attrs, span: Any) -> None:
    clock.tick()
    with trace.use_span(span, end_on_exit=False) if span is not None else nullcontext():
        for histogram in histograms:
            histogram.record(value, attrs)


@pytest.mark.parametrize("exemplar_filter", list(FILTERS))
@pytest.mark.parametrize("temporality", list(TEMPORALITIES))
def test_own_histograms_export_what_sdk_histograms_export(clock: Clock, temporality: str, exemplar_filter: str) -> None:
    """Equal OTLP bytes after every collection: points, times, buckets, exemplars, metric order."""
    pair = Pair(TEMPORALITIES[temporality], exemplar_filter)
    handshake, connect_, connection = (pair.histograms(spec) for spec in SPECS)
    assert all(isinstance(h, OwnHistogram) for h in (handshake[1], connect_[1], connection[1]))
    pair.observe_from(2)  # the histograms first recorded before it appears come first, the one after it last
    spans = [None, SAMPLED, UNSAMPLED, SAMPLED, None, LEAN_SAMPLED, LEAN_UNSAMPLED]
    seen = set()
    for round_ in range(3):
        values = _values(n.HANDSHAKE_BUCKETS)
        for i, value in enumerate(values if round_ != 1 else values[::3]):
            attrs = (ACCEPTED, ACCEPTED_REORDERED, DENIED)[i % 3] if round_ != 2 or i % 2 else DENIED
            _record(connect_, clock, value, attrs, spans[i % len(spans)])
            _record(handshake, clock, value / 2, ACCEPTED if i % 4 else DENIED, spans[(i + 1) % len(spans)])
        if round_:
            for i, value in enumerate(_values(n.CONNECTION_BUCKETS)):
                _record(connection, clock, value, OTHER, spans[(i + 2) % len(spans)])
        clock.tick(10**9)
        sdk, own, data = pair.collect()
        assert own == sdk, f"collection {round_ + 1}"
        assert data is not None
        metrics = data.resource_metrics[0].scope_metrics[0].metrics
        seen |= {e.span_id for m in metrics if m.name != "observed" for p in m.data.data_points for e in p.exemplars}
    clock.tick(10**9)
    sdk, own, _ = pair.collect()  # nothing recorded since: cumulative repeats every set, delta has none
    assert own == sdk
    pair.shutdown()
    if exemplar_filter == "always_on":  # unsampled spans' ids too, and none where no span was current
        assert {0xB1, 0xB2, 0xB3, 0xB4} <= seen
    else:
        assert seen == {"always_off": set(), "trace_based": {0xB1, 0xB3}}[exemplar_filter]


@pytest.mark.parametrize("temporality", list(TEMPORALITIES))
def test_attribute_sets_over_the_cardinality_limit_go_to_the_overflow_set(clock: Clock, temporality: str) -> None:
    """Three sets allowed: the fourth and later ones are one ``otel.metric.overflow`` point, as the SDK's."""
    pair = Pair(TEMPORALITIES[temporality], "always_on", limit=3)
    (histograms,) = (pair.histograms(n.HANDSHAKE_DURATION),)
    for round_ in range(2):
        for i in range(6):
            _record(histograms, clock, 0.01 * (i + 1), {**ACCEPTED, n.HTTP_STATUS: 200 + i + round_}, SAMPLED)
        clock.tick(10**9)
        sdk, own, data = pair.collect()
        assert own == sdk
        assert data is not None
        points = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
        assert {"otel.metric.overflow": True} in [dict(p.attributes or {}) for p in points]
    histogram = histograms[1]
    assert isinstance(histogram, OwnHistogram)
    for i in range(200):  # sets past the limit all land in the overflow set: the lookup cache does not grow
        histogram.record(0.01, {**ACCEPTED, n.HTTP_STATUS: 1000 + i})
    assert len(histogram._by_items) <= 3
    pair.shutdown()


def test_metrics_records_through_either_histogram_alike(clock: Clock) -> None:
    """``Metrics`` (handshakes, attempts, closes) with the own factory: the same export as with the SDK's."""
    pair = Pair(AggregationTemporality.CUMULATIVE, "trace_based")
    apis = [("echo", "/ws/echo"), ("other", "/ws/other")]
    metrics = [Metrics(meter, apis, factory if factory is not sdk_histogram else None)
               for meter, (_, _, factory) in zip(pair.meters, pair.sides, strict=True)]  # fmt: skip
    backend: Attrs = {n.API: "echo", n.BACKEND: "ws://127.0.0.1:9/echo", n.SERVER_ADDRESS: "127.0.0.1",
                      n.SERVER_PORT: 9, n.PROTOCOL_NAME: "websocket"}  # fmt: skip
    live: list[list[tuple[Metrics, Any]]] = []
    for i in range(8):
        clock.tick()
        with trace.use_span(SAMPLED if i % 2 else UNSAMPLED, end_on_exit=False):
            for m in metrics:
                m.upstream_attempt(
                    backend, 0.003 * i, None if i % 3 else "upstream_unreachable", 101 if i % 3 else None
                )
                m.handshake("echo" if i % 2 else "other", "accepted", 101, None, None, 0.01 * i)
            live.append([(m, m.opened("echo", RelayStats())) for m in metrics])
    for both in live:
        clock.tick()
        for m, connection in both:
            m.closed(connection, "client", 1000, 2.5)
    clock.tick(10**9)
    sdk, own, _ = pair.collect()
    assert own == sdk
    pair.shutdown()


def test_no_record_is_lost_to_collections_on_another_thread() -> None:
    """Delta collections swap the sets while threads record: every record is in exactly one collection."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: inside the record and the swap
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider([reader], shutdown_on_exit=False)
    histogram = OwnHistograms(provider, reader)(provider.get_meter(n.SCOPE), n.HANDSHAKE_DURATION)
    counted = 0

    def collect() -> None:
        nonlocal counted
        data = reader.get_metrics_data()
        for metric in data.resource_metrics[0].scope_metrics[0].metrics if data else ():
            counted += sum(point.count for point in metric.data.data_points if isinstance(point, HistogramDataPoint))

    def record(status: int) -> None:
        for i in range(3000):
            histogram.record(0.001 * (i % 40), {**ACCEPTED, n.HTTP_STATUS: status})

    try:
        threads = [threading.Thread(target=record, args=(200 + i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            collect()
        collect()
    finally:
        sys.setswitchinterval(previous)
    assert counted == 4 * 3000
    provider.shutdown()


def test_a_record_through_the_sdk_s_instrument_lands_in_the_own_histogram(clock: Clock) -> None:
    """The same instrument asked of the meter again and recorded into: aggregated with the own records."""
    pair = Pair(AggregationTemporality.CUMULATIVE, "trace_based")
    sdk, own = pair.histograms(n.HANDSHAKE_DURATION)
    _record([sdk, own], clock, 0.2, ACCEPTED, SAMPLED)
    again = [sdk_histogram(meter, n.HANDSHAKE_DURATION) for meter in pair.meters]  # the SDK's, on both
    _record(again, clock, 0.3, DENIED, SAMPLED)
    clock.tick()
    sdk_bytes, own_bytes, data = pair.collect()
    assert own_bytes == sdk_bytes
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert [p.count for p in metric.data.data_points if isinstance(p, HistogramDataPoint)] == [1, 1]
    pair.shutdown()


def test_a_negative_or_not_finite_value_is_dropped_with_the_sdk_s_warning(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    pair = Pair(AggregationTemporality.CUMULATIVE, "always_on")
    sdk, own = pair.histograms(n.HANDSHAKE_DURATION)
    with caplog.at_level(logging.WARNING):
        for value in (-1.0, float("nan"), float("inf")):
            own.record(value, ACCEPTED)
    assert [r.getMessage() for r in caplog.records] == [
        f"Record amount must be non-negative on Histogram {n.HANDSHAKE_DURATION.name}.",
        f"Record amount nan is not finite on Histogram {n.HANDSHAKE_DURATION.name}, ignoring measurement.",
        f"Record amount inf is not finite on Histogram {n.HANDSHAKE_DURATION.name}, ignoring measurement.",
    ]
    _record([sdk, own], clock, 0.2, ACCEPTED, None)
    clock.tick()
    sdk_bytes, own_bytes, _ = pair.collect()
    assert own_bytes == sdk_bytes
    pair.shutdown()


def test_an_exponential_histogram_aggregation_keeps_the_sdk_s_instruments() -> None:
    """``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram``: SDK's."""
    reader = InMemoryMetricReader(preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()})
    provider = MeterProvider([reader], shutdown_on_exit=False)
    histogram = OwnHistograms(provider, reader)(provider.get_meter(n.SCOPE), n.HANDSHAKE_DURATION)
    assert not isinstance(histogram, OwnHistogram)
    histogram.record(0.02, ACCEPTED)
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert isinstance(metric.data, ExponentialHistogram) and metric.data.data_points[0].count == 1
    provider.shutdown()


def test_an_sdk_of_another_shape_keeps_its_instruments_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A private SDK name the own histograms use is missing: the SDK's instrument, nothing lost."""
    monkeypatch.delattr(metric_reader_storage.MetricReaderStorage, "_new_view_instrument_match")
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], shutdown_on_exit=False)
    with caplog.at_level(logging.WARNING):
        histogram = OwnHistograms(provider, reader)(provider.get_meter(n.SCOPE), n.HANDSHAKE_DURATION)
    assert not isinstance(histogram, OwnHistogram)
    assert "unknown to the gateway: the duration histograms are the SDK's" in caplog.text
    monkeypatch.undo()  # the SDK's storage makes its stream at the first record
    histogram.record(0.02, ACCEPTED)
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    assert [p.count for p in metric.data.data_points if isinstance(p, HistogramDataPoint)] == [1]
    provider.shutdown()


def test_the_exponential_aggregation_variable_reaches_the_own_provider_s_histograms() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"}
    with pytest.MonkeyPatch.context() as env:  # the OTLP exporter reads its aggregation from os.environ
        env.setenv("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "base2_exponential_bucket_histogram")
        providers = resolve_providers(TelemetryConfig(), environ=environ)
    try:
        assert providers.meter is not None and providers.histograms is not None
        histogram = providers.histograms(providers.meter.get_meter(n.SCOPE), n.HANDSHAKE_DURATION)
        assert not isinstance(histogram, OwnHistogram)
    finally:
        providers.shutdown(timeout=5.0)


@pytest.mark.parametrize(("value", "own"), [("", True), ("gateway", True), (" SDK ", False)])
def test_asgi_ws_gateway_histograms_chooses_the_own_or_the_sdk_s(value: str, own: bool) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none",
               "ASGI_WS_GATEWAY_HISTOGRAMS": value}  # fmt: skip
    providers = resolve_providers(TelemetryConfig(), environ=environ)
    try:
        assert providers.meter is not None
        assert (providers.histograms is not None) is own
        histogram = (providers.histograms or sdk_histogram)(providers.meter.get_meter(n.SCOPE), n.HANDSHAKE_DURATION)
        assert isinstance(histogram, OwnHistogram) is own  # nothing recorded: nothing to export at shutdown
    finally:
        providers.shutdown(timeout=5.0)


def test_an_unknown_asgi_ws_gateway_histograms_value_stops_start_up() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "ASGI_WS_GATEWAY_HISTOGRAMS": "own"}
    with pytest.raises(ConfigError, match="ASGI_WS_GATEWAY_HISTOGRAMS: 'own' is not supported"):
        resolve_providers(TelemetryConfig(), environ=environ)


def test_an_application_meter_provider_keeps_the_sdk_s_histograms() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader], shutdown_on_exit=False)
    providers = resolve_providers(TelemetryConfig(), meter_provider=provider, environ={})
    assert providers.meter is provider and providers.histograms is None
    provider.shutdown()


async def _traffic(upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, histograms: str) -> list[Point]:
    with OtlpReceiver() as otlp:
        export_to(monkeypatch, otlp, "grpc")
        monkeypatch.setenv("ASGI_WS_GATEWAY_HISTOGRAMS", histograms)
        gateway = ProbedGateway(telemetry_config(upstream))
        with UvicornServer(gateway) as server:
            for _ in range(3):
                async with await connect(server.url("/ws/echo")) as ws:
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
            assert (await expect_status(server.url("/ws/guarded")))[0] == 403
            assert (await expect_status(server.url("/ws/down")))[0] == 502
            await gateway.settle()
            await asyncio.to_thread(gateway.gateway.telemetry.force_flush)
            recorder = gateway.gateway.telemetry.metrics
            assert recorder is not None and isinstance(recorder.handshake_duration, OwnHistogram) == (
                histograms == "gateway"
            )
        return [p for p in otlp.points() if p.kind == "histogram"]


def _shape(points: list[Point]) -> list[tuple[Any, ...]]:
    """What does not depend on timing: names, units, bounds, temporality, attribute sets and counts."""

    def attrs(point: Point) -> tuple[tuple[str, Any], ...]:
        found = dict(point.attributes)
        if found.get(n.API) == "down":  # backends on ports that were free: another pair each run
            found[n.SERVER_PORT] = found[n.BACKEND] = "*"
        return tuple(sorted(found.items()))

    latest = {(p.metric, attrs(p)): p for p in points}
    return sorted(
        (p.metric, p.unit, tuple(p.bounds), p.temporality, attrs, p.count, sum(p.buckets), len(p.buckets))
        for (_, attrs), p in latest.items()
    )


async def test_a_gateway_exports_the_documented_histograms_with_either(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a real OTLP receiver: names, units, buckets and counts; the same with the SDK's histograms."""
    own = _shape(await _traffic(upstream, monkeypatch, "gateway"))
    sdk = _shape(await _traffic(upstream, monkeypatch, "sdk"))
    assert own == sdk
    for spec in SPECS:
        shapes = [shape for shape in own if shape[0] == spec.name]
        assert shapes, spec.name
        for _, unit, bounds, temporality, _, count, total, buckets in shapes:
            assert (unit, bounds, temporality) == (spec.unit, spec.buckets, 2)  # cumulative by default
            assert count == total and buckets == len(bounds) + 1
    counts = {(name, dict(attrs).get(n.API)): count for name, _, _, _, attrs, count, _, _ in own}
    assert counts[n.HANDSHAKE_DURATION.name, "echo"] == 3
    assert counts[n.CONNECTION_DURATION_METRIC.name, "echo"] == 3
