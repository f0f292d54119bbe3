"""The gateway's own aggregation of its three duration histograms, exported as the SDK exports them.

An SDK ``Histogram.record`` costs 7 to 25 µs (it builds a ``Measurement``, asks the exemplar filter,
copies, cleans and hashes the attributes, takes three locks and offers an exemplar), three times per
connection on the event loop. With the gateway's own meter provider each duration histogram is an
:class:`OwnHistogram` instead: a record is a dict lookup keyed by the attributes' items, a bisect and
a few increments under one lock (the reader collects on its own thread), plus the exemplar filter's
decision when exemplars are on.

Export is the SDK's own: an ``OwnHistogram`` is the stream the SDK's reader storage would have
created for that instrument (a ``_ViewInstrumentMatch``), put in its place at the first record, as
the SDK adds its own. So the metric's name, unit, description, scope, temporality, position among
the other metrics, collection time and the flush and shutdown paths are the SDK's; its ``collect``
returns the points the SDK's ``_ExplicitBucketHistogramAggregation`` would (opentelemetry-sdk 1.45):

* one point per attribute set, in the order of their first record; the set is the SDK's
  (``_hash_attributes``), its attributes those of its first record;
* count, sum, min, max and bucket counts with the instrument's advisory boundaries (``v <= bound``);
* cumulative (the default): every set in every collection, from the time of its first record, sums
  added in the SDK's order; delta (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` ``delta``
  or ``lowmemory``): the sets recorded since the last collection, which start there (the first ones
  at their first record), then forgotten;
* the cardinality limit (2000 sets per collection cycle unless the reader sets one), further sets
  into one ``otel.metric.overflow=true`` set;
* exemplars as the default ``AlignedHistogramBucketExemplarReservoir``: the last measurement offered
  per bucket since the last collection, offered as ``OTEL_METRICS_EXEMPLAR_FILTER`` decides
  (``trace_based``: a sampled current span; ``always_on``; ``always_off``), with the current span's
  ids (a bucket keeps the ids of an earlier offer when the later one has no span, as the SDK's does).

Where the SDK's configuration is one this does not reproduce (views, another histogram aggregation
such as ``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION=base2_exponential_bucket_histogram``,
another exemplar filter or reservoir, or SDK internals of another shape), :class:`OwnHistograms`
returns the SDK's instrument: nothing is lost. Attribute values must be strings or integers, as the
gateway's are (an item tuple tells them apart; ``True`` and ``1`` would need the SDK's hashing).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics._internal._view_instrument_match import (
    _OVERFLOW_ATTRIBUTES,
    _OVERFLOW_KEY,
    _hash_attributes,
    _HashedAttributes,
    _ViewInstrumentMatch,
)
from opentelemetry.sdk.metrics._internal.aggregation import (
    AggregationTemporality,
    _ExplicitBucketHistogramAggregation,
)
from opentelemetry.sdk.metrics._internal.exemplar import AlignedHistogramBucketExemplarReservoir, Exemplar
from opentelemetry.sdk.metrics._internal.instrument import _Histogram
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.sdk.metrics._internal.measurement_consumer import SynchronousMeasurementConsumer
from opentelemetry.sdk.metrics._internal.metric_reader_storage import _DEFAULT_VIEW, MetricReaderStorage
from opentelemetry.sdk.metrics._internal.point import HistogramDataPoint
from opentelemetry.sdk.metrics._internal.view import _default_reservoir_factory
from opentelemetry.trace import INVALID_SPAN, Span, SpanContext, TraceFlags, get_current_span
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util.types import AnyValue

from . import names as n
from .current import VARIABLE, get_current
from .lean_spans import LeanSpan
from .metric_totals import NATIVE_RECORDER
from .metrics import attributes_key

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

    from .metrics import Attrs, DurationHistogram, Record

logger = logging.getLogger(__name__)

_OFF, _ON, _TRACE_BASED = 0, 1, 2
_INF = math.inf
_SAMPLED = int(TraceFlags.SAMPLED)
_FILTERS: dict[type, int] = {
    AlwaysOffExemplarFilter: _OFF,
    AlwaysOnExemplarFilter: _ON,
    TraceBasedExemplarFilter: _TRACE_BASED,
}
_Attributes = Mapping[str, AnyValue]


class OwnHistograms:
    """Makes the duration histograms of an SDK ``MeterProvider`` with one reader: own ones where it can.

    Call it as ``Metrics`` calls its histogram factory: ``histograms(meter, spec)`` returns an
    :class:`OwnHistogram`, or the SDK's ``Histogram`` when this SDK or its configuration is one the
    own aggregation does not reproduce (logged once: a warning when the SDK's shape is unknown).
    """

    def __init__(self, provider: SdkMeterProvider, reader: MetricReader) -> None:
        self._storage: MetricReaderStorage | None = None
        self._exemplars = _FILTERS.get(type(getattr(getattr(provider, "_sdk_config", None), "exemplar_filter", None)))
        self._logged = False
        consumer = getattr(provider, "_measurement_consumer", None)
        known = isinstance(consumer, SynchronousMeasurementConsumer)
        storages = getattr(consumer, "_reader_storages", None) if known else None
        storage = storages.get(reader) if isinstance(storages, Mapping) else None
        if isinstance(storage, MetricReaderStorage) and all(
            hasattr(storage, name) for name in ("_lock", "_instrument_view_instrument_matches", "_sdk_config")
        ):
            self._storage = storage

    def __call__(self, meter: Meter, spec: n.Instrument) -> DurationHistogram:
        instrument = meter.create_histogram(
            spec.name, spec.unit, spec.description, explicit_bucket_boundaries_advisory=spec.buckets
        )
        try:
            return self._own(instrument)
        except (AttributeError, TypeError):  # private SDK names of another version: keep its instrument
            self._fallback(logging.WARNING, "this OpenTelemetry SDK's metrics are unknown to the gateway")
            return instrument

    def _own(self, instrument: DurationHistogram) -> DurationHistogram:
        storage = self._storage
        if storage is None or self._exemplars is None or not isinstance(instrument, _Histogram):
            self._fallback(logging.WARNING, "this OpenTelemetry SDK's metrics are unknown to the gateway")
            return instrument
        if storage._sdk_config.views or not instrument._is_enabled():
            self._fallback(logging.INFO, "the meter provider has views or a disabled meter")
            return instrument
        stream = storage._new_view_instrument_match(_DEFAULT_VIEW, instrument)  # what the SDK would make
        aggregation = stream._aggregation
        reservoir: object = _default_reservoir_factory(_ExplicitBucketHistogramAggregation)
        if type(aggregation) is not _ExplicitBucketHistogramAggregation:
            self._fallback(logging.INFO, f"the histogram aggregation is {type(aggregation).__name__}")
            return instrument
        if (
            stream._view._exemplar_reservoir_factory is not _default_reservoir_factory
            or reservoir is not AlignedHistogramBucketExemplarReservoir
            or stream._view._attribute_keys is not None
            or not aggregation._record_min_max
        ):
            self._fallback(
                logging.WARNING, "this OpenTelemetry SDK's default histogram stream is unknown to the gateway"
            )
            return instrument
        return OwnHistogram(instrument, storage, stream, self._exemplars)

    def _fallback(self, level: int, why: str) -> None:
        if not self._logged:
            self._logged = True
            logger.log(level, "%s: the duration histograms are the SDK's", why)


_Slot = tuple[float, int, _Attributes, SpanContext | None]
"""One bucket's exemplar: the last measurement offered to it since the last collection, as (value, time,
attributes, the span's context or None): one tuple written per offer, where an object took five writes."""


class _Point:
    """One attribute set: this period's counts and the cumulative totals before it."""

    __slots__ = ("attributes", "counts", "exemplars", "max", "min", "previous", "start", "sum",
                 "total_counts", "total_max", "total_min", "total_sum")  # fmt: skip

    def __init__(self, attributes: _Attributes, start: int, buckets: int) -> None:
        self.attributes = attributes
        self.start = start  # the SDK aggregation's start time
        self.previous = start  # the start of a delta point: the last collection, or ``start``
        self.counts = [0] * buckets
        self.sum: float = 0  # an int until a value is added, as the SDK's
        self.min = math.inf
        self.max = -math.inf
        self.exemplars: dict[int, _Slot] = {}
        self.total_counts = [0] * buckets
        self.total_sum: float = 0
        self.total_min = math.inf
        self.total_max = -math.inf


def _offered(span: Span | None) -> tuple[bool, SpanContext | None]:
    """Whether an exemplar is offered with ``span`` (None: not), and its span's ids (None: none)."""
    if span is None:
        return False, None
    return True, (span.get_span_context() if span != INVALID_SPAN else None)


class OwnHistogram(_ViewInstrumentMatch):
    """One duration histogram, recorded by the gateway and collected by the SDK's reader storage.

    ``record(amount, attributes)`` is the SDK ``Histogram.record``'s call (no ``context``: the
    current one); thread-safe.
    """

    def __init__(
        self, instrument: _Histogram, storage: MetricReaderStorage, stream: _ViewInstrumentMatch, exemplars: int
    ) -> None:
        super().__init__(
            view=stream._view,
            instrument=instrument,
            instrument_class_aggregation=storage._instrument_class_aggregation,
            cardinality_limit=stream._cardinality_limit,
            reset_on_collect=stream._reset_on_collect,
        )
        self._storage = storage
        self._listed = False
        self._exemplars = exemplars
        self._bounds: tuple[float, ...] = stream._aggregation._boundaries  # type: ignore[attr-defined]
        self._buckets = len(self._bounds) + 1
        self._sets: dict[_HashedAttributes, _Point] = {}
        self._by_items: dict[str, _Point] = {}  # by attributes_key(): a str caches its hash, a tuple does not
        self.recorder: Record = self._native() or self.record_items
        """What ``Metrics`` records with: :meth:`record_items`, in C when the extension ``_metric_add`` is in use."""

    def _native(self) -> Record | None:
        """``_metric_add``'s ``Recorder`` of this histogram (it calls :meth:`record_items` for whatever it
        declines: another exemplar filter or span, the first record, an amount it refuses); None without it."""
        if NATIVE_RECORDER is None:
            return None
        try:
            return NATIVE_RECORDER(
                self, self.record_items, self._lock, self._bounds, self._exemplars, _Point, LeanSpan, VARIABLE,
                Context, _SPAN_KEY, globals(),
            )  # fmt: skip
        except TypeError:  # bounds not floats, or slots of another shape: recorded in Python
            return None

    def record(self, amount: float, attributes: Attrs, /) -> None:
        self.recorder(amount, attributes, attributes_key(attributes))

    def record_items(self, amount: float, attributes: Attrs, key: str, /) -> None:
        """``record``, given ``attributes_key(attributes)`` as well (``Metrics`` keeps it made).

        One call on the usual paths (no exemplar, or one under a sampled lean span, as a traced
        connection's upstream attempt): a record is three per connection. The reference of
        :attr:`recorder`'s C path, which does the same on those paths (and calls this on every other).
        """
        if not 0 <= amount < _INF:  # NaN too
            self._refuse(amount)
            return
        ids: SpanContext | None = None  # offered as the bucket's exemplar with these ids (None: not offered)
        if self._exemplars:
            found = get_current().get(_SPAN_KEY)  # get_current_span(), without its calls (a lean span first)
            if type(found) is LeanSpan and found._context[3] & _SAMPLED:  # the usual one: read inline
                ids = found._context
            elif found is not None or self._exemplars != _TRACE_BASED:  # else: no span, no exemplar
                self._add(amount, attributes, key, *_offered(self._exemplar_span(found)))
                return
        if not self._listed:
            self._list()  # before taking our lock: the storage's collect holds its lock, then ours
        index = bisect_left(self._bounds, amount)
        lock = self._lock
        lock.acquire()  # not ``with``: its __enter__/__exit__ lookups and calls cost a third of a record
        try:
            point = self._by_items.get(key) or self._point(key, attributes)
            point.counts[index] += 1
            point.sum += amount
            if amount < point.min:
                point.min = amount
            if amount > point.max:
                point.max = amount
            if ids is not None:  # as _add's offer, inline
                point.exemplars[index] = (amount, time_ns(), attributes, ids)
        finally:
            lock.release()

    def _exemplar_span(self, found: object) -> Span | None:
        """The span an exemplar is offered with under the filter, for the current context's span ``found``
        (None: no exemplar; ``INVALID_SPAN``: one without ids)."""
        if found is None:
            return None if self._exemplars == _TRACE_BASED else INVALID_SPAN
        if type(found) is LeanSpan:  # its SpanContext is a tuple: (trace id, span id, remote, flags, ...)
            return found if self._exemplars != _TRACE_BASED or found._context[3] & _SAMPLED else None
        span = found if isinstance(found, Span) else INVALID_SPAN
        if self._exemplars == _TRACE_BASED and (
            span is INVALID_SPAN or not span.get_span_context().trace_flags & TraceFlags.SAMPLED
        ):
            return None
        return span

    def consume_measurement(self, measurement: Measurement, should_sample_exemplar: bool = True) -> None:
        # Only when something records through the SDK's instrument itself (the gateway records through this).
        attributes = dict(measurement.attributes or {})
        span = get_current_span(measurement.context) if should_sample_exemplar else None
        self._add(measurement.value, attributes, attributes_key(attributes), *_offered(span))

    def _add(self, amount: float, attributes: _Attributes, key: str, offered: bool, ids: SpanContext | None) -> None:
        """Count ``amount``; ``offered``: it is the bucket's exemplar, with ``ids`` (a SpanContext) or none."""
        if not self._listed:
            self._list()  # before taking our lock: the storage's collect holds its lock, then ours
        index = bisect_left(self._bounds, amount)
        lock = self._lock
        lock.acquire()  # not ``with`` (as record_items): a traced connection's connect record comes here
        try:
            point = self._by_items.get(key) or self._point(key, attributes)
            point.counts[index] += 1
            point.sum += amount
            if amount < point.min:
                point.min = amount
            if amount > point.max:
                point.max = amount
            if offered:
                if ids is None and (earlier := point.exemplars.get(index)) is not None:
                    ids = earlier[3]  # no span now: the bucket keeps an earlier offer's ids, as the SDK's
                point.exemplars[index] = (amount, time_ns(), attributes, ids)
        finally:
            lock.release()

    def _list(self) -> None:
        """Stand where the SDK's stream for this instrument would, at its first record (the SDK's order)."""
        storage = self._storage
        with storage._lock:
            streams = storage._instrument_view_instrument_matches.setdefault(self._instrument, [self])
            if self not in streams:  # the SDK instrument recorded into before: keep both, lose nothing
                logger.warning("%s was recorded through the SDK too: exported twice", self._name)
                streams.append(self)
        self._listed = True

    def _point(self, attributes_key: str, attributes: _Attributes) -> _Point:
        """The set of a new attributes key (with our lock held): the SDK's set, its limit and overflow."""
        key = _hash_attributes(dict(attributes))
        point = self._sets.get(key)
        if point is None:
            if len(self._sets) >= self._cardinality_limit:
                key = _OVERFLOW_KEY
                point = self._sets.get(key)
            if point is None:
                start = self._previous_collection_start_nanos or time_ns()
                point_attributes = dict(_OVERFLOW_ATTRIBUTES) if key is _OVERFLOW_KEY else dict(attributes)
                point = self._sets[key] = _Point(point_attributes, start, self._buckets)
        # Not the overflow set (past the limit, new sets must not grow this cache), and only strings and
        # integers but 0 and 1, as the gateway's (another type's value may equal one: 1, True, 1.0).
        if key is not _OVERFLOW_KEY and all(
            type(value) is str or (type(value) is int and value not in (0, 1)) for value in attributes.values()
        ):
            self._by_items[attributes_key] = point
        return point

    def collect(
        self, collection_aggregation_temporality: AggregationTemporality, collection_start_nanos: int
    ) -> Sequence[HistogramDataPoint] | None:
        delta = collection_aggregation_temporality is AggregationTemporality.DELTA
        with self._lock:
            points = list(self._sets.values())
            if self._reset_on_collect and delta:
                self._sets, self._by_items = {}, {}
                self._previous_collection_start_nanos = collection_start_nanos
            periods = []
            for point in points:
                periods.append((point, point.counts, point.sum, point.min, point.max, point.exemplars))
                point.counts, point.sum, point.min, point.max = [0] * self._buckets, 0, math.inf, -math.inf
                point.exemplars = {}
        data_points = []
        for point, counts, sum_, min_, max_, slots in periods:
            exemplars = _exemplars(slots, point.attributes)
            if delta:
                start, point.previous = point.previous, collection_start_nanos
                if not any(counts):
                    continue  # nothing recorded: no point, as the SDK's
                data_points.append(HistogramDataPoint(
                    attributes=point.attributes, exemplars=exemplars, start_time_unix_nano=start,
                    time_unix_nano=collection_start_nanos, count=sum(counts), sum=sum_, bucket_counts=tuple(counts),
                    explicit_bounds=self._bounds, min=min_, max=max_,
                ))  # fmt: skip
                continue
            point.total_counts = [value + total for value, total in zip(counts, point.total_counts, strict=True)]
            point.total_min = min(min_, point.total_min)
            point.total_max = max(max_, point.total_max)
            point.total_sum = sum_ + point.total_sum  # this order: float sums as the SDK's
            data_points.append(HistogramDataPoint(
                attributes=point.attributes, exemplars=exemplars, start_time_unix_nano=point.start,
                time_unix_nano=collection_start_nanos, count=sum(point.total_counts), sum=point.total_sum,
                bucket_counts=tuple(point.total_counts), explicit_bounds=self._bounds, min=point.total_min,
                max=point.total_max,
            ))  # fmt: skip
        return data_points or None

    def _refuse(self, amount: float) -> None:
        if not math.isfinite(amount):
            logger.warning("Record amount %s is not finite on Histogram %s, ignoring measurement.", amount, self._name)
        else:
            logger.warning("Record amount must be non-negative on Histogram %s.", self._name)


def _exemplars(slots: dict[int, _Slot], point_attributes: _Attributes) -> list[Exemplar]:
    exemplars = []
    for index in sorted(slots):
        value, time, attributes, ids = slots[index]
        # The measurement's attributes that the point's lack: none but in the overflow set.
        filtered = {k: v for k, v in attributes.items() if k not in point_attributes} if attributes else None
        # A SpanContext is (trace id, span id, ...): no property calls.
        span_id, trace_id = (ids[1], ids[0]) if ids is not None else (None, None)
        exemplars.append(Exemplar(filtered, value, time, span_id, trace_id))
    return exemplars


__all__ = ["OwnHistogram", "OwnHistograms"]
