"""Host-name lookups on threads of the gateway's own: bounded, with a deadline, no name able to starve the rest.

``getaddrinfo`` holds a thread until the system resolver answers or gives up (resolv.conf's ``timeout``
times ``attempts`` per query, several queries with a search list: 30 s and more), and nothing can stop it.
The event loop's executor ran the lookups: under uvloop libuv's pool, 4 threads of which 2 take slow
work, so while two names' DNS hung no other name was looked up, and their handshakes timed out
blaming healthy backends (tests/test_attack_upstream_dns_lookups.py). Here:

- lookups run on at most :data:`THREADS` threads of their own (daemon threads: a hung lookup does
  not hold the process's exit), at most :data:`PER_NAME` of them for one name, at most 4 per thread
  waiting for one; the callers asking for a name while it is looked up share that lookup;
- each caller waits until its own deadline. A name whose lookup outlived a caller's deadline *hangs*:
  its callers are answered at once (504, ``upstream_dns_timeout``) until that lookup returns, and for
  :data:`NEGATIVE_TTL` seconds after it if it failed; so are the callers of a name whose lookup
  failed for the resolver's want of an answer (``EAI_AGAIN``, ``EAI_FAIL``). An answer that comes
  late is kept all the same. A WARNING (one per name now and then) names the name;
- a lookup that got no thread before its caller's deadline (or none could start: every thread is held
  by a name that hangs, or too many wait) is the gateway's own shortage: 503 ``gateway_dns_busy``, no name or backend
  blamed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import GatewayOverloaded, NameLookupTimeout, UpstreamTimeout
from ..log_throttle import OutageLog

logger = logging.getLogger(__name__)

THREADS = 16
"""Threads that run lookups (started as lookups need them)."""

PER_NAME = 2
"""Lookups of one name that may hold a thread at once (a second one only after the name was forgotten:
a connect to its addresses failed)."""

TIMEOUT = 5.0
"""Seconds a caller waits for a lookup at most (its own deadline may be shorter)."""

NEGATIVE_TTL = 2.0
"""Seconds a name whose lookup hung or found no answer is answered with that failure, without a lookup."""

_TEMPORARY = frozenset({socket.EAI_AGAIN, socket.EAI_FAIL})
"""getaddrinfo's errors of a resolver that did not answer (not "no such name": that one is looked up again)."""

_WAITING_PER_THREAD = 4
"""Lookups that may wait for a thread, per thread; one more is refused at once (503)."""

_MAX_LOGS = 1024

MAX_FAILED = 4096
"""Names remembered as failed at most (names come from templates: an issuer's claims can vary them)."""

Lookup = Callable[[str, int], list[str]]
"""``lookup(host, port)``: the addresses of ``host``, best first, each once; blocks; raises OSError
(``socket.gaierror``) when the name does not resolve. Runs on a lookup thread."""


def system_lookup(host: str, port: int) -> list[str]:
    """The system resolver's addresses of ``host`` (``getaddrinfo``), in its order, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _busy(host: str, threads: int) -> GatewayOverloaded:
    return GatewayOverloaded(
        f"no DNS lookup of {host} could start: the gateway's {threads} lookup threads are busy", "gateway_dns_busy"
    )


@dataclass(eq=False)
class _Job:
    host: str
    port: int
    future: concurrent.futures.Future[list[str]] = field(default_factory=concurrent.futures.Future)
    started: float | None = None  # when a thread took it
    hung: bool = False  # a caller's deadline passed while it ran
    forgotten: bool = False  # started before the name was forgotten: new callers start another


class NameLookups:
    """Lookups of host names on a bounded pool of threads of their own (see the module's docstring).

    ``found(host, port, addresses)`` is called on the lookup thread with every answer, late ones too.
    ``lookup`` may be replaced (tests give a fake resolver: ``RESOLVER.names.lookup = fake``).
    """

    def __init__(
        self,
        lookup: Lookup = system_lookup,
        *,
        found: Callable[[str, int, list[str]], None] | None = None,
        threads: int = THREADS,
        per_name: int = PER_NAME,
        timeout: float = TIMEOUT,
        negative_ttl: float = NEGATIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.found = found
        self.threads = threads
        self.per_name = per_name
        self.timeout = timeout
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.lookups = 0  # lookups started (tests read it)
        self._lock = threading.Lock()  # callers on several event loops, answers on the lookup threads
        self._logs: dict[str, OutageLog] = {}
        self._busy_log = OutageLog()
        self._start_over()

    def _start_over(self) -> None:
        """No thread, no lookup (at start, and in a forked child: none of its parent's threads is there)."""
        self._pid = os.getpid()
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._started = 0  # threads started (they never end: at most ``threads``)
        self._outstanding = 0  # jobs queued or running
        self._jobs: dict[tuple[str, int], _Job] = {}  # the job new callers of a name join
        self._running: Counter[str] = Counter()  # jobs queued or running, by name
        self._hung: dict[str, list[_Job]] = {}  # by name, the jobs that outlived a caller's deadline
        self._hung_total = 0
        self._failed: dict[str, tuple[float, OSError | None]] = {}  # until when, the error (None: it hung)

    async def resolve(
        self, host: str, port: int, wait: float | None = None, known: Callable[[], list[str] | None] | None = None
    ) -> list[str]:
        """``host``'s addresses, waiting ``wait`` seconds at most (default and cap: ``self.timeout``).
        ``known()``: the caller's cached addresses, if still good; asked again once no lookup of the name runs,
        as an answer may have come (and its lookup ended) since the caller last looked.

        Raises:
            NameLookupTimeout: the lookup took longer, or the name's lookup hangs (at once then).
            GatewayOverloaded: no lookup thread was free (``gateway_dns_busy``).
            OSError: the name does not resolve (``socket.gaierror``).
        """
        job = self._job(host, port, known)
        wait = self.timeout if wait is None else min(wait, self.timeout)
        answer = asyncio.wrap_future(job.future)
        answer.add_done_callback(_retrieved)  # one no caller awaits any more is not "never retrieved"
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(answer)  # a caller that gives up leaves the lookup to the others
        except TimeoutError:
            if job.future.done() and job.future.exception() is None:  # answered as the deadline passed
                return job.future.result()
            raise self._late(job, wait) from None

    def refresh(self, host: str, port: int) -> None:
        """Look ``host`` up in the background unless it is being looked up, hangs, failed lately or no
        thread is free (its answer goes to ``found``)."""
        with contextlib.suppress(OSError, UpstreamTimeout, GatewayOverloaded):
            self._job(host, port)

    def forget(self, host: str, port: int) -> None:
        """The next caller of ``host`` starts a lookup of its own (within the name's share of threads)."""
        with self._lock:
            job = self._jobs.get((host, port))
            if job is not None:
                job.forgotten = True

    def hanging(self) -> list[str]:
        """The names whose lookups hang now."""
        with self._lock:
            return sorted(self._hung)

    def _job(self, host: str, port: int, known: Callable[[], list[str] | None] | None = None) -> _Job:
        with self._lock:
            if self._pid != os.getpid():
                self._start_over()
            failure = self._failure(host)
            if failure is not None:
                raise failure
            job = self._jobs.get((host, port))
            if job is not None and (not job.forgotten or self._running[host] >= self.per_name):
                return job
            # ``found`` runs before a lookup's job is removed (under this lock): no job, so any answer is in.
            addresses = known() if job is None and known is not None else None
            if addresses is not None:
                answered = _Job(host, port)
                answered.future.set_result(addresses)
                return answered
            if (
                self._running[host] >= self.per_name
                or self._hung_total >= self.threads  # none would start in time
                or self._outstanding >= self.threads * (1 + _WAITING_PER_THREAD)
            ):
                busy = _busy(host, self.threads)
            else:
                return self._submit(host, port)
        self._log_busy(host)
        raise busy

    def _failure(self, host: str) -> NameLookupTimeout | OSError | None:
        """Why ``host`` is answered at once without a lookup, if it is (called with the lock held)."""
        hung = self._hung.get(host)
        if hung:
            return NameLookupTimeout(host, self.clock() - min(job.started or 0.0 for job in hung))
        failed = self._failed.get(host)
        if failed is None:
            return None
        until, error = failed
        if self.clock() >= until:
            del self._failed[host]
            return None
        if error is None:
            return NameLookupTimeout(host, self.timeout)
        return socket.gaierror(error.errno, error.strerror)  # a new one: each caller raises its own

    def _submit(self, host: str, port: int) -> _Job:
        """Queue a lookup, starting a thread if every started one has a job (called with the lock held)."""
        job = self._jobs[host, port] = _Job(host, port)
        self.lookups += 1
        self._outstanding += 1
        self._running[host] += 1
        self._queue.put(job)
        if self._outstanding > self._started and self._started < self.threads:
            self._started += 1
            threading.Thread(target=self._work, name=f"asgi-ws-gateway-dns-{self._started}", daemon=True).start()
        return job

    def _work(self) -> None:
        jobs = self._queue
        while True:
            job = jobs.get()
            with self._lock:
                job.started = self.clock()
            try:
                found = self.lookup(job.host, job.port)
                if not found:
                    raise socket.gaierror(socket.EAI_NONAME, "no address")
                if self.found is not None:
                    self.found(job.host, job.port, found)
            except Exception as error:
                self._done(job, error)
                job.future.set_exception(error)
            else:
                self._done(job, None)
                job.future.set_result(found)

    def _done(self, job: _Job, error: Exception | None) -> None:
        with self._lock:
            host = job.host
            self._outstanding -= 1
            self._running[host] -= 1
            if not self._running[host]:
                del self._running[host]
            if job.hung:
                hung = self._hung[host]
                hung.remove(job)
                self._hung_total -= 1
                if not hung:
                    del self._hung[host]
            if self._jobs.get((host, job.port)) is job:
                del self._jobs[host, job.port]
            if error is None:
                self._failed.pop(host, None)
            elif job.hung or (isinstance(error, socket.gaierror) and error.errno in _TEMPORARY):
                oserror = error if isinstance(error, OSError) else None
                self._remember_failure(host, oserror)

    def _remember_failure(self, host: str, error: OSError | None) -> None:
        """Answer ``host`` with ``error`` for a while, the table bounded (called with the lock held)."""
        failed = self._failed
        failed.pop(host, None)  # re-inserted last: the oldest entries are the first to go
        if len(failed) >= MAX_FAILED:
            now = self.clock()
            for name in [name for name, (until, _) in failed.items() if until <= now] or list(failed)[
                : MAX_FAILED // 4
            ]:
                del failed[name]
        failed[host] = (self.clock() + self.negative_ttl, error)

    def _late(self, job: _Job, waited: float) -> NameLookupTimeout | GatewayOverloaded:
        """What a caller whose deadline passed raises, and the name marked as hanging."""
        with self._lock:
            if job.started is None:  # queued behind others all along: the pool's fault, not the name's
                late: NameLookupTimeout | GatewayOverloaded = _busy(job.host, self.threads)
            else:
                late = NameLookupTimeout(job.host, waited)
                if not job.hung and not job.future.done():
                    job.hung = True
                    self._hung.setdefault(job.host, []).append(job)
                    self._hung_total += 1
        if isinstance(late, GatewayOverloaded):
            self._log_busy(job.host)
            return late
        log = self._logs.get(job.host)
        if log is None:
            if len(self._logs) >= _MAX_LOGS:
                self._logs.clear()
            log = self._logs[job.host] = OutageLog()
        count = log.event()
        if count:
            more = f" ({count - 1} more since the last such line)" if count > 1 else ""
            logger.warning(
                "DNS lookup of %s has not answered in %.3g s: handshakes to it fail at once (504) until it does%s;"
                " names whose lookups hang: %s",
                job.host, waited, more, ", ".join(self.hanging()[:8]) or job.host,
            )  # fmt: skip
        return late

    def _log_busy(self, host: str) -> None:
        count = self._busy_log.event()
        if count:
            more = f" ({count - 1} more since the last such line)" if count > 1 else ""
            logger.warning(
                "no thread free for a DNS lookup of %s: the %d lookup threads are busy%s; names whose lookups hang: %s",
                host, self.threads, more, ", ".join(self.hanging()[:8]) or "none",
            )  # fmt: skip


def _retrieved(answer: asyncio.Future[list[str]]) -> None:
    if not answer.cancelled():
        answer.exception()


__all__ = ["NEGATIVE_TTL", "PER_NAME", "THREADS", "TIMEOUT", "Lookup", "NameLookups"]
