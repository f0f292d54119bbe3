"""What the live console reads from every worker: the counters' time series and the recent refusals.

Watching a gateway makes it keep its metric counters even without a meter provider
(:meth:`WebSocketGateway.count_locally`). Each worker samples its own (:class:`~.series.Sampler`)
and answers the bus's ``series`` and ``refusals`` commands; the worker serving the request adds
the answers up (:func:`~.series.merge`).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from ..middleware import WebSocketGateway
from .bus import Bus, Command
from .series import Sampler, SeriesKey, merge


class Watch:
    """The live console's view of ``gateway``, over every worker ``bus`` reaches.

    Args:
        interval: seconds between samples (default 5).
        window: seconds of samples kept per worker (default 900).
    """

    def __init__(self, gateway: WebSocketGateway, bus: Bus, *, interval: float = 5.0, window: float = 900.0) -> None:
        self.gateway = gateway
        self.bus = bus
        gateway.count_locally()
        self.sampler = Sampler(self._counts, interval=interval, window=window)

    def _counts(self) -> dict[SeriesKey, int]:
        metrics = self.gateway.telemetry.metrics  # re-read: a restarted gateway has new telemetry
        return metrics.counts() if metrics is not None else {}

    async def series(self, api: str | None = None, since: float | None = None) -> dict[str, Any]:
        """The counters' time series, added up over every worker that answered."""
        answers = await self.bus.gather({"op": "series", "since": since})
        interval, window = self.sampler.interval, self.sampler.window
        # In a worker thread: a full window of many series takes a while to add up (0.6 s at 2,000 series
        # x 180 slots), which every relay on this loop would wait out.
        samples = [reply.get("samples", []) for reply in answers.replies]
        found = await asyncio.to_thread(partial(merge, samples, interval=interval, window=window, api=api, since=since))
        workers: dict[str, Any] = {"answered": len(answers.replies), "expected": answers.expected}
        if answers.missing:  # on the bus's roster, no answer: their counts are not in these sums
            workers["missing"] = list(answers.missing)
        return {"interval": interval, "window": window, **found, "workers": workers}

    async def refusals(self, api: str | None = None, limit: int = 100) -> tuple[list[dict[str, Any]], int, int]:
        """The last ``limit`` refused handshakes over every worker, newest first; also answered, expected."""
        answers = await self.bus.gather({"op": "refusals", "api": api})
        found = [{**r, "worker": reply.get("worker", self.bus.worker)} for reply in answers.replies
                 for r in reply.get("refusals", [])]  # fmt: skip
        found.sort(key=lambda r: r["at"], reverse=True)
        return found[:limit], len(answers.replies), answers.expected

    async def answer(self, command: Command) -> Command:
        """This worker's answer to a ``series`` or ``refusals`` command from the bus."""
        if command.get("op") == "series":
            await self.sampler.sample_soon()  # the latest slot is now, not up to an interval ago
            since = command.get("since")
            return {"samples": self.sampler.samples(since if isinstance(since, int | float) else None)}
        api = command.get("api")
        return {"refusals": self.gateway.refusals.recent(api if isinstance(api, str) else None)}


__all__ = ["Watch"]
