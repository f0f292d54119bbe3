"""What one API's clients may ask of its backends at once: the backends' caps.

* ``max_connections`` (an upstream's): connections to that backend, counted from the moment a connect
  to it starts to the moment the connection is over, whatever ended it (a :class:`ConnectionSlot`).
  A backend at its cap is skipped in balancing order; when every backend is, the handshake is refused
  with 503 ``upstream_full`` at once (as Envoy's ``max_connections`` overflows), never queued.
* ``max_connecting`` (an API's): upstream handshakes of that API in flight at once, whichever backend
  they go to (a :class:`ConnectingGate`). Ten thousand clients reconnecting after an upstream restart
  become ``max_connecting`` connects at a time; the others wait their turn in arrival order, each at
  most ``connect_timeout`` seconds, then 503 ``upstream_queue_timeout``. A handshake holds its turn
  through its failover attempts (one attempt at a time), so waiting never costs a backend's health:
  its connect gets the whole ``connect_timeout`` once its turn comes.

Both are the gateway's own refusals, never a backend's failure: no failover past them, no cooldown.
Counts are per process: each worker of ``run --workers N`` keeps its own (as Envoy's are per instance).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from ..errors import GatewayOverloaded

_NAMED = 4
"""Backends a refusal's detail names; the rest are counted."""


class CappedBackend(Protocol):
    label: str
    connections: int
    max_connections: int | None


class ConnectionSlot:
    """One of a backend's ``max_connections``, held from its connect to the connection's end.

    :meth:`release` gives it back; once only, however many ends a connection meets."""

    __slots__ = ("_backend",)

    def __init__(self, backend: CappedBackend) -> None:
        backend.connections += 1
        self._backend: CappedBackend | None = backend

    def release(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.connections -= 1


def has_room(backend: CappedBackend) -> bool:
    return backend.max_connections is None or backend.connections < backend.max_connections


class ConnectingGate:
    """``max_connecting`` of one API: handshakes in flight to its backends, the rest waiting in order.

    Kept across configuration changes (a new limit applies to the waiters too); ``limit`` None: no limit.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.in_flight = 0
        self.waiting = 0  # not yet handed a turn
        self._waiters: deque[asyncio.Future[None]] = deque()  # those given up stay until reached: done

    def set_limit(self, limit: int | None) -> None:
        self.limit = limit
        self._wake()

    async def enter(self, within: float) -> bool:
        """Take a turn, waiting ``within`` seconds at most; False: none came in time.

        Cancellation-safe: a cancelled wait holds no turn (one handed to it meanwhile goes to the next)."""
        if not self.waiting and (self.limit is None or self.in_flight < self.limit):
            self.in_flight += 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        try:
            async with asyncio.timeout(within):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # handed a turn as the time ran out: taken
            self._give_up(waiter)
            return False
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.leave()
            else:
                self._give_up(waiter)
            raise
        return True

    def leave(self) -> None:
        """A turn is over (the handshake connected, was refused, or failed)."""
        self.in_flight -= 1
        self._wake()

    def _give_up(self, waiter: asyncio.Future[None]) -> None:
        waiter.cancel()
        self.waiting -= 1

    def _wake(self) -> None:
        while self._waiters and (self.limit is None or self.in_flight < self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.waiting -= 1
                self.in_flight += 1
                waiter.set_result(None)


def backends_full(api: str, backends: Sequence[CappedBackend]) -> GatewayOverloaded:
    """503 ``upstream_full``: every backend of ``api`` is at its ``max_connections``."""
    named = ", ".join(f"{b.label} ({b.connections} of {b.max_connections})" for b in backends[:_NAMED])
    more = f" and {len(backends) - _NAMED} more" if len(backends) > _NAMED else ""
    return GatewayOverloaded(
        f"every backend of API {api} is at its max_connections: {named}{more}", reason="upstream_full"
    )


def queue_timeout(api: str, gate: ConnectingGate, seconds: float) -> GatewayOverloaded:
    """503 ``upstream_queue_timeout``: no turn to connect came within ``connect_timeout``."""
    return GatewayOverloaded(
        f"API {api}: no turn to connect upstream within {seconds:g} s (max_connecting {gate.limit}, "
        f"{gate.in_flight} connecting, {gate.waiting} waiting)",
        reason="upstream_queue_timeout",
    )


__all__ = ["CappedBackend", "ConnectingGate", "ConnectionSlot", "backends_full", "has_room", "queue_timeout"]
