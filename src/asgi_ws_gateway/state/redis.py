"""The Redis store: limits shared by every worker and host, each operation one Lua script (:mod:`.redis_scripts`).

Scripts read the time from Redis (``TIME``), so hosts with skewed clocks still agree on windows,
quota periods (computed in the script: :mod:`.periods`) and lease expiry. A key's expiry only ever
extends: policies sharing a counter (``counter:``) with a shorter window or ``lease_ttl`` set the
whole key's TTL to theirs, and Redis dropped the others' rate logs and live leases with it. Each
script touches one key (a quota also the attempts it counted, ``<key>:attempts``); keys carry a
hash tag (see ``store_key``), the attempts key its counter's, so the store works against Redis
Cluster (``redis+cluster://``) and Sentinel (``redis+sentinel://``).

After a failure the store answers :class:`StoreUnavailable` at once for ``retry_interval`` seconds
instead of making every handshake wait for a timeout; then one call tries Redis again while the
others still answer at once, and calls that were waiting for a connection when the failure came
answer at once too. The log has one line when an outage starts (then one per
``OutageLog.interval`` with how many calls failed) and one when Redis answers again: a call succeeded,
or the background probe's write did (a replica answers a ``PING``, not a write). A ``READONLY``
answer (a master demoted to a replica behind the same address) also closes the connections it may
have come on, so that the next call reaches whatever the address names now.

On a plain server's URL (``redis://``, ``unix://``) the scripts a handshake or a message budget
runs go over one connection of the store's own, pipelined (:mod:`.redis_pipe`): a quarter of the
CPU of redis-py's client per call. Lease renewals (pipelines of scripts), TLS, Cluster and Sentinel
go through redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._context import HANDSHAKE
from ..cancellation import cut_by_policy_deadline
from ..log_throttle import OutageLog
from ..redact import redact_url_credentials
from ..redis_client import REDIS_FAILURES, AnyRedis, connect, stop_task
from . import redis_scripts as scripts
from .base import MAX_COUNT, MAX_WINDOW, Decision, Reservation, StoreUnavailable, count, span
from .failures import StoreError, store_failed
from .periods import Period
from .redis_pipe import Arg, Script, pipe_for

logger = logging.getLogger(__name__)
T = TypeVar("T")
ScriptCall = Callable[..., Awaitable[Any]]
"""Runs a script: ``(keys, args, command=None)``, ``command`` its ``EVALSHA`` packed already (the pipe's)."""

RENEW_BATCH = 500
"""Leases renewed per script call and per pipeline. A process's leases are renewed in pipelines of
at most this many, so the event loop runs between them: one pipeline of 50,000 scripts took 1.1 s
of CPU to build and held the loop for 0.65 s every ``lease_ttl / 3`` (every relay, and every other
Redis call, waited; one of those timing out made the store look down)."""


CONSTANTS_KEPT = 64
"""Limits and windows (or lease times) whose script arguments a store keeps converted: one pair per policy."""


class RedisState:
    """A :class:`~asgi_ws_gateway.state.base.Store` on Redis.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, ``redis+cluster://host:port,...``
            or ``redis+sentinel://host:port,.../service[/db]`` (see :mod:`asgi_ws_gateway.redis_client`).
        prefix: namespace of every key this gateway writes.
        timeout: seconds to connect or to wait for one answer (default 0.5).
        retry_interval: seconds to answer "unavailable" without trying after a failure (default 1).
        max_connections: redis-py's calls in flight at once (default 50), each on its own connection;
            more wait. redis-py's pool refuses a 101st connection, and that refusal counted as an outage:
            a burst of handshakes left every limit unchecked (fail-open) or refused (fail-closed) for a
            second. The pipe's calls share one connection and are not bounded by it.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "asgi-ws-gw",
        timeout: float = 0.5,
        retry_interval: float = 1.0,
        max_connections: int = 50,
    ) -> None:
        self.prefix = prefix
        self.retry_interval = retry_interval
        self.shown_url = redact_url_credentials(url)
        """``url`` with its user name and password hidden: what a log line may show."""
        self._timeout = timeout
        # How long a quota remembers an attempt it counted: longer than one call can last (a
        # timeout, redis-py's reconnect and its one retry), so that a retry is known as one.
        self._remembered_ms = _ms(3 * timeout + 2)
        self._slots = asyncio.Semaphore(max_connections)
        self._redis: AnyRedis = connect(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # one retry: a pooled connection may predate a Redis restart
            health_check_interval=0,
        )
        # A plain server's scripts go on a connection of their own, pipelined (redis_pipe); the
        # renewals' pipelines, Cluster and Sentinel go through redis-py.
        self._pipe = pipe_for(url, timeout)
        self._pooled = self._pipe is None  # the scripts' calls take a connection of redis-py's pool
        self._kept_constants: dict[tuple[int, float], tuple[int, int]] = {}  # see _constants
        self._hit, self._hit_script = self._script(scripts.HIT)
        self._consume, _ = self._script(scripts.CONSUME)
        self._acquire, self._acquire_script = self._script(scripts.ACQUIRE)
        self._reserve, _ = self._script(scripts.RESERVE)
        self._refund, _ = self._script(scripts.REFUND)
        self._release, _ = self._script(scripts.RELEASE)
        self._down_until = 0.0
        self._failing = False  # since a failure, until a call succeeds
        self._probing = False  # a call (or the watch below) is trying whether Redis is back
        self._watch: asyncio.Task[None] | None = None  # tries Redis in the background while it fails
        self._failures = OutageLog()
        self._outage_logged = False  # a failure line was written since the last "answers again"
        self._key_errors = OutageLog()  # calls Redis refused because of their key's data
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._probe_key = f"{prefix}:{{probe}}"  # never written: the recovery probe's PEXPIRE finds nothing

    def _script(self, source: str) -> tuple[ScriptCall, Script | None]:
        """A function running the script ``source`` with its keys and arguments (and its command when
        packed already), and the script when the pipe runs it (which packs its commands)."""
        pipe = self._pipe
        if pipe is not None:
            script = Script(source)
            return functools.partial(pipe.run, script), script  # a partial: no frame of its own per call
        registered = self._redis.register_script(source)
        return lambda keys, args, command=None: registered(keys=keys, args=args), None

    def hit(self, key: str, limit: int, window: float, member: str) -> Coroutine[Any, Any, Decision]:
        # Not a coroutine of its own (as the others are not): _call's, which reads the decision.
        return self._decide("hit", self._hit, self._hit_script, key, self._constants(limit, window), member)

    def consume(self, key: str, limit: int, period: Period) -> Coroutine[Any, Any, Decision]:
        # The attempt's id: redis-py sends the same arguments again when it retries the call.
        args: list[Arg] = [count(limit), period, os.urandom(16).hex(), self._remembered_ms]
        operation = functools.partial(self._consume, [key, f"{key}:attempts"], args)
        return self._call(operation, "consume", pooled=self._pooled, read=_decision)

    async def reserve(self, key: str, window: float, requests: Sequence[tuple[int, int]]) -> Reservation:
        # The attempt's id last: redis-py sends the same arguments again when it retries the call.
        args: list[Arg] = [_ms(window), *(count(n) for pair in requests for n in pair), os.urandom(16).hex()]
        result = await self._call(functools.partial(self._reserve, [key], args), "reserve", pooled=self._pooled,
                                  read=_as_sent)  # fmt: skip
        try:
            *granted, index, left_ms = (int(x) for x in result)
        except (TypeError, ValueError) as exc:  # never from the script; a 500 if it were not caught
            raise StoreUnavailable(f"Redis answered {type(result).__name__}, not a reservation") from exc
        return Reservation(tuple(granted), index, max(0, left_ms) / 1000)

    async def refund(self, key: str, window: int, amounts: Sequence[int]) -> None:
        # The attempt's id last, as reserve's: a call sent again gives back once.
        args: list[Arg] = [window, *(count(n) for n in amounts), os.urandom(16).hex()]
        await self._call(functools.partial(self._refund, [key], args), "refund", pooled=self._pooled, read=_as_sent)

    def acquire(self, key: str, lease: str, limit: int, ttl: float) -> Coroutine[Any, Any, Decision]:
        return self._decide("acquire", self._acquire, self._acquire_script, key, self._constants(limit, ttl), lease)

    def _constants(self, limit: int, seconds: float) -> tuple[int, int]:
        """``(count(limit), _ms(seconds))``, as a limit's script is sent them: kept for each policy's
        limit and window (alike on every call of it; the two conversions were ~1.5 k instructions a
        check), at most :data:`CONSTANTS_KEPT` pairs. Numbers equal as keys (``1`` and ``1.0``) are
        sent as the same digits."""
        kept = self._kept_constants
        constants = kept.get((limit, seconds))
        if constants is None:
            constants = (count(limit), _ms(seconds))  # raises for NaN, which is never kept
            if len(kept) < CONSTANTS_KEPT:
                kept[(limit, seconds)] = constants
        return constants

    def _decide(
        self, name: str, run: ScriptCall, script: Script | None, key: str, constants: tuple[int, int], last: str
    ) -> Coroutine[Any, Any, Decision]:
        """A limit script's call on ``key`` with its policy's ``constants`` and a last argument, its
        command packed from the head kept for those constants when the pipe runs it."""
        command = script.keyed_command(key, constants, last) if script is not None else None
        operation = functools.partial(run, [key], [*constants, last], command)
        return self._call(operation, name, pooled=self._pooled, read=_decision)

    async def renew(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        by_key: dict[str, list[str]] = {}
        for key, lease in leases:
            by_key.setdefault(key, []).append(lease)
        batch: list[tuple[str, list[str]]] = []
        size = gone = 0
        for key, held in by_key.items():
            for start in range(0, len(held), RENEW_BATCH):
                part = held[start : start + RENEW_BATCH]
                batch.append((key, part))
                size += len(part)
                if size >= RENEW_BATCH:
                    gone += await self._renew(batch, _ms(ttl))
                    batch, size = [], 0
        if batch:
            gone += await self._renew(batch, _ms(ttl))
        return gone

    async def _renew(self, batch: Sequence[tuple[str, Sequence[str]]], ttl_ms: int) -> int:
        """One pipeline: a script call per key renewing its leases in ``batch``; the leases that were gone."""

        async def renew_all() -> list[Any]:
            # EVAL, not EVALSHA: a pipeline (on a cluster, one per node) cannot reload a script a
            # freshly promoted replica has never seen.
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, held in batch:
                    pipe.eval(scripts.RENEW, 1, key, ttl_ms, *held)
                return await pipe.execute()

        results = await self._call(renew_all, "renew", read=_as_sent)
        try:
            return sum(int(result) for result in results)
        except (TypeError, ValueError) as exc:  # never from the script; a 500 if it were not caught
            raise StoreUnavailable(f"Redis answered {type(results).__name__}, not lease counts") from exc

    async def release(self, key: str, lease: str) -> None:
        await self._call(
            functools.partial(self._release, [key], [lease]), "release", pooled=self._pooled, read=_as_sent
        )

    async def aclose(self) -> None:
        if self._watch is not None:  # awaited: a cancellation lost in a probe's send left it probing on
            await stop_task(self._watch)
        if self._pipe is not None:
            await self._pipe.aclose()
        await self._redis.aclose()

    async def _call(
        self, operation: Callable[[], Awaitable[Any]], name: str, *, pooled: bool = True, read: Callable[[Any], T]
    ) -> T:
        """Run ``operation`` (``pooled``: on a connection of redis-py's pool), turning failures into
        :class:`StoreUnavailable`; its reply as ``read`` makes it."""
        probe = False
        handshake = HANDSHAKE.get()
        refused: Exception | None = None  # Redis's answer was an error about this call's key
        try:
            probe = self._failing and self._admit()  # (each check a call less while Redis answers)
            if not self._ready:
                # A cold cluster client sent many commands at once races while it maps the slots:
                # map them (and open the first connection) once, before the first burst of handshakes.
                async with self._ready_lock:
                    if not self._ready:
                        probe = probe or (self._failing and self._admit())  # see below
                        await self._redis.initialize()
                        await self._redis.ping()
                        self._ready = True
            # A pooled connection for each redis-py call in flight: wait for one to be free. The
            # pipe's calls share its connection and wait for nothing (the semaphore was 8.5 k of the
            # call's 100 k instructions).
            slots = self._slots if pooled else None
            if slots is not None:
                await slots.acquire()
            try:
                # Redis failed while this call waited for a connection (or for the first connect):
                # answer now, not after a timeout of its own. With a Redis that takes connections and
                # never answers, 300 handshakes waited their turn through six rounds of timeouts
                # (4.4 s, 6.7 s at worst), or one by one behind the first connect (291 of 300 were
                # answered 504 after the 10 s policy_timeout).
                probe = probe or (self._failing and self._admit())
                # A child span of the handshake when a policy calls during one (operation() itself when
                # tracing is off).
                result = await (operation() if handshake is None else handshake.store_call("redis", name, operation))
            finally:
                if slots is not None:
                    slots.release()
        except REDIS_FAILURES as exc:  # an outage of this call, never a 500 for the handshake
            if not _about_its_key(exc):
                if isinstance(exc, ReadOnlyError):
                    await self._forget_connections()
                self._failed(exc)
                store_failed("redis", name, _error_type(exc))
                raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc
            refused = exc
        except StoreUnavailable:  # not tried: Redis failed moments ago (_admit)
            store_failed("redis", name, "unavailable")
            raise
        except asyncio.CancelledError as exc:
            if probe:  # no answer (policy_timeout, a shutdown): as a failure, or every call would probe in turn
                self._down_until = time.monotonic() + self.retry_interval
            if cut_by_policy_deadline(exc):  # Redis did not answer in time; a shutdown's or a client's is not counted
                store_failed("redis", name, "timeout")
            raise
        finally:
            if probe:
                self._probing = False
        if self._failing:
            self._answered()
        if refused is not None:
            # Redis answered, about this key only: this call fails (open or closed as its policy
            # says), and the other keys go on being counted.
            count = self._key_errors.event()
            if count:
                logger.warning("Redis store: %d call(s) failed on what their key holds: %s", count, refused)
            store_failed("redis", name, "refused")
            raise StoreUnavailable(f"Redis refused: {type(refused).__name__}") from refused
        return read(result)

    async def reach(self) -> None:
        """Connect, authenticate, select the URL's database and PING, once, within twice ``timeout``
        (redis-py tries a connection twice); raises what failed. The first call's own connect, done
        early: the store stays as it was either way (not "failing": a handshake still tries Redis)."""
        async with asyncio.timeout(2 * self._timeout), self._ready_lock:
            if not self._ready:
                await self._redis.initialize()
                await self._redis.ping()
                self._ready = True

    async def _forget_connections(self) -> None:
        """Close redis-py's pooled connections: Redis answered READONLY, the master they reached is a
        replica now (failed over behind the same address). redis-py's plain client kept them, and every
        renewal failed for good though a new connection reached the new master (its Sentinel client
        does this itself; a cluster's follows ``MOVED``)."""
        if type(self._redis) is Redis:
            with contextlib.suppress(*REDIS_FAILURES):
                await self._redis.connection_pool.disconnect()

    @property
    def failing(self) -> bool:
        """Redis failed and has not answered since."""
        return self._failing

    def _answered(self) -> None:
        """Redis answered: no longer failing (with a line if the log told of the outage)."""
        if self._failing:
            self._failing = False
            if self._outage_logged:  # a line for each outage the log told of, not for every flap between lines
                self._outage_logged = False
                logger.info("Redis store answers again")  # the end of an outage: no alert on it

    def _admit(self) -> bool:
        """Whether a call may go to Redis now: raises :class:`StoreUnavailable` if not.

        True for the one call that tries whether a failed Redis is back: until it has its answer,
        the others answer "unavailable" at once (each would wait for the same timeout).
        """
        if not self._failing:
            return False
        if self._probing or time.monotonic() < self._down_until:
            raise StoreUnavailable("Redis is unavailable (retrying shortly)")
        self._probing = True
        return True

    async def _watch_recovery(self) -> None:
        """While Redis fails, try it once per ``retry_interval`` in the background (a write that changes
        nothing, bounded by two timeouts: a replica refuses it, where it answered the PING this was, and
        the log said "answers again" while every call still failed ``READONLY``). Tried only by the
        calls, a worker idle through the recovery went on answering "unavailable" to all but one call
        of its next burst: 17 to 30 handshakes admitted unchecked on a quota of 5 (fail-open), 37 of 40
        refused (fail-closed), against a healthy Redis (a hunter). Calls still answer at once while Redis
        fails: none waits for this."""
        while self._failing:
            await asyncio.sleep(max(0.0, self._down_until - time.monotonic()))
            if self._probing or not self.failing:  # a call is trying, or Redis answered one meanwhile
                await asyncio.sleep(self.retry_interval)
                continue
            self._probing = True
            try:
                async with asyncio.timeout(2 * self._timeout):
                    await self._redis.pexpire(self._probe_key, 1)  # no such key: a write that does nothing
            except _PROBE_FAILURES as exc:
                if isinstance(exc, ReadOnlyError):  # a demoted master's pooled connection: the next is fresh
                    await self._forget_connections()
                self._failed(exc)
                continue
            finally:
                self._probing = False
            self._answered()

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_interval
        self._failing = True
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_recovery())
        count = self._failures.event()  # one line as the outage starts, then one per interval: not one per call
        if count:
            self._outage_logged = True
        if count == 1:
            logger.warning("Redis store failed: %s: %s; answering 'unavailable' for %g s before trying again",
                           type(exc).__name__, exc, self.retry_interval)  # fmt: skip
        elif count:
            logger.warning("Redis store failed %d times since its last such line: %s: %s",
                           count, type(exc).__name__, exc)  # fmt: skip


_PROBE_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, TimeoutError)


def _ms(seconds: float) -> int:
    """Milliseconds, at least 1 and at most 2**53 (see :data:`~.base.MAX_WINDOW`); ``ValueError`` for NaN."""
    if seconds <= MAX_WINDOW:  # the usual case: one comparison more
        return max(1, round(seconds * 1000))
    span(seconds)  # NaN: refused
    return MAX_COUNT


def _about_its_key(exc: BaseException) -> bool:
    """Whether Redis refused a call because of what its key holds (WRONGTYPE, a script's runtime
    error on a value), not because Redis is down, read-only, loading, busy or out of memory.

    The scripts replace data that is not theirs, so this is a last resort: such an error used to
    count as an outage, and made every other key's call answer "unavailable" for a second.
    """
    if not isinstance(exc, ResponseError) or type(exc) is not ResponseError:  # subclasses: READONLY, LOADING, ...
        return False
    text = str(exc)
    if any(code in text for code in _OUTAGE_CODES):
        return False
    return "WRONGTYPE" in text or "user_script:" in text


_OUTAGE_CODES = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOPERM", "NOSCRIPT")
"""Error codes of a server that cannot run commands now, also when a script's call meets them."""


def _error_type(exc: BaseException) -> StoreError:
    """The ``error.type`` of a failed call (:data:`~.failures.StoreError`: a fixed set, whatever redis-py raises)."""
    if isinstance(exc, ReadOnlyError):
        return "readonly"
    if isinstance(exc, RedisTimeoutError | TimeoutError):  # before OSError: asyncio's TimeoutError is one
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    if isinstance(exc, ResponseError):
        return "response"
    return "_OTHER"


def _as_sent(result: Any) -> Any:
    return result


def _decision(result: Any) -> Decision:
    """``{allowed, remaining, retry ms}``, and a quota's period end (POSIX s) after them."""
    try:  # three values or four, each unpacked as it is (a starred unpacking made a list for nothing)
        if len(result) == 3:
            allowed, remaining, retry_ms = map(int, result)
            resets_at = 0.0
        else:
            allowed, remaining, retry_ms, period_end = map(int, result)
            resets_at = float(period_end)
    except (TypeError, ValueError) as exc:  # never from these scripts; a 500 if it were not caught
        raise StoreUnavailable(f"Redis answered {type(result).__name__}, not a decision") from exc
    return Decision(allowed != 0, remaining if remaining > 0 else 0, retry_ms / 1000 if retry_ms > 0 else 0.0,
                    resets_at)  # fmt: skip


__all__ = ["RedisState"]
