"""Time series of the gateway's own counters, for the console's charts (``GET /metrics/series``).

Each worker's :class:`Sampler` reads the counters (:meth:`Metrics.counts`) every ``interval``
seconds, at wall-clock multiples of the interval so that the samples of different workers and
hosts fall in the same slots, and keeps ``window`` seconds of them: memory is bounded by
``window / interval`` samples of at most ``max_series`` values. Each family of series (``active``,
``closes``, ...) has its own share of those values, so thousands of close codes cannot push the
handshakes out: a family with more series than its share keeps its largest and adds the rest up in
one ``other`` series per API. :func:`merge` adds up the samples
the workers answered with, slot by slot; a slot no worker sampled (the gateway was down) is
``null``, which is how the console shows a restart's gap.

Values are the counters' running totals (``active`` is a gauge): a chart takes differences for a
rate, and a total that went down means the worker restarted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str]
"""(series, api, label), as :meth:`~asgi_ws_gateway.telemetry.metrics.Metrics.counts` keys them."""
Reading = Callable[[], dict[SeriesKey, int]]
Sample = tuple[float, list[tuple[str, str, str, int]]]
"""(slot time in Unix seconds, [(series, api, label, value), ...]): JSON-ready (lists, not dicts)."""

FAMILIES = ("active", "handshakes", "messages", "bytes", "refusals", "upstream_failures", "closes")
"""The series :meth:`~asgi_ws_gateway.telemetry.metrics.Metrics.counts` reports; each gets an equal share."""
OTHER = "other"
"""The label of the series that adds up a family's smallest series, once it has more than its share."""


def bound(counts: dict[SeriesKey, int], max_series: int) -> tuple[dict[SeriesKey, int], dict[str, int]]:
    """At most ``max_series`` values, each family of series within its share; also each cut family's size.

    A family's share is ``max_series`` divided by the number of families (at least the known seven, so
    one family's share does not shrink as the others appear). A family with more series keeps its
    largest running totals and adds up the rest in one ``other`` series per API (one over every API,
    api ``""``, when those would take more than half the share). A series can move in or out of ``other`` as totals
    overtake one another: ``other`` then goes down once, which the console shows as no rate for that step.
    """
    families: dict[str, list[tuple[SeriesKey, int]]] = defaultdict(list)
    for key, value in counts.items():
        families[key[0]].append((key, value))
    share = max(1, max_series // max(len(FAMILIES), len(families)))
    kept: dict[SeriesKey, int] = {}
    cut: dict[str, int] = {}
    for family, items in families.items():
        if len(items) <= share:
            kept.update(items)
            continue
        cut[family] = len(items)
        ranked = sorted(items, key=lambda item: (-item[1], item[0]))
        # Room for one `other` per API among the folded ones: apis[i] is how many APIs ranked[i:] spans.
        apis, seen = [0] * (len(ranked) + 1), set()
        for i in range(len(ranked) - 1, -1, -1):
            seen.add(ranked[i][0][1])
            apis[i] = len(seen)
        keep = share - 1
        while keep > 0 and keep + apis[keep] > share:
            keep -= 1
        per_api = keep + apis[keep] <= share and apis[keep] <= max(1, share // 2)
        if not per_api:  # the others would crowd out the kept series: one `other` over every API
            keep = share - 1
        kept.update(ranked[:keep])
        for (name, api, _), value in ranked[keep:]:
            other = (name, api if per_api else "", OTHER)
            kept[other] = kept.get(other, 0) + value
    return kept, cut


class Sampler:
    """Samples ``read()`` every ``interval`` seconds and keeps the last ``window`` seconds.

    Args:
        read: returns the counters now (``run`` calls it in a worker thread: it must be thread-safe).
        interval: seconds between samples (default 5).
        window: seconds of samples kept (default 900: 15 minutes).
        max_series: values kept per sample (default 2000), shared equally by the families of series;
            a family with more (thousands of APIs or close codes) keeps its largest and adds up the
            rest as ``other`` (see :func:`bound`), with one warning per family, so that memory stays
            bounded and no family crowds out another.
        clock: the wall clock in Unix seconds (injected by tests).
    """

    def __init__(
        self,
        read: Reading,
        *,
        interval: float = 5.0,
        window: float = 900.0,
        max_series: int = 2000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0 or window < interval:
            raise ValueError("interval: must be positive and at most window")
        self.read = read
        self.interval = interval
        self.window = window
        self.max_series = max_series
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=math.ceil(window / interval))
        self._warned: set[str] = set()
        self._reading: asyncio.Future[list[tuple[str, str, str, int]]] | None = None

    def slot(self, at: float) -> float:
        """The sampling slot ``at`` falls in (a multiple of the interval)."""
        # The tolerance: the run loop wakes at a slot's start, and a float a hair below it must not
        # land in the previous slot (replacing that sample and leaving this slot a gap).
        return round(math.floor(at / self.interval + 1e-6) * self.interval, 6)  # equal across workers

    def sample(self) -> None:
        """Take one sample now (a second one in the same slot replaces the first), on this thread."""
        at = self.slot(self._clock())
        self._keep(at, self._bounded())

    async def sample_soon(self) -> None:
        """Take one sample now, reading in a worker thread (as :meth:`run` does).

        Callers at the same time share one read: each console poll asks every worker to sample, and
        reading adds up every open connection (0.8 s at 100,000), which the event loop must not wait
        out, nor run once per open tab. Cancelling is safe: the shared read completes for the others.
        """
        if self._reading is None or self._reading.done():
            at = self.slot(self._clock())
            reading = asyncio.ensure_future(asyncio.to_thread(self._bounded))
            self._reading = reading
            reading.add_done_callback(lambda done: self._settle(at, done))
        await asyncio.shield(self._reading)

    def _settle(self, at: float, reading: asyncio.Future[list[tuple[str, str, str, int]]]) -> None:
        if not reading.cancelled() and reading.exception() is None:
            self._keep(at, reading.result())

    def _bounded(self) -> list[tuple[str, str, str, int]]:
        """The counters now, bounded per family and sorted: the part of sampling that may take long."""
        kept, cut = bound(self.read(), self.max_series)
        for family, count in cut.items():
            if family not in self._warned:  # set.add from a thread: atomic under the GIL, and racing is harmless
                self._warned.add(family)
                logger.warning(
                    "console series: %d %r series, keeping the largest and adding up the rest as %r",
                    count,
                    family,
                    OTHER,
                )
        return [(s, api, label, value) for (s, api, label), value in sorted(kept.items())]

    def _keep(self, at: float, values: list[tuple[str, str, str, int]]) -> None:
        if self._samples and self._samples[-1][0] > at:
            return  # a slower read that started before the newest sample: that one is newer
        if self._samples and self._samples[-1][0] == at:
            self._samples.pop()
        self._samples.append((at, values))

    def samples(self, since: float | None = None) -> list[Sample]:
        """The samples kept, oldest first (only those after ``since`` when given)."""
        return [s for s in self._samples if since is None or s[0] > since]

    async def run(self) -> None:
        """Sample every interval until cancelled (cancelling is the way to stop it, and safe)."""
        while True:
            try:
                # Read in a worker thread: adding up every open connection takes 0.2 s at 100,000,
                # which the event loop (every relay) would wait out every interval.
                at = self.slot(self._clock())
                self._keep(at, await asyncio.to_thread(self._bounded))
            except Exception:  # a counter read must never stop the charts for good
                logger.exception("console series: sampling failed")
            # Wake a little past the next slot's start: the loop's clock is not the wall clock, and
            # waking a hair early would sample the current slot twice and leave the next one a gap.
            now = self._clock()
            await asyncio.sleep(self.slot(now) + self.interval - now + self.interval / 50)


def merge(
    answers: Iterable[list[Any]],
    *,
    interval: float,
    window: float,
    api: str | None = None,
    since: float | None = None,
) -> dict[str, Any]:
    """The workers' samples added up slot by slot, as ``{"times": [...], "series": [...]}``.

    ``times`` runs over every slot from the first sampled to the last; ``series`` is a list of
    ``{"name", "api", "label", "values"}`` with one value per time, ``null`` where no worker sampled.
    """
    # Slots are keyed by their index (time / interval): Unix times near 2e9 with a fractional
    # interval do not survive float arithmetic exactly, indices do.
    slots: dict[int, dict[SeriesKey, int]] = {}
    answered = [samples for samples in answers if samples]
    # Each worker samples as it answers; a request that straddles a slot boundary would leave the
    # newest slot with only some workers' numbers (a false dip): end where every worker has sampled.
    # (Only a worker one slot behind counts: one further behind has a skewed clock, not a straddle.)
    lasts = {round(float(samples[-1][0]) / interval) for samples in answered}
    end = max(lasts, default=0)
    end = end - 1 if end - 1 in lasts else end
    for samples in answered:
        for at, values in samples:
            if (since is not None and at <= since) or round(float(at) / interval) > end:
                continue
            slot = slots.setdefault(round(float(at) / interval), {})
            for name, series_api, label, value in values:
                if api is None or series_api == api:
                    key = (str(name), str(series_api), str(label))
                    slot[key] = slot.get(key, 0) + int(value)
    if not slots:
        return {"times": [], "series": []}
    last = max(slots)
    first = max(min(slots), last - round(window / interval))  # a worker with a skewed clock must not stretch the axis
    indices = range(first, last + 1)
    keys = sorted({key for index, values in slots.items() if index >= first for key in values})
    series = []
    for key in keys:
        points: list[int | None] = []
        for index in indices:
            sampled = slots.get(index)
            points.append(None if sampled is None else sampled.get(key, 0))
        series.append({"name": key[0], "api": key[1], "label": key[2], "values": points})
    times = [round(index * interval, 6) for index in indices]
    return {"times": times, "series": series}


__all__ = ["FAMILIES", "OTHER", "Sample", "Sampler", "SeriesKey", "bound", "merge"]
