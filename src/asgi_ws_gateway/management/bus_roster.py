"""Which workers are on the management bus: a roster in Redis that each subscribed worker renews.

``PUBLISH`` counts the workers subscribed at that moment. One that lost Redis (cut off from it, or
subscribing again after a restart) is not counted, and the worker asking waited for no answer of its:
a connection it held was "not found" and a listing left it out, both said complete. The roster names
the workers that should answer: each renews its entry (``<prefix>:{mgmt}:workers``, a sorted set
scored by when the entry lapses) while subscribed, and removes it when it stops. An entry not renewed
for ``ttl`` seconds lapses: a worker that died without removing it.

A Redis that lost its data (restarted without persistence) lost the roster too, while the workers that
will renew it may still be subscribing again. So each worker also remembers the roster it read, tied
to the roster's epoch (``<prefix>:{mgmt}:workers:epoch``, a random id set once): under a new epoch the
entries it knew are kept until they lapse or are renewed. And a worker back on the bus after losing it
(:meth:`Roster.lost`, :meth:`Roster.rejoined`) waits ``ttl`` more for those it knew when it lost it: an
outage longer than ``ttl`` lapsed every entry, and the others may be a moment behind it in subscribing again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from ..redis_client import AnyRedis

ROSTER_READ = 1000
"""Most entries read at once: the roster is written by workers, but anything with Redis access can write it."""
WORKER_ID_MAX = 512
"""Characters of a worker id kept (``host:pid:hex``, the host at most 253)."""


class Roster:
    """This worker's entry in the roster, and the roster as this worker knows it."""

    def __init__(self, client: AnyRedis, *, prefix: str, worker: str, ttl: float) -> None:
        self.client = client
        self.worker = worker
        self.ttl = ttl
        self.key = f"{prefix}:{{mgmt}}:workers"
        self.epoch_key = f"{prefix}:{{mgmt}}:workers:epoch"
        self._epoch: str | None = None
        self._current: dict[str, float] = {}  # the roster as last read: worker -> when its entry lapses (POSIX s)
        self._inherited: dict[str, float] = {}  # entries of an earlier epoch, not renewed since
        self._at_loss: set[str] | None = None  # the workers known when this worker lost the bus

    async def renew(self) -> set[str]:
        """Write this worker's entry (it lapses in ``ttl`` s) and drop lapsed ones; returns the workers known."""
        now = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.epoch_key, uuid.uuid4().hex, nx=True)
            pipe.zadd(self.key, {self.worker: now + self.ttl})
            pipe.zremrangebyscore(self.key, "-inf", now)
            pipe.get(self.epoch_key)
            pipe.zrangebyscore(self.key, now, "+inf", start=0, num=ROSTER_READ, withscores=True)
            *_, epoch, entries = await pipe.execute()
        return self._known(epoch, entries, now)

    async def workers(self) -> set[str]:
        """The workers that should be on the bus: the roster, and those of an earlier epoch not lapsed."""
        now = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.epoch_key)
            pipe.zrangebyscore(self.key, now, "+inf", start=0, num=ROSTER_READ, withscores=True)
            epoch, entries = await pipe.execute()
        return self._known(epoch, entries, now)

    def heard(self, workers: Iterable[str]) -> None:
        """Workers that just answered a command are on the bus, entry or not yet."""
        until = time.time() + self.ttl
        for worker in workers:
            self._current.setdefault(worker[:WORKER_ID_MAX], until)

    def lost(self) -> None:
        """This worker lost the bus: it remembers whom it knew then (their entries may lapse meanwhile)."""
        if self._at_loss is None:
            self._at_loss = set(self._current.keys() | self._inherited.keys())

    def rejoined(self) -> None:
        """This worker is on the bus again: the workers it knew get ``ttl`` s from now to renew their entries."""
        until = time.time() + self.ttl
        known = (self._at_loss or set()) | self._current.keys() | self._inherited.keys()
        self._inherited, self._current, self._at_loss = dict.fromkeys(known, until), {}, None

    async def leave(self) -> None:
        await self.client.zrem(self.key, self.worker)

    def _known(self, epoch: Any, entries: Any, now: float) -> set[str]:
        if epoch is None or epoch != self._epoch:  # the roster was lost (or is new): keep what was known
            self._inherited.update(self._current)
            self._epoch = epoch
        self._current = {str(worker)[:WORKER_ID_MAX]: float(until) for worker, until in entries}
        self._inherited = {
            worker: until for worker, until in self._inherited.items() if until > now and worker not in self._current
        }
        return self._current.keys() | self._inherited.keys() | (self._at_loss or set())  # off the bus: as then


__all__ = ["ROSTER_READ", "WORKER_ID_MAX", "Roster"]
