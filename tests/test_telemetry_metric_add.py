"""The optional C metric records (``telemetry/_metric_add.c``) against the Python ones, their reference.

Two own histograms side by side, one recording through its ``recorder`` (C), the other through
``OwnHistogram.record_items`` (Python), fed the same records hypothesis draws (amounts at the bounds,
zero, huge, negative, NaN, infinite, ints; attribute sets past the cardinality limit; no span, SDK spans
and lean spans, sampled or not, under each exemplar filter; collections in between, delta and cumulative):
the same points, counts, sums, min, max and exemplars. ``ApiTotals.add`` likewise, on random
``RelayStats``. Without the extension (not built, or ``ASGI_WS_GATEWAY_PURE_PYTHON=1``) the Python ones are used.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal import _view_instrument_match, instrument, metric_reader_storage
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import INVALID_SPAN

from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import histograms as own_module
from asgi_ws_gateway.telemetry import metric_totals
from asgi_ws_gateway.telemetry import metrics as metrics_module
from asgi_ws_gateway.telemetry import names as n
from asgi_ws_gateway.telemetry.environment import PURE_PYTHON_VARIABLE
from asgi_ws_gateway.telemetry.histograms import OwnHistogram, OwnHistograms
from asgi_ws_gateway.telemetry.metric_totals import ApiTotals
from asgi_ws_gateway.telemetry.metrics import Attrs, Metrics, attributes_key
from support.exemplars import FILTERS, LEAN_SAMPLED, LEAN_UNSAMPLED, SAMPLED, TEMPORALITIES, UNSAMPLED

needs_native = pytest.mark.skipif(
    metric_totals.NATIVE_RECORDER is None,
    reason="the C metric records (telemetry/_metric_add.c) are not built, or turned off by ASGI_WS_GATEWAY_PURE_PYTHON",
)

SPANS: tuple[trace.Span | None, ...] = (None, SAMPLED, UNSAMPLED, LEAN_SAMPLED, LEAN_UNSAMPLED, INVALID_SPAN)
BASE: Attrs = {n.API: "echo", n.HTTP_ROUTE: "/ws/echo", n.PROTOCOL_NAME: "websocket"}
ATTRIBUTE_SETS: tuple[Attrs, ...] = (
    {**BASE, n.OUTCOME: "accepted", n.HTTP_STATUS: 101},
    {n.HTTP_STATUS: 101, n.OUTCOME: "accepted", **BASE},  # the same set, another order
    {**BASE, n.OUTCOME: "denied", n.HTTP_STATUS: 403, n.ERROR_TYPE: "origin_missing"},
    {**BASE, n.HTTP_STATUS: 1},  # 1 and 0: never cached by key (True would be the same set)
    {**BASE, n.HTTP_STATUS: 0},
    {**BASE, n.CLOSE_SIDE: "client"},
    {},
)
BOUNDS = n.HANDSHAKE_BUCKETS
AMOUNTS = st.one_of(
    st.sampled_from([0.0, -0.0, *BOUNDS, 1e308, 5e-324, float("nan"), float("inf"), -float("inf"), -1.0]),
    st.floats(min_value=0, max_value=20),
    st.floats(),
    st.integers(-2, 2**70),  # ints: recorded in Python on both sides
)
RECORD = st.tuples(st.just("record"), AMOUNTS, st.integers(0, len(ATTRIBUTE_SETS) - 1), st.integers(0, len(SPANS) - 1))
STEPS = st.lists(st.one_of(RECORD, RECORD, RECORD, st.just(("collect", 0, 0, 0))), max_size=60)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 1000  # each reading another time: an exemplar's time is the one of its own record
        return self.now


class Side:
    """One provider and reader with one own histogram."""

    def __init__(self, temporality: AggregationTemporality, exemplar_filter: str, limit: int) -> None:
        self.reader = InMemoryMetricReader(
            preferred_temporality={Histogram: temporality}, cardinality_limits={Histogram: limit}
        )
        self.provider = MeterProvider([self.reader], Resource({}), FILTERS[exemplar_filter](), False)
        histogram = OwnHistograms(self.provider, self.reader)(self.provider.get_meter("m"), n.HANDSHAKE_DURATION)
        assert isinstance(histogram, OwnHistogram)
        self.histogram = histogram

    def collect(self) -> MetricsData | None:
        return self.reader.get_metrics_data()


def _python_record(histogram: OwnHistogram) -> Callable[[float, Attrs, str], None]:
    return lambda amount, attributes, key: OwnHistogram.record_items(histogram, amount, attributes, key)


def _run(steps: list[tuple[str, Any, int, int]], temporality: str, exemplar_filter: str) -> None:
    sides = [Side(TEMPORALITIES[temporality], exemplar_filter, 3) for _ in range(2)]
    native, python = sides
    assert type(native.histogram.recorder).__name__ == "Recorder"
    records = [native.histogram.recorder, _python_record(python.histogram)]
    clocks = [Clock(), Clock()]
    for step, amount, which, span_index in steps:
        for side, record, clock in zip(sides, records, clocks, strict=True):
            with pytest.MonkeyPatch.context() as patch:
                for module in (instrument, _view_instrument_match, metric_reader_storage, own_module):
                    patch.setattr(module, "time_ns", clock)
                if step == "collect":
                    side.collect()
                    continue
                attributes = ATTRIBUTE_SETS[which]
                span = SPANS[span_index]
                with trace.use_span(span, end_on_exit=False) if span is not None else nullcontext():
                    record(amount, attributes, attributes_key(attributes))
        assert clocks[0].now == clocks[1].now
    with pytest.MonkeyPatch.context() as patch:
        for module in (instrument, _view_instrument_match, metric_reader_storage, own_module):
            patch.setattr(module, "time_ns", lambda: 1_800_000_000_000_000_000)
        assert native.collect() == python.collect()
    for side in sides:
        side.provider.shutdown()


def _alongside(reader: Callable[[], None], work: Callable[[], None], threads: int, done: threading.Event) -> None:
    """``work`` on ``threads`` threads at once while ``reader`` runs on another, told by ``done`` when they end."""
    background = threading.Thread(target=reader)
    background.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    background.join()


@needs_native
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, temporality=st.sampled_from(list(TEMPORALITIES)), exemplar_filter=st.sampled_from(list(FILTERS)))
def test_the_c_recorder_records_what_python_records(
    steps: list[tuple[str, Any, int, int]], temporality: str, exemplar_filter: str
) -> None:
    """Points, counts, sums (the same float additions), min, max, exemplars with their times, attributes
    and ids: equal after every drawn sequence of records and collections."""
    _run(steps, temporality, exemplar_filter)


@needs_native
@pytest.mark.parametrize("exemplar_filter", list(FILTERS))
@pytest.mark.parametrize("temporality", list(TEMPORALITIES))
def test_the_c_recorder_on_every_span_and_bucket(temporality: str, exemplar_filter: str) -> None:
    """Each bound, zero, between bounds and past the last, under each span, with collections between."""
    inside = [(low + high) / 2 for low, high in zip((0.0, *BOUNDS), BOUNDS, strict=False)]
    steps: list[tuple[str, Any, int, int]] = []
    for round_ in range(3):
        for i, amount in enumerate([0.0, *BOUNDS, *inside, BOUNDS[-1] * 3, float("nan"), -1.0]):
            steps.append(("record", amount, (i + round_) % len(ATTRIBUTE_SETS), (i * 5 + round_) % len(SPANS)))
        steps.append(("collect", 0, 0, 0))
    _run(steps, temporality, exemplar_filter)


def _python_calls(histogram: OwnHistogram, record: Callable[[], None]) -> int:
    """How often ``record()`` ran the Python ``record_items`` (a profile hook sees each call)."""
    calls = 0

    def profile(frame: Any, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call" and frame.f_code is OwnHistogram.record_items.__code__:
            calls += 1

    sys.setprofile(profile)
    try:
        record()
    finally:
        sys.setprofile(None)
    return calls


@needs_native
@pytest.mark.parametrize(
    ("exemplar_filter", "span", "in_c"),
    [
        ("trace_based", None, True),
        ("trace_based", LEAN_SAMPLED, True),
        ("trace_based", LEAN_UNSAMPLED, False),
        ("trace_based", SAMPLED, False),
        ("always_on", LEAN_SAMPLED, True),
        ("always_on", None, False),
        ("always_off", SAMPLED, True),
    ],
)
def test_the_usual_records_are_made_in_c(exemplar_filter: str, span: trace.Span | None, in_c: bool) -> None:
    """No exemplar, or one under a sampled lean span: in C once the histogram is listed; others in Python."""
    side = Side(AggregationTemporality.CUMULATIVE, exemplar_filter, 2000)
    attributes = ATTRIBUTE_SETS[0]
    key = attributes_key(attributes)
    recorder = side.histogram.recorder
    with trace.use_span(span, end_on_exit=False) if span is not None else nullcontext():
        assert _python_calls(side.histogram, lambda: recorder(0.5, attributes, key)) == 1  # the first: listed
        assert _python_calls(side.histogram, lambda: recorder(0.5, attributes, key)) == (0 if in_c else 1)
        assert _python_calls(side.histogram, lambda: recorder(float("nan"), attributes, key)) == 1
        assert _python_calls(side.histogram, lambda: recorder(1, attributes, key)) == 1  # an int
    side.provider.shutdown()


@needs_native
def test_threads_recording_while_another_collects_lose_no_count() -> None:
    """Four threads record through C while the reader collects (delta) on another: every record is in one
    collection, once."""
    side = Side(AggregationTemporality.DELTA, "always_off", 2000)
    attributes = ATTRIBUTE_SETS[0]
    key = attributes_key(attributes)
    side.histogram.recorder(0.5, attributes, key)
    per_thread, threads = 20_000, 4
    counted = 0
    done = threading.Event()

    def record() -> None:
        recorder = side.histogram.recorder
        for i in range(per_thread):
            recorder(0.001 * (i % 100), attributes, key)

    def count(data: MetricsData | None) -> int:
        if data is None:
            return 0
        metrics = data.resource_metrics[0].scope_metrics[0].metrics
        return sum(p.count for m in metrics for p in m.data.data_points if isinstance(p, HistogramDataPoint))

    def collect() -> None:
        nonlocal counted
        while not done.is_set():
            counted += count(side.collect())

    _alongside(collect, record, threads, done)
    counted += count(side.collect())
    assert counted == 1 + per_thread * threads
    side.provider.shutdown()


@needs_native
def test_the_c_recorder_keeps_no_reference_it_should_not() -> None:
    """100,000 records with exemplars: the amount, attributes and span context are held by the point's
    fields and exemplar slots only, and no object is left behind."""
    side = Side(AggregationTemporality.CUMULATIVE, "always_on", 2000)
    attributes = dict(ATTRIBUTE_SETS[0])
    key = attributes_key(attributes)
    amount = 0.5
    recorder = side.histogram.recorder
    with trace.use_span(LEAN_SAMPLED, end_on_exit=False):
        recorder(amount, attributes, key)
        recorder(amount, attributes, key)
        context = LEAN_SAMPLED.get_span_context()
        gc.collect()
        before = (sys.getrefcount(amount), sys.getrefcount(attributes), sys.getrefcount(context), len(gc.get_objects()))
        blocks = sys.getallocatedblocks()
        for _ in range(100_000):
            recorder(amount, attributes, key)
        gc.collect()
        after = (sys.getrefcount(amount), sys.getrefcount(attributes), sys.getrefcount(context), len(gc.get_objects()))
        assert after[:3] == before[:3]
        assert after[3] - before[3] < 50  # a leak would be one object per record
        assert sys.getallocatedblocks() - blocks < 100
    side.provider.shutdown()


@needs_native
def test_the_recorder_refuses_arguments_as_python_does() -> None:
    side = Side(AggregationTemporality.CUMULATIVE, "always_off", 2000)
    with pytest.raises(TypeError):
        side.histogram.recorder(0.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        OwnHistogram.record_items(side.histogram, 0.5)  # type: ignore[call-arg]
    side.provider.shutdown()


# -- ApiTotals.add -----------------------------------------------------------------------------------------

COUNTS = st.one_of(st.integers(0, 2**40), st.sampled_from([0, 1, 2**63, 2**64 + 1]))
SIZES = st.lists(COUNTS, max_size=70)  # past the 65 slots too
ACTIONS = st.dictionaries(
    st.tuples(st.sampled_from(["p", "q"]), st.sampled_from(["drop", "close"]), st.just("inbound"), st.just("")),
    st.integers(1, 5),
    max_size=3,
)


@st.composite
def relay_stats(draw: st.DrawFn) -> RelayStats:
    stats = RelayStats(sizes_in=draw(SIZES), sizes_out=draw(SIZES), policy_actions=draw(ACTIONS))
    for name in ("messages_in", "bytes_in", "messages_out", "bytes_out", "binary_in", "binary_bytes_in",
                 "binary_out", "binary_bytes_out"):  # fmt: skip
        setattr(stats, name, draw(COUNTS))
    return stats


def _state(totals: ApiTotals) -> tuple[list[int], list[int], list[int], Counter[Any]]:
    return totals.counts, totals.slots_in, totals.slots_out, totals.actions


@needs_native
@settings(max_examples=200, deadline=None)
@given(connections=st.lists(relay_stats(), max_size=6))
def test_add_totals_adds_what_api_totals_add_adds(connections: list[RelayStats]) -> None:
    native, python = ApiTotals(), ApiTotals()
    for stats in connections:
        metric_totals.add_totals(native, stats)
        ApiTotals.add(python, stats)
        assert _state(native) == _state(python)


@needs_native
def test_add_totals_leaves_other_values_to_python() -> None:
    """A counter or a size that is not an int, or a totals list it cannot hold: Python adds them (or fails)
    as before, nothing added twice."""
    odd = RelayStats(messages_in=1.5, sizes_in=[0, 2])  # type: ignore[arg-type]
    native, python = ApiTotals(), ApiTotals()
    metric_totals.add_totals(native, odd)
    ApiTotals.add(python, odd)
    assert _state(native) == _state(python)
    assert native.counts[0] == 1.5

    class Totals(ApiTotals):  # not the type whose slots it reads at their offsets: read by attribute
        pass

    stats = RelayStats(messages_in=2, sizes_in=[0, 5], policy_actions={("p", "drop", "inbound", ""): 1})
    native, python = Totals(), Totals()
    metric_totals.add_totals(native, stats)
    ApiTotals.add(python, stats)
    assert _state(native) == _state(python)
    short = ApiTotals()
    short.slots_in = [0]
    with pytest.raises(IndexError):
        metric_totals.add_totals(short, RelayStats(sizes_in=[0, 3]))
    with pytest.raises(AttributeError):
        metric_totals.add_totals(ApiTotals(), object())  # type: ignore[arg-type]


@needs_native
def test_add_totals_keeps_no_reference() -> None:
    totals = ApiTotals()
    stats = RelayStats(messages_in=3, bytes_in=10**30, sizes_in=[0, 1, 0, 2], sizes_out=[1], policy_actions={})
    metric_totals.add_totals(totals, stats)
    gc.collect()
    before = (sys.getrefcount(stats), sys.getrefcount(stats.sizes_in), len(gc.get_objects()))
    blocks = sys.getallocatedblocks()
    for _ in range(100_000):
        metric_totals.add_totals(totals, stats)
    gc.collect()
    after = (sys.getrefcount(stats), sys.getrefcount(stats.sizes_in), len(gc.get_objects()))
    assert after[:2] == before[:2]
    assert after[2] - before[2] < 50  # a leak would be one object per add
    assert sys.getallocatedblocks() - blocks < 100
    assert totals.counts[0] == 3 * 100_001


@pytest.mark.parametrize("setting", ["pure", "missing", "format"])
def test_without_the_extension_the_records_are_python(setting: str) -> None:
    """ASGI_WS_GATEWAY_PURE_PYTHON=1, the module missing, or one of another FORMAT: Python records, the same."""
    script = f"""
import sys, types
setting = {setting!r}
if setting == "missing":
    sys.modules["asgi_ws_gateway.telemetry._metric_add"] = None
if setting == "format":
    fake = types.ModuleType("_metric_add")
    fake.FORMAT = -1
    fake.Recorder = fake.add_totals = fake.bind_totals = None
    sys.modules["asgi_ws_gateway.telemetry._metric_add"] = fake
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from asgi_ws_gateway.relay.stats import RelayStats
from asgi_ws_gateway.telemetry import metric_totals, names as n
from asgi_ws_gateway.telemetry.histograms import OwnHistograms, OwnHistogram
assert metric_totals.NATIVE_RECORDER is None
assert metric_totals.add_totals is metric_totals.ApiTotals.add
reader = InMemoryMetricReader()
provider = MeterProvider([reader])
histogram = OwnHistograms(provider, reader)(provider.get_meter("m"), n.HANDSHAKE_DURATION)
assert histogram.recorder == histogram.record_items
histogram.record(0.5, {{"a": "b"}})
(point,) = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
assert (point.count, point.sum) == (1, 0.5)
totals = metric_totals.ApiTotals()
metric_totals.add_totals(totals, RelayStats(messages_in=2, sizes_in=[0, 1]))
assert totals.counts[0] == 2 and totals.slots_in[1] == 1
"""
    env = {PURE_PYTHON_VARIABLE: "1"} if setting == "pure" else {}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- through Metrics ----------------------------------------------------------------------------------------

APIS = ("chat", "feed")
HANDSHAKE = st.tuples(
    st.just("handshake"),
    st.sampled_from(APIS),
    st.sampled_from(["accepted", "denied", "error", "abandoned"]),
    st.sampled_from([None, 101, 403, 502, 999]),
    st.sampled_from([None, "origin_missing", "UpstreamRejected", "Client Text"]),
    st.sampled_from([None, "tenant-check"]),
    st.floats(0, 20),
)
OPEN = st.tuples(st.just("open"), st.sampled_from(APIS))
CLOSE = st.tuples(
    st.just("close"),
    st.integers(0, 7),  # which of the connections opened so far (closed already: counted once)
    st.sampled_from(["client", "upstream", "gateway"]),
    st.sampled_from([1000, 1001, 1006, 3001, 4999, 70000]),
    st.floats(0, 1e5),
)
OTHER_STEPS = st.sampled_from([("collect",), ("add_api",), ("close_as_list",), ("close_as_copy",)])
METRIC_STEPS = st.lists(st.one_of(HANDSHAKE, OPEN, OPEN, CLOSE, CLOSE, OTHER_STEPS), max_size=50)


def _shape(data: MetricsData | None) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every metric's points, without times (the two providers collect at their own)."""
    if data is None:
        return []
    shaped = []
    for metric in data.resource_metrics[0].scope_metrics[0].metrics:
        points: list[tuple[Any, ...]] = []
        for point in metric.data.data_points:
            attributes = tuple(sorted((point.attributes or {}).items()))
            if isinstance(point, HistogramDataPoint):
                points.append((attributes, point.count, point.sum, point.min, point.max, point.bucket_counts))
            else:
                points.append((attributes, getattr(point, "value", None)))
        shaped.append((metric.name, sorted(points, key=repr)))
    return shaped


class MetricsSide:
    def __init__(self, native: bool) -> None:
        self.native = native
        self.reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.CUMULATIVE})
        self.provider = MeterProvider([self.reader], Resource({}), FILTERS["always_off"](), False)
        histograms = OwnHistograms(self.provider, self.reader)
        self.metrics = metrics = Metrics(self.provider.get_meter("m"), [(a, f"/ws/{a}") for a in APIS], histograms)
        if not native:  # the Python records, as without the extension
            for name, histogram in (("_record_handshake", metrics.handshake_duration),
                                    ("_record_connect", metrics.connect_duration),
                                    ("_record_connection", metrics.connection_duration)):  # fmt: skip
                assert isinstance(histogram, OwnHistogram)
                setattr(metrics, name, histogram.record_items)
        self.live: list[Any] = []


@needs_native
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=METRIC_STEPS, limit=st.sampled_from([2, 4096]))
def test_metrics_count_the_same_with_the_c_records(steps: list[tuple[Any, ...]], limit: int) -> None:
    """Handshakes, opens, closes (twice, of a list or another tuple than the one ``opened`` returns), a route
    changed, series made again past the limit, collections between: the same counters and histograms with the
    C records and add_totals as with the Python ones."""
    sides = [MetricsSide(True), MetricsSide(False)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics_module, "_SERIES_LIMIT", limit)
        for step in steps:
            for side in sides:
                with pytest.MonkeyPatch.context() as python:
                    if not side.native:
                        python.setattr(metrics_module, "add_totals", ApiTotals.add)
                    _metrics_step(side, step)
            assert sides[0].metrics.counts() == sides[1].metrics.counts()
        assert _shape(sides[0].reader.get_metrics_data()) == _shape(sides[1].reader.get_metrics_data())
    for side in sides:
        side.provider.shutdown()


def _metrics_step(side: MetricsSide, step: tuple[Any, ...]) -> None:
    metrics = side.metrics
    if step[0] == "handshake":
        metrics.handshake(*step[1:])
    elif step[0] == "open":
        stats = RelayStats(messages_in=len(side.live), sizes_in=[0, 1, 2])
        side.live.append(metrics.opened(step[1], stats))
    elif step[0] == "close" and side.live:
        metrics.closed(side.live[step[1] % len(side.live)], *step[2:])
    elif step[0] == "close_as_list" and side.live:
        live = side.live[-1]
        metrics.closed([live[0], live[1]], "client", 1000, 1.0)  # type: ignore[arg-type]
    elif step[0] == "close_as_copy" and side.live:  # equal, not the one opened: not closed
        live = side.live[-1]
        metrics.closed((live[0], live[1]), "client", 1000, 1.0)
    elif step[0] == "add_api":
        metrics.add_api("chat", "/ws/chat2")
    elif step[0] == "collect":
        side.reader.collect()


@needs_native
def test_closes_recorded_in_c_while_another_thread_reads_lose_none() -> None:
    side = MetricsSide(True)
    metrics = side.metrics
    per_thread, threads = 5000, 4
    done = threading.Event()

    def close() -> None:
        for i in range(per_thread):
            metrics.closed(metrics.opened("chat", RelayStats(messages_in=1)), "client", 1000 + i % 3, 0.5)
            metrics.handshake("chat", "accepted", 101, None, None, 0.01)

    def read() -> None:
        while not done.is_set():
            metrics.counts()
            side.reader.collect()

    _alongside(read, close, threads, done)
    counts = metrics.counts()
    assert counts["messages", "chat", "in"] == per_thread * threads
    assert sum(v for (series, _, _), v in counts.items() if series == "closes") == per_thread * threads
    assert counts["handshakes", "chat", "accepted"] == per_thread * threads
    side.provider.shutdown()


@needs_native
def test_metrics_with_the_c_records_keep_no_reference() -> None:
    """100,000 handshakes and opened and closed connections through ``Metrics``: nothing left behind."""
    side = MetricsSide(True)
    metrics = side.metrics
    stats = RelayStats(messages_in=1, sizes_in=[0, 1])

    def connections(count: int) -> None:
        for _ in range(count):
            metrics.handshake("chat", "accepted", 101, None, None, 0.01)
            metrics.closed(metrics.opened("chat", stats), "client", 1000, 0.5)

    connections(2)
    gc.collect()
    before = (sys.getrefcount(stats), len(gc.get_objects()))
    blocks = sys.getallocatedblocks()
    connections(100_000)
    gc.collect()
    after = (sys.getrefcount(stats), len(gc.get_objects()))
    assert after[0] == before[0]
    assert after[1] - before[1] < 50  # a leak would be one object per connection
    assert sys.getallocatedblocks() - blocks < 100
    assert metrics.counts()["messages", "chat", "in"] == 100_002
    side.provider.shutdown()
