"""Backends of one API: balancing order, failover, and passive health.

Each handshake tries the API's backends in balancing order (round-robin rotation, or fewest connections
first, connects in progress included) until one connects. A backend that fails ``unhealthy_after`` times
in a row is skipped for ``cooldown`` seconds; when every backend is cooling down, all are tried anyway
(better a likely failure than a certain one). An upstream that *answers* the handshake, even with a
refusal, counts as healthy: it is the application saying no, not the backend being down.

A connect that succeeds is not yet a success: a backend that completes every handshake and then
fails the connection at once (closes with 1011, breaks the protocol, resets) would otherwise count
as healthy forever, and least-connections, seeing it with no connections, would send it nearly
every client. Each connection is on :class:`Trial` for its first ``TRIAL_PERIOD`` seconds: ended in
them by its upstream's failure (:func:`upstream_failed`), it counts as a failed connect; once it
lives past them, or its client or the upstream closes it normally, it counts as a success. An
upstream that accepts and at once says it cannot serve (1001 going away, 1012 service restart)
fails too: counted as served, it took nearly every client. A close of the gateway's own (drain,
kick, idle timeout, a policy) says nothing of the backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from .. import redact
from ..config.apis import ApiConfig
from ..errors import UpstreamRejected, UpstreamTimeout, UpstreamUnreachable
from ..log_throttle import OutageLog
from .backend_caps import ConnectingGate, ConnectionSlot, backends_full, has_room, queue_timeout
from .base import Connector, UpstreamConnection, UpstreamRequest

logger = logging.getLogger(__name__)

TRIAL_PERIOD = 5.0
"""Seconds a new connection's end still speaks of its backend's health (see :class:`Trial`)."""

_UNAVAILABLE = frozenset({1001, 1012})
"""The upstream's ends that say it cannot serve now: going away, service restart. What it sent first
changes nothing (a backend that greets each client and then restarts serves none). Not 1013 (try again
later): an application answers a handshake's own values with it ("room full" for ``?room=x``), so a
client could cool a healthy backend by asking for a full room three times (a re-attack pass)."""

_BACKEND_FAULTS = frozenset({1002, 1006, 1011, 1014}) | _UNAVAILABLE
"""The upstream's ends that are its own failure: a protocol error (the frames it was sent were the
gateway's own, or checked by it), vanished without a close frame (a TCP reset or EOF, a keepalive
that went unanswered on the splice), an internal error (also the relay's keepalive timeout), bad
gateway, and :data:`_UNAVAILABLE`. Codes a client's messages can draw from a healthy application
(1003, 1007, 1008, 1009, 4xxx...) are its answer, as a refusal is: counted, they would let any client
cool a backend; so is a normal close (1000)."""

_ANSWERS_TO_A_MESSAGE = frozenset({1011, 1014}) | _UNAVAILABLE
"""Of those, the closes a healthy application may send when a client's message makes it fail or go (a
handler that raises, a "bye" answered with 1001)."""

_UPSTREAM_FAILED = (1011, "upstream connection failed")
"""What the splice records as the gateway's close when the upstream sent a bad frame (the client is
told this; the upstream was closed with the protocol error)."""


@dataclass(eq=False)
class Backend:
    """One upstream of an API and what the gateway has seen of it."""

    label: str
    connector: Connector
    index: int
    active: int = 0
    """Connections accepted and not over."""
    connections: int = 0
    """Slots held: connects under way and connections not over (what ``max_connections`` caps, and what
    least-connections reads)."""
    max_connections: int | None = None
    failures: int = 0
    cooling_until: float = field(default=0.0)
    failure_log: OutageLog = field(default_factory=OutageLog, repr=False)
    """Its "failed" lines: while it is down, one now and then with how many, not one per handshake."""
    cooling_logged_at: float = field(default=float("-inf"), repr=False)
    cooling_unlogged: int = field(default=0, repr=False)
    """Its "skipped for" lines: when the last was written, and the cooldowns started since, unlogged."""

    def healthy(self, now: float) -> bool:
        return now >= self.cooling_until


RequestBuilder = Callable[[Backend], UpstreamRequest]
T = TypeVar("T")
"""Builds the upstream request for a given backend (each backend has its own URL)."""


class ConnectionEnd(Protocol):
    """How a connection ended, as its relay or splice recorded it (``RelayStats``)."""

    @property
    def closed_by(self) -> str | None: ...  # "client", "upstream", "gateway"; None: it never started

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str: ...

    @property
    def messages_in_at_close(self) -> int: ...  # messages the client had sent when the first close came


def upstream_failed(end: ConnectionEnd) -> bool | None:
    """True when the upstream failed the connection, False when it served it (it, or the client,
    closed it), None when the gateway ended it (or it never started): no word on the backend.

    An upstream's 1001, 1011, 1012 or 1014 before the client sent anything is the backend's
    failure, whatever the upstream sent first; once the client had sent a message it says nothing: a
    healthy application closes with 1011 when a message makes its handler raise (bad JSON, say), so
    counted, three such messages from any client cooled every backend in turn (an attack pass).
    Vanishing (1006) and protocol errors are not an application's answer to a message: they still count.
    """
    if end.closed_by == "client":
        return False
    if end.closed_by == "upstream":
        if end.close_code in _ANSWERS_TO_A_MESSAGE and end.messages_in_at_close:
            return None
        return end.close_code in _BACKEND_FAULTS
    if end.closed_by == "gateway" and (end.close_code, end.close_reason) == _UPSTREAM_FAILED:
        return True
    return None


class Trial:
    """A connection's first ``TRIAL_PERIOD`` seconds, whose end decides what it says of its backend.

    Made by :meth:`BackendPool.opened` (which counts the connection active); :meth:`ended` must be
    called once, when the connection is over: it gives back the connection's slot too.
    """

    __slots__ = ("_backend", "_pool", "_since", "_slot", "_timer")

    def __init__(self, pool: BackendPool, backend: Backend, slot: ConnectionSlot | None = None) -> None:
        self._pool, self._backend, self._slot = pool, backend, slot
        self._since = time.monotonic()
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(TRIAL_PERIOD, self._passed)

    def _passed(self) -> None:
        self._timer = None
        self._pool.record_success(self._backend)

    def ended(self, end: ConnectionEnd) -> None:
        """The connection is over: it no longer counts as active, and within its trial its end is judged."""
        self._backend.active -= 1
        if self._slot is not None:
            self._slot.release()
        if self._timer is None:
            return  # it lived past its trial: counted as a success then
        self._timer.cancel()
        self._timer = None
        failed = upstream_failed(end)
        if failed:
            self._pool.early_end(self._backend, end, time.monotonic() - self._since)
        elif failed is not None:
            self._pool.record_success(self._backend)


COOLING_LINES = 10.0
"""Seconds between two lines of one backend starting to cool, at least."""


class BackendPool:
    def __init__(self, api: ApiConfig, backends: Sequence[Backend], connecting: ConnectingGate | None = None) -> None:
        self.api = api
        # Read at every handshake, kept as plain attributes (a pydantic model's read is ~4x a plain one's).
        self._least_connections = api.balancing == "least-connections"
        self._connect_timeout = api.connect_timeout
        self.backends = list(backends)
        self._turn = 0
        # The previous configuration's, when there was one: handshakes in flight hold turns of it.
        self.connecting = connecting if connecting is not None else ConnectingGate()
        self.connecting.set_limit(api.max_connecting)

    def order(self, now: float | None = None) -> list[Backend]:
        """Backends to try for the next handshake, best first; none at its ``max_connections``."""
        now = time.monotonic() if now is None else now
        start = self._turn % len(self.backends)
        self._turn += 1
        rotated = [b for b in self.backends[start:] + self.backends[:start] if has_room(b)]
        if self._least_connections:
            # Connects under way count: clients arriving together (a reconnect storm) each see the others'
            # connects in flight, where accepted connections alone sent all of them to the emptiest backend.
            rotated.sort(key=lambda b: b.connections)  # stable: ties keep the rotation
        healthy = [b for b in rotated if b.healthy(now)]
        return healthy or rotated

    def record_failure(self, backend: Backend, now: float | None = None) -> None:
        backend.failures += 1
        if backend.failures >= self.api.unhealthy_after:
            now = time.monotonic() if now is None else now
            cooling = backend.cooling_until > now  # tried anyway: every backend was cooling
            backend.cooling_until = now + self.api.cooldown
            if not cooling:  # once as it starts cooling, not per failed handshake while it is down
                self._log_cooling(backend, now)

    def _log_cooling(self, backend: Backend, now: float) -> None:
        """The line of a backend starting to cool, at most once per :data:`COOLING_LINES` seconds: a cooldown
        shorter than the time between handshakes (``cooldown: 0``, "never skip it") starts one per failure,
        and a backend down under 50 handshakes a second wrote 50 WARNING lines a second."""
        backend.cooling_unlogged += 1
        if now - backend.cooling_logged_at < COOLING_LINES:
            return
        more = backend.cooling_unlogged - 1
        backend.cooling_logged_at, backend.cooling_unlogged = now, 0
        logger.warning(
            "backend %s of API %s failed %d times in a row; skipped for %g s%s",
            backend.label, self.api.name, backend.failures, self.api.cooldown,
            f" ({more} more such since the last line)" if more else "",
        )  # fmt: skip

    def record_success(self, backend: Backend) -> None:
        backend.failures = 0
        backend.cooling_until = 0.0

    def opened(self, backend: Backend, slot: ConnectionSlot | None = None) -> Trial:
        """A connection to ``backend`` (from :meth:`open`, with its ``slot``) is accepted: active, and on trial."""
        backend.active += 1
        return Trial(self, backend, slot)

    def early_end(self, backend: Backend, end: ConnectionEnd, lived: float) -> None:
        """The upstream failed a connection soon after its 101: a failure, as a failed connect is."""
        reason = redact.printable(redact.redact_free_text(end.close_reason))  # the upstream's text: "token=..."
        detail = f'it failed a connection {lived:.1f} s after accepting it ({end.close_code} "{reason}")'
        self._log_failure(backend, detail)
        self.record_failure(backend)

    def _log_failure(self, backend: Backend, detail: str) -> None:
        count = backend.failure_log.event()
        if count:
            more = f" ({count - 1} more since the last such line)" if count > 1 else ""
            logger.info("API %s: backend %s failed: %s%s", self.api.name, backend.label, detail, more)

    async def connect(self, build: RequestBuilder) -> tuple[Backend, UpstreamConnection, ConnectionSlot]:
        """Connect to the first backend that answers, failing over on unreachable or timed out ones.

        Returns the backend, the connection and its slot, which the caller gives back when the connection
        is over (:meth:`opened`'s trial does), or at once if it never is accepted.

        Raises:
            UpstreamRejected: the backend answered the handshake with a refusal.
            UpstreamUnreachable | UpstreamTimeout: every backend failed; the last failure is raised.
            GatewayOverloaded: every backend at its ``max_connections`` (``upstream_full``), or no turn
                under ``max_connecting`` within ``connect_timeout`` (``upstream_queue_timeout``): 503.
        """
        return await self.open(lambda backend: backend.connector.connect(build(backend)))

    async def open(self, opener: Callable[[Backend], Awaitable[T]]) -> tuple[Backend, T, ConnectionSlot]:
        """:meth:`connect` with ``opener(backend)`` opening the connection (passthrough's raw one).

        Raises:
            as :meth:`connect`.
        """
        if not any(has_room(b) for b in self.backends):  # at once: no turn is waited for to be refused
            raise backends_full(self.api.name, self.backends)
        if not await self.connecting.enter(self._connect_timeout):
            raise queue_timeout(self.api.name, self.connecting, self._connect_timeout)
        try:
            return await self._first_to_open(opener)
        finally:
            self.connecting.leave()

    async def _first_to_open(self, opener: Callable[[Backend], Awaitable[T]]) -> tuple[Backend, T, ConnectionSlot]:
        last: UpstreamUnreachable | UpstreamTimeout | None = None
        for backend in self.order():
            if not has_room(backend):
                continue  # filled up while an earlier backend was tried
            slot = ConnectionSlot(backend)
            try:
                connection = await opener(backend)
            except UpstreamRejected:
                slot.release()
                self.record_success(backend)
                raise
            except (UpstreamUnreachable, UpstreamTimeout) as exc:
                slot.release()
                self._log_failure(backend, exc.detail)
                self.record_failure(backend)
                last = exc
                continue
            except BaseException:  # the gateway's own refusal, a cancellation (the client left, a shutdown)
                slot.release()
                raise
            # Not a success yet: the connection's Trial (BackendPool.opened) decides.
            return backend, connection, slot
        if last is None:  # every backend filled up while this handshake waited its turn
            raise backends_full(self.api.name, self.backends)
        raise last


__all__ = ["COOLING_LINES", "TRIAL_PERIOD", "Backend", "BackendPool", "ConnectionEnd", "Trial", "upstream_failed"]
