"""The gateway's metric instruments (names and attributes: :mod:`.names`).

Only the three duration histograms are recorded as events happen (there is no observable
histogram): into the SDK's instruments, or, with the gateway's own meter provider, into its own
aggregation of them (:mod:`.histograms`; the factory ``Telemetry`` passes). Every counter is
observable: the gateway counts in plain Python (a dict increment per handshake or close; integer
increments in the relay's ``RelayStats`` per message) and the metric reader's callbacks read those
counts when it collects (open connections' live counters plus the totals of closed ones). So the
relay makes no OpenTelemetry call per message, the counts of long-lived connections are live, and
a connection costs three histogram records. One collection adds the open connections up once, outside
the lock the event loop takes to open and close them.

A closed connection's counters are added to its API's totals at its close, and nothing of it is kept:
closed connections held for a batched fold (256) carried their objects into the collector's older
generations (in process, 143 young, 12 middle and one full collection per 20,000 connections; none
now). Handshake and close counts live in the series they are counted with (``_Series.count``): an
increment is an attribute write under the lock, not two hashes of the attribute tuple.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ..config.served_file import file_changed
from ..handshake.capacity import SHED
from ..handshake.server_refusals import SERVER_REFUSALS
from ..log_losses import DROPPED_LINES
from ..messages.action_keys import kept_reason
from ..policies.jwks_failures import JWKS_FAILURES
from ..state.failures import STORE_FAILURES
from ..upstream.resolver import RESOLVER
from . import names as n
from .export_losses import EXPORT_LOSSES
from .metric_totals import ApiTotals, add_totals, size_classes

if TYPE_CHECKING:
    from ..relay.stats import RelayStats

Attrs = dict[str, str | int]
AttrsKey = tuple[tuple[str, str | int], ...]


class DurationHistogram(Protocol):
    """What a duration is recorded into: the SDK's ``Histogram`` or the gateway's own (:mod:`.histograms`)."""

    def record(self, amount: float, attributes: Attrs, /) -> None: ...


Record = Callable[[float, Attrs, str], None]
"""Records a duration with its attributes and their :func:`attributes_key` (the gateway's histograms key by it)."""


def attributes_key(attributes: Mapping[str, object]) -> str:
    """What the gateway's histograms find an attribute set's point by: its items' ``repr``, one string per
    set of string and integer values; made once per series (a string caches its hash, a tuple does not)."""
    return repr(tuple(attributes.items()))


def _recorder(histogram: DurationHistogram) -> Record:
    keyed: Record | None = getattr(histogram, "recorder", None)  # the gateway's own histogram (maybe in C)
    if keyed is not None:
        return keyed
    return lambda amount, attributes, items: histogram.record(amount, attributes)


class _Series:
    """The attributes of one combination of a metric's bounded inputs, made once: the histogram's and
    the counter's, as dicts and as the item tuples the tallies and the gateway's histograms key by;
    and, for handshakes and closes, how many were counted with it (under ``Metrics``' lock)."""

    __slots__ = ("attributes", "base", "count", "count_items", "items", "key")

    def __init__(self, attributes: Attrs, counted: Attrs | None = None, base: Attrs | None = None) -> None:
        self.attributes = attributes
        self.base = base  # what it was made from, when keyed by its id: kept alive, so the id stays its own
        self.items: AttrsKey = tuple(attributes.items())
        self.count_items: AttrsKey = self.items if counted is None else tuple(counted.items())
        self.key = attributes_key(attributes)
        self.count = 0


_SERIES_LIMIT = 4096
"""Series kept per metric; past it (their inputs are bounded: API, outcome, status, error type, close code,
the peer-chosen numbers folded by :func:`.names.status_value` and :func:`.names.close_code_value`) the
cache starts again rather than grow."""


HistogramFactory = Callable[[Meter, n.Instrument], DurationHistogram]
"""Makes one duration histogram on a meter; the default is the SDK's (:func:`sdk_histogram`)."""


BackendCounts = Callable[[], Iterable[tuple[Mapping[str, str | int], int]]]
"""Each configured backend's metric attributes (``BackendInfo.metric``: its configuration's, never a URL a
handshake's values filled in) with its connections now; read on the metric reader's thread."""


MeteredConnection = tuple[str, "RelayStats"]
"""An open connection, as :meth:`Metrics.opened` returns it: its API's name and its counters (a plain
tuple: made in C, no ``__init__`` call per connection)."""


def _observe_shed(options: CallbackOptions) -> Iterator[Observation]:
    yield Observation(SHED.value)  # the process's: every connection, whichever app it was for


def _observe_log_dropped(options: CallbackOptions) -> Iterator[Observation]:
    yield Observation(DROPPED_LINES.value)  # the process's: every handler of its log, whichever stream


def _observe_telemetry_dropped(options: CallbackOptions) -> Iterator[Observation]:
    # The process's own exporters; every series from 0 (EXPORT_LOSSES.counts), as for JWKS failures below.
    for signal, reason, count in EXPORT_LOSSES.counts():
        yield Observation(count, {n.TELEMETRY_SIGNAL: signal, n.ERROR_TYPE: reason})


def _observe_config_file_changed(options: CallbackOptions) -> Iterator[Observation]:
    yield Observation(int(file_changed()))  # the process's file: every app it serves was read from it


def _observe_jwks_failures(options: CallbackOptions) -> Iterator[Observation]:
    # Every key set of the process; each reason observed from the start (0), so that an alert on an increase
    # sees the first failure (a series that appears with 1 shows no increase to rate() or increase()).
    for error in ("timeout", "fetch", "invalid"):
        yield Observation(JWKS_FAILURES[error], {n.ERROR_TYPE: error})


def _observe_address_failures(options: CallbackOptions) -> Iterator[Observation]:
    # The process's resolver, shared by every API; its reasons are a bounded set (resolver.failure_reason).
    for reason, count in list(RESOLVER.address_failures.items()):
        yield Observation(count, {n.ERROR_TYPE: reason})


def _observe_store_failures(options: CallbackOptions) -> Iterator[Observation]:
    # Every store of the process (stores are shared by APIs); the attributes are a bounded set (state.failures).
    for (system, operation, error), count in list(STORE_FAILURES.items()):
        yield Observation(count, {n.DB_SYSTEM: system, n.DB_OPERATION: operation, n.ERROR_TYPE: error})


def _observe_server_refusals(options: CallbackOptions) -> Iterator[Observation]:
    # The process's server (every app it serves); the statuses are its own answers, a fixed set.
    for status, count in list(SERVER_REFUSALS.items()):
        yield Observation(count, {n.HTTP_STATUS: n.status_value(status)})


def _backend_observer(backends: BackendCounts) -> Callable[[CallbackOptions], Iterator[Observation]]:
    def observe(options: CallbackOptions) -> Iterator[Observation]:
        # Every backend, at 0 too: a backend's series is there before its first connection and after its last.
        for attributes, connections in backends():
            yield Observation(connections, dict(attributes))

    return observe


_DIRECTIONS = ((n.TO_UPSTREAM, "text"), (n.TO_UPSTREAM, "binary"), (n.TO_CLIENT, "text"), (n.TO_CLIENT, "binary"))


class Metrics:
    """Creates the instruments on ``meter`` and records into them."""

    def __init__(
        self,
        meter: Meter,
        apis: Iterable[tuple[str, str]],
        histogram: HistogramFactory | None = None,
        backends: BackendCounts | None = None,
    ) -> None:
        self.base: dict[str, Attrs] = {name: {n.API: name, n.HTTP_ROUTE: route, n.PROTOCOL_NAME: n.PROTOCOL}
                                       for name, route in apis}  # fmt: skip
        self._lock = threading.Lock()  # observable callbacks run on the metric reader's thread
        self._live: dict[int, MeteredConnection] = {}  # by id(stats): the tuple is not hashable
        self._closed: defaultdict[str, ApiTotals] = defaultdict(ApiTotals)
        self._shared: tuple[dict[str, ApiTotals] | None, set[str]] = (None, set())  # see _collected
        self._tallies: dict[str, Tally[AttrsKey]] = {}
        histogram = histogram or sdk_histogram
        self.handshake_duration = histogram(meter, n.HANDSHAKE_DURATION)
        self.connect_duration = histogram(meter, n.UPSTREAM_CONNECT_DURATION)
        self.connection_duration = histogram(meter, n.CONNECTION_DURATION_METRIC)
        self._record_handshake = _recorder(self.handshake_duration)
        self._record_connect = _recorder(self.connect_duration)
        self._record_connection = _recorder(self.connection_duration)
        # Per-event attributes, made once per combination of their inputs (see _Series).
        self._handshakes: dict[tuple[str, str, int | None, str | None], _Series] = {}
        self._attempts: dict[tuple[int, int | None, str | None], _Series] = {}
        self._closes: dict[tuple[str, str, int | str], _Series] = {}
        meter.create_observable_up_down_counter(
            n.ACTIVE_CONNECTIONS.name,
            [self._observe_active],
            n.ACTIVE_CONNECTIONS.unit,
            n.ACTIVE_CONNECTIONS.description,
        )
        if backends is not None:
            spec = n.UPSTREAM_CONNECTIONS
            observe = _backend_observer(backends)
            meter.create_observable_up_down_counter(spec.name, [observe], spec.unit, spec.description)
        spec = n.CONFIG_FILE_CHANGED
        meter.create_observable_up_down_counter(spec.name, [_observe_config_file_changed], spec.unit, spec.description)
        for spec, callback in (
            (n.MESSAGES, self._observe_messages),
            (n.IO, self._observe_io),
            (n.MESSAGE_SIZES, self._observe_sizes),
            (n.POLICY_ACTIONS, self._observe_actions),
            (n.CONNECTIONS_SHED, _observe_shed),
            (n.UPSTREAM_ADDRESS_FAILURES, _observe_address_failures),
            (n.STORE_FAILURES, _observe_store_failures),
            (n.SERVER_REFUSALS, _observe_server_refusals),
            (n.JWKS_FAILURES, _observe_jwks_failures),
            (n.LOG_DROPPED, _observe_log_dropped),
            (n.TELEMETRY_DROPPED, _observe_telemetry_dropped),
        ):
            meter.create_observable_counter(spec.name, [callback], spec.unit, spec.description)
        for spec in (n.HANDSHAKES, n.UPSTREAM_CONNECT_FAILURES, n.CONNECTION_CLOSES, n.POLICY_DENIALS,
                     n.POLICY_UNCHECKED, n.COOKIES_CHANGED):  # fmt: skip
            self._tallies[spec.name] = Tally()
            meter.create_observable_counter(spec.name, [self._observer(spec.name)], spec.unit, spec.description)
        # Handshakes and closes are counted in their series; the tally keeps those of series made again.
        self._handshake_tally = self._tallies[n.HANDSHAKES.name]
        self._close_tally = self._tallies[n.CONNECTION_CLOSES.name]

    def add_api(self, name: str, route: str) -> None:
        """Attributes for an API added or changed after start-up."""
        with self._lock:
            self.base[name] = {n.API: name, n.HTTP_ROUTE: route, n.PROTOCOL_NAME: n.PROTOCOL}
            _retire(self._handshakes, self._handshake_tally)  # made from the old route: made again
            _retire(self._closes, self._close_tally)
            self._handshakes, self._closes = {}, {}

    def _count(self, spec: n.Instrument, attrs: Attrs) -> None:
        with self._lock:
            self._tallies[spec.name][tuple(attrs.items())] += 1

    def _counts(self, name: str) -> list[tuple[AttrsKey, int]]:
        """Counter ``name``'s counts now (the lock held): its tally, and for handshakes and closes the
        counts of the series in use added to it."""
        tally = self._tallies[name]
        made: Mapping[Any, _Series] = (
            self._handshakes if name == n.HANDSHAKES.name else self._closes if name == n.CONNECTION_CLOSES.name else {}
        )
        if not made:
            return list(tally.items())
        counts = Tally(tally)
        for series in made.values():
            counts[series.count_items] += series.count
        return list(counts.items())

    def _observer(self, name: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            with self._lock:
                counts = self._counts(name)
            for key, value in counts:
                yield Observation(value, dict(key))

        return observe

    # -- once per handshake / attempt / connection ----------------------------------------------------

    def handshake(
        self,
        api: str,
        outcome: n.Outcome,
        status: int | None,
        error_type: str | None,
        policy: str | None,
        seconds: float,
    ) -> None:
        if outcome == "denied" and error_type is not None:  # a policy's reason: its words, maybe a client's
            error_type = kept_reason(f"handshake:{policy or '-'}", error_type)
        key = (api, outcome, status, error_type)
        lock = self._lock
        lock.acquire()  # found and counted under it: a series made again meanwhile loses no count
        try:  # (not ``with``: its __enter__/__exit__ lookups and calls cost as much as the rest)
            series = self._handshakes.get(key) or self._handshake_series(key)
            series.count += 1
        finally:
            lock.release()
        self._record_handshake(seconds, series.attributes, series.key)
        if policy is not None and status is not None:
            self._count(n.POLICY_DENIALS, {**self.base[api], n.POLICY: policy, n.HTTP_STATUS: n.status_value(status)})

    def _handshake_series(self, key: tuple[str, str, int | None, str | None]) -> _Series:
        api, outcome, status, error_type = key
        attrs: Attrs = {**self.base[api], n.OUTCOME: outcome}
        if status is not None:
            attrs[n.HTTP_STATUS] = n.status_value(status)
        if error_type is not None:
            attrs[n.ERROR_TYPE] = error_type
        return _remember(self._handshakes, key, _Series(attrs), self._handshake_tally)

    def unchecked(self, api: str, policy: str) -> None:
        """``policy`` admitted a handshake of ``api`` without checking it (its store failed, fail-open)."""
        self._count(n.POLICY_UNCHECKED, {**self.base[api], n.POLICY: policy})

    def upstream_cookies(self, api: str, reasons: Iterable[str]) -> None:
        """An upstream's answer on ``api`` had Set-Cookie headers dropped or narrowed: one ``reason`` each
        (a header both narrowed ways counts under both)."""
        base = self.base[api]
        with self._lock:
            tally = self._tallies[n.COOKIES_CHANGED.name]
            for reason in reasons:
                tally[tuple({**base, n.COOKIE_REASON: reason}.items())] += 1

    def upstream_attempt(self, backend: Attrs, seconds: float, error_type: str | None, status: int | None) -> None:
        """One attempt on ``backend`` (a backend's metric attributes: the same dict for all its attempts)."""
        key = (id(backend), status, error_type)  # the series keeps ``backend``: its id names no other
        series = self._attempts.get(key)
        if series is None:
            attrs = dict(backend)
            if status is not None:
                attrs[n.HTTP_STATUS] = n.status_value(status)  # an upstream's refusal: its choice
            if error_type is not None:
                attrs[n.ERROR_TYPE] = error_type
            series = _remember(self._attempts, key, _Series(attrs, base=backend))
        if error_type is not None:
            with self._lock:
                self._tallies[n.UPSTREAM_CONNECT_FAILURES.name][series.items] += 1
        self._record_connect(seconds, series.attributes, series.key)

    def opened(self, api: str, stats: RelayStats) -> MeteredConnection:
        live = (api, stats)
        self._live[id(stats)] = live  # one store, atomic under the GIL: no lock (the reader copies in C)
        return live

    def closed(self, live: MeteredConnection, side: str, code: int, seconds: float) -> None:
        """``live`` closed: ``side`` closed first with ``code``, counted by :func:`.names.close_code_value`
        (a peer's choice: one series per code it sends would grow without bound)."""
        api, stats = live
        lock = self._lock
        lock.acquire()
        try:
            found = self._live.pop(id(stats), None)  # one lookup and one id() where there were two of each
            if found is not live:  # closed already
                if found is not None:  # another open connection's, its counters at the address ours had: kept
                    self._live[id(stats)] = found
                return
            add_totals(self._closed[api], stats)
            key = (api, side, code)  # the code as sent: its series names its folded value
            series = self._closes.get(key) or self._close_series(key)
            series.count += 1
        finally:
            lock.release()
        self._record_connection(seconds, series.attributes, series.key)

    def _close_series(self, key: tuple[str, str, int]) -> _Series:
        api, side, code = key
        attrs: Attrs = {**self.base[api], n.CLOSE_SIDE: side}
        counted = {**attrs, n.CLOSE_CODE: n.close_code_value(code)}
        return _remember(self._closes, key, _Series(attrs, counted), self._close_tally)

    # -- read by the management console's sampler -----------------------------------------------------

    def counts(self) -> dict[tuple[str, str, str], int]:
        """The counters now, as ``(series, api, label) -> value``: the numbers the instruments report.

        Series: ``active`` (label ``""``), ``handshakes`` (``accepted`` or the refusal status),
        ``messages``/``bytes`` (``in``: client to upstream, ``out``), ``refusals`` (the policy),
        ``upstream_failures`` (the backend label, never with credentials) and ``closes`` (the code).
        """
        found: Tally[tuple[str, str, str]] = Tally()
        for api, totals in self._snapshot().items():
            messages_in, _, messages_out, _, bytes_in, _, bytes_out, _ = totals.counts
            found["active", api, ""] += totals.open
            found["messages", api, "in"] += messages_in
            found["messages", api, "out"] += messages_out
            found["bytes", api, "in"] += bytes_in
            found["bytes", api, "out"] += bytes_out
        with self._lock:
            tallies = {name: self._counts(name) for name in self._tallies}
        for series, spec, label in _TALLIED:
            for key, value in tallies[spec.name]:
                attrs = dict(key)
                if series == "handshakes" and attrs.get(n.OUTCOME) not in ("accepted", "denied", "error"):
                    continue  # abandoned: the client left, nothing was answered
                name = attrs.get(label) if series != "handshakes" or attrs[n.OUTCOME] != "accepted" else "accepted"
                found[series, str(attrs.get(n.API, "")), str(name)] += value
        return dict(found)

    # -- observed at collection ----------------------------------------------------------------------

    def _snapshot(self) -> dict[str, ApiTotals]:
        """The totals now: closed connections' and every open one's. The lock covers only the copies:
        the event loop, which takes it to open and close connections, does not wait for the adding up
        (about 0.2 s for 100,000 open connections)."""
        with self._lock:
            totals = {api: t.copy() for api, t in self._closed.items()}
            live = list(self._live.values())
        for api, stats in live:  # one that closes meanwhile was copied as open: counted once
            entry = totals.get(api)
            if entry is None:
                entry = totals[api] = ApiTotals()
            add_totals(entry, stats)
            entry.open += 1
        return totals

    def _collected(self, observer: str) -> dict[str, ApiTotals]:
        """The snapshot of the collection in progress, shared by its five observers (each added up
        every open connection again): an observer that already read the current one starts the next."""
        totals, readers = self._shared
        if totals is None or observer in readers:
            totals = self._snapshot()
            self._shared = (totals, {observer})
        else:
            readers.add(observer)
        return totals

    def _observe_active(self, options: CallbackOptions) -> Iterator[Observation]:
        for api, totals in self._collected("active").items():
            yield Observation(totals.open, self.base[api])

    def _observe_messages(self, options: CallbackOptions) -> Iterator[Observation]:
        for api, totals in self._collected("messages").items():
            for (direction, kind), value in zip(_DIRECTIONS, totals.messages, strict=True):
                yield Observation(value, {**self.base[api], n.DIRECTION: direction, n.MESSAGE_TYPE: kind})

    def _observe_io(self, options: CallbackOptions) -> Iterator[Observation]:
        for api, totals in self._collected("io").items():
            for (direction, kind), value in zip(_DIRECTIONS, totals.bytes, strict=True):
                yield Observation(value, {**self.base[api], n.DIRECTION: direction, n.MESSAGE_TYPE: kind})

    def _observe_sizes(self, options: CallbackOptions) -> Iterator[Observation]:
        for api, totals in self._collected("sizes").items():
            for direction, slots in ((n.TO_UPSTREAM, totals.slots_in), (n.TO_CLIENT, totals.slots_out)):
                for size_class, value in zip(n.SIZE_CLASSES, size_classes(slots), strict=True):
                    if value:
                        yield Observation(value, {**self.base[api], n.DIRECTION: direction, n.SIZE_CLASS: size_class})

    def _observe_actions(self, options: CallbackOptions) -> Iterator[Observation]:
        for api, totals in self._collected("actions").items():
            for (policy, action, direction, reason), value in totals.actions.items():
                where = _POLICY_DIRECTIONS.get(direction, direction)
                attrs = {**self.base[api], n.POLICY: policy, n.POLICY_ACTION: action, n.DIRECTION: where,
                         n.POLICY_REASON: reason}  # fmt: skip
                yield Observation(value, attrs)


def _remember(made: dict[Any, _Series], key: Any, series: _Series, tally: Tally[AttrsKey] | None = None) -> _Series:
    if len(made) >= _SERIES_LIMIT:
        if tally is not None:
            _retire(made, tally)
        made.clear()
    made[key] = series
    return series


def _retire(made: dict[Any, _Series], tally: Tally[AttrsKey]) -> None:
    """Keep the counts of series about to be made again in ``tally`` (the lock held)."""
    for series in made.values():
        tally[series.count_items] += series.count


_TALLIED = (
    ("handshakes", n.HANDSHAKES, n.HTTP_STATUS),
    ("refusals", n.POLICY_DENIALS, n.POLICY),
    ("upstream_failures", n.UPSTREAM_CONNECT_FAILURES, n.BACKEND),
    ("closes", n.CONNECTION_CLOSES, n.CLOSE_CODE),
)
_POLICY_DIRECTIONS = {"inbound": n.TO_UPSTREAM, "outbound": n.TO_CLIENT}


def sdk_histogram(meter: Meter, spec: n.Instrument) -> DurationHistogram:
    return meter.create_histogram(
        spec.name, spec.unit, spec.description, explicit_bucket_boundaries_advisory=spec.buckets
    )


__all__ = ["BackendCounts", "DurationHistogram", "HistogramFactory", "MeteredConnection", "Metrics", "sdk_histogram"]
