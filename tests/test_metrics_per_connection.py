"""What ``Metrics`` keeps of a connection once it is closed, and its counts under threads."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import metrics as metrics_module
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.histograms import OwnHistograms
from asgi_ws_gateway.telemetry.metrics import Metrics


def _metrics() -> tuple[Metrics, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return Metrics(provider.get_meter(n.SCOPE), [("echo", "/ws/echo")], OwnHistograms(provider, reader)), reader


def _sums(reader: InMemoryMetricReader) -> dict[str, dict[tuple[Any, ...], int]]:
    data = reader.get_metrics_data()
    found: dict[str, dict[tuple[Any, ...], int]] = {}
    for metric in data.resource_metrics[0].scope_metrics[0].metrics if data else ():
        for point in metric.data.data_points:
            value = point.count if isinstance(point, HistogramDataPoint) else getattr(point, "value", 0)
            found.setdefault(metric.name, {})[tuple(sorted((point.attributes or {}).items()))] = int(value)
    return found


def test_a_closed_connection_is_not_kept() -> None:
    """Its counters are added to its API's totals at its close and its objects freed then: held for a
    batched fold, they were carried through the collector's generations."""
    metrics, reader = _metrics()
    stats = RelayStats(sizes_in=[0] * 25, sizes_out=[0] * 25)
    stats.count_in(64, False)
    stats.count_out(300, True)
    gone = weakref.ref(stats)
    metrics.closed(metrics.opened("echo", stats), "client", 1000, 0.5)
    del stats
    assert gone() is None
    sums = _sums(reader)
    assert sum(sums[n.MESSAGES.name].values()) == 2
    assert sum(sums[n.IO.name].values()) == 364
    assert sum(sums[n.MESSAGE_SIZES.name].values()) == 2


def test_connections_leave_no_object_for_the_collector() -> None:
    """Handshakes, attempts, opens and closes, once their series are made, allocate nothing that outlives
    them: the collector never runs for them."""
    metrics, _ = _metrics()
    backend: dict[str, str | int] = {n.API: "echo", n.BACKEND: "ws://127.0.0.1:9/"}

    def connection() -> None:
        metrics.upstream_attempt(backend, 0.001, None, 101)
        metrics.handshake("echo", "accepted", 101, None, None, 0.002)
        stats = RelayStats(sizes_in=[0] * 25, sizes_out=[0] * 25)
        live = metrics.opened("echo", stats)
        stats.count_in(64, False)
        metrics.closed(live, "client", 1000, 0.01)

    connection()
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(500):
            connection()
        assert len(gc.get_objects()) - before < 50
    finally:
        if was:
            gc.enable()


def test_counts_stay_exact_while_threads_count_and_the_series_are_made_again(monkeypatch: Any) -> None:
    """Handshake and close counts live in their series: series made again (a changed route, the series
    limit) while other threads count keep every count, and each collection sees every count made before."""
    monkeypatch.setattr(metrics_module, "_SERIES_LIMIT", 7)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    metrics, reader = _metrics()
    per_thread, threads = 400, 4

    def count(worker: int) -> None:
        for i in range(per_thread):
            metrics.handshake("echo", "denied", 400 + (worker * per_thread + i) % 13, "forbidden", None, 0.001)
            metrics.closed(metrics.opened("echo", RelayStats()), "client", 3000 + i % 11, 0.5)
            if i % 50 == 0:
                metrics.add_api("echo", "/ws/echo")

    try:
        workers = [threading.Thread(target=count, args=(w,)) for w in range(threads)]
        for worker in workers:
            worker.start()
        seen = 0
        while any(worker.is_alive() for worker in workers):
            total = sum(_sums(reader).get(n.HANDSHAKES.name, {}).values())
            assert total >= seen  # a collection never loses a count an earlier one saw
            seen = total
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(previous)
    sums = _sums(reader)
    assert sum(sums[n.HANDSHAKES.name].values()) == per_thread * threads
    assert sum(sums[n.CONNECTION_CLOSES.name].values()) == per_thread * threads
    assert sum(sums[n.HANDSHAKE_DURATION.name].values()) == per_thread * threads
    assert sum(sums[n.CONNECTION_DURATION_METRIC.name].values()) == per_thread * threads
    assert metrics.counts()["active", "echo", ""] == 0
