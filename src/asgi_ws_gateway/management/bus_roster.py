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
(:meth:`Roster.lost`, :meth:`Roster.rejoined`) does not count the time it was off against those it knew:
each keeps what it had left when the bus was lost (an outage longer than ``ttl`` lapsed every entry, and
the others may be a moment behind it in subscribing again). Not ``ttl`` more each time: a bus lost and
back every few seconds kept a dead worker's entry for ever, and every close or send that found nothing
was a 503 naming it.

Every time is Redis's clock (``TIME``, read in the script that writes or reads the roster), never a
worker's: scored with each worker's own clock, a worker 60 s ahead kept an entry 60 s past its lapse
and dropped everyone else's at once as lapsed; one behind was dropped by the others at once. What a
worker remembers between two reads it dates by Redis's time at the last read plus its own monotonic
clock since.

Redis may refuse the roster's commands for good: an ACL granting the rest of what the gateway uses but
not ``TIME``, the sorted-set commands, ``EVALSHA`` or the roster's keys. :meth:`Roster.refusal` tells such
an answer, naming the command, from a failure that passes (a connection lost, a failover).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from redis.exceptions import AskError, ClusterDownError, ReadOnlyError, ResponseError, TryAgainError

from ..redis_client import AnyRedis

ROSTER_READ = 1000
"""Most entries read at once: the roster is written by workers, but anything with Redis access can write it."""
WORKER_ID_MAX = 512
"""Characters of a worker id kept (``host:pid:hex``, the host at most 253)."""
REFUSAL_MAX = 300
"""Characters of a refusal's text kept for the log."""

# Answers that pass as a failover or a busy server does: not a refusal. (Lost connections and LOADING
# are ConnectionErrors, not ResponseErrors.)
_PASSING = (ReadOnlyError, TryAgainError, ClusterDownError, AskError)
_PASSING_CODES = ("BUSY", "NOREPLICAS", "LOADING", "MASTERDOWN", "UNBLOCKED")
# A command a script was refused is named by the script and line only: "... script: <sha>, on @user_script:2."
_SCRIPT_LINE = re.compile(r"script: ([0-9a-f]{40}), on @user_script:(\d+)")
_CALL = re.compile(r"redis\.call\('([A-Z]+)'")

# KEYS: the roster, its epoch. Answers Redis's TIME (seconds, microseconds), the epoch and the entries
# not lapsed then (member, score, ...). _RENEW (ARGV: worker, a new epoch, ttl, most read) first writes
# this worker's entry, lapsing ttl s after Redis's now, and drops the lapsed ones.
_NOW = """
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
"""
_READ = """
local read = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[#ARGV]))
return {t[1], t[2], redis.call('GET', KEYS[2]), read}
"""
_RENEW = (
    _NOW
    + """redis.call('SET', KEYS[2], ARGV[2], 'NX')
redis.call('ZADD', KEYS[1], string.format('%.6f', tonumber(now) + tonumber(ARGV[3])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""
    + _READ
)
_WORKERS = _NOW + _READ  # ARGV: most read


class Roster:
    """This worker's entry in the roster, and the roster as this worker knows it."""

    def __init__(self, client: AnyRedis, *, prefix: str, worker: str, ttl: float) -> None:
        self.client = client
        self.worker = worker
        self.ttl = ttl
        self.key = f"{prefix}:{{mgmt}}:workers"
        self.epoch_key = f"{prefix}:{{mgmt}}:workers:epoch"
        self._epoch: str | None = None
        self._current: dict[str, float] = {}  # the roster as last read: worker -> when its entry lapses (Redis's clock)
        self._inherited: dict[str, float] = {}  # entries of an earlier epoch, not renewed since
        self._at_loss: dict[str, float] | None = None  # the workers known when this worker lost the bus
        self._lost_at: float | None = None  # Redis's time then (as this worker reckons it)
        self._read_at: tuple[float, float] | None = None  # Redis's time at the last read, and the monotonic then
        self._renew = client.register_script(_RENEW)
        self._read = client.register_script(_WORKERS)

    async def renew(self) -> set[str]:
        """Write this worker's entry (it lapses in ``ttl`` s) and drop lapsed ones; returns the workers known."""
        args: list[str | int] = [self.worker, uuid.uuid4().hex, repr(self.ttl), ROSTER_READ]
        return self._known(await self._renew(keys=[self.key, self.epoch_key], args=args))

    async def workers(self) -> set[str]:
        """The workers that should be on the bus: the roster, and those of an earlier epoch not lapsed."""
        return self._known(await self._read(keys=[self.key, self.epoch_key], args=[ROSTER_READ]))

    def heard(self, workers: Iterable[str]) -> None:
        """Workers that just answered a command are on the bus, entry or not yet."""
        until = self._redis_now() + self.ttl
        for worker in workers:
            self._current.setdefault(worker[:WORKER_ID_MAX], until)

    def lost(self) -> None:
        """This worker lost the bus: it remembers whom it knew then, and when (their entries may lapse meanwhile)."""
        if self._at_loss is None:
            self._at_loss = {**self._inherited, **self._current}
            self._lost_at = self._redis_now() if self._read_at is not None else None  # nothing known to keep

    def rejoined(self) -> None:
        """This worker is on the bus again: the workers it knew keep the time they had left when it lost the
        bus (none lost when redis-py subscribed again by itself), to renew their entries."""
        off = self._redis_now() - self._lost_at if self._lost_at is not None else 0.0
        known = {**(self._at_loss or {}), **self._inherited, **self._current}
        self._inherited = {worker: until + max(off, 0.0) for worker, until in known.items()}
        self._current, self._at_loss, self._lost_at = {}, None, None

    def refusal(self, exc: BaseException) -> str | None:
        """Why Redis refused a roster call for good (an ACL without its commands or keys, a script it cannot
        run), naming the command; ``None`` for a failure that passes (a connection lost, a failover)."""
        if not isinstance(exc, ResponseError) or isinstance(exc, _PASSING):
            return None
        text = str(exc)
        if text.startswith(_PASSING_CODES):
            return None
        named = f"{type(exc).__name__}: {text[:REFUSAL_MAX]}"
        command = self._refused_in_script(text)
        return f"{command}, in the roster's script: {named}" if command else named

    def _refused_in_script(self, text: str) -> str | None:
        """The command at the line of the roster's script that Redis named in its refusal, if it did."""
        found = _SCRIPT_LINE.search(text)
        if found is None:
            return None
        sha, line = found[1], int(found[2])
        for script in (self._renew, self._read):
            lines = str(script.script).splitlines()
            if script.sha == sha and 0 < line <= len(lines) and (call := _CALL.search(lines[line - 1])):
                return call[1]
        return None

    async def leave(self) -> None:
        await self.client.zrem(self.key, self.worker)

    def _redis_now(self) -> float:
        """Redis's time now as this worker reckons it: at its last read, plus the time since; 0 before any
        read (nothing known then lasts: the first read replaces it)."""
        if self._read_at is None:
            return 0.0
        at, since = self._read_at
        return at + (time.monotonic() - since)

    def _known(self, read: Any) -> set[str]:
        seconds, microseconds, epoch, entries = read
        now = int(seconds) + int(microseconds) / 1_000_000
        self._read_at = (now, time.monotonic())
        if epoch is None or epoch != self._epoch:  # the roster was lost (or is new): keep what was known
            self._inherited.update(self._current)
            self._epoch = epoch
        pairs = zip(entries[::2], entries[1::2], strict=True)
        self._current = {str(worker)[:WORKER_ID_MAX]: float(until) for worker, until in pairs}
        self._inherited = {
            worker: until for worker, until in self._inherited.items() if until > now and worker not in self._current
        }
        return self._current.keys() | self._inherited.keys() | (self._at_loss or {}).keys()  # off the bus: as then


__all__ = ["ROSTER_READ", "WORKER_ID_MAX", "Roster"]
