"""A client that leaves before its handshake is answered: the application's task is cancelled with
``CLIENT_GONE``, which the gateway takes back (leases released, nothing answered, the handshake
recorded abandoned).

uvicorn only queued a ``websocket.disconnect`` that nobody read while the application decided: the
gateway's policies and upstream connect ran to their end holding what they took (a concurrency lease
held for the whole ``connect_timeout``, each further backend dialled, an upstream opened for nobody).
A client that half-closes (FIN) before the 101 is gone too: uvicorn closes the connection on EOF, and
a WebSocket needs both directions. A client whose early frames are held (reading paused: see
:meth:`ClientLeg._hold_early_data`) is watched through its TCP state instead, on Linux.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from ..relay.close_codes import CLIENT_GONE
from .client_leg import ClientLeg

HANGUP_PROBE_INTERVAL = 0.5
"""Seconds between looks at the TCP state of a client whose early frames are held, reading paused."""

_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_TCP_CLOSE, _TCP_CLOSE_WAIT = 7, 8  # tcpi_state (include/net/tcp_states.h): reset, or its FIN received


def hung_up(transport: asyncio.BaseTransport) -> bool:
    """Whether the peer of ``transport`` reset or half-closed its TCP connection, read or not (Linux
    TCP_INFO's tcpi_state); False where that is unknown."""
    sock = transport.get_extra_info("socket")
    if _TCP_INFO is None or sock is None:
        return False
    try:
        state: bytes = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)
    except (OSError, ValueError):
        return False
    return bool(state) and state[0] in (_TCP_CLOSE, _TCP_CLOSE_WAIT)


class ClientDeparture(ClientLeg):
    """Cancel the application's handshake when its client is gone before the answer."""

    _hangup_probe: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        unanswered = self.handshake_initiated and not self.handshake_complete and self.initial_response is None
        self._stop_hangup_probe()
        super().connection_lost(exc)
        if unanswered and not self._refusing:  # a shutdown's refusal already stops the task
            self._departed = True
            task = self._task
            if task is not None and not task.done():
                self._stop_task(task, CLIENT_GONE)
            # A task not started yet cancels itself at its first step (GracefulShutdown.run_asgi).

    def _hold_early_data(self, data: bytes) -> None:
        super()._hold_early_data(data)
        if self._hangup_probe is None:  # reading paused: a reset or FIN would go unnoticed
            self._hangup_probe = self.loop.call_later(HANGUP_PROBE_INTERVAL, self._probe_hangup)

    def _release_early_data(self, protocol: asyncio.BaseProtocol) -> None:
        self._stop_hangup_probe()
        super()._release_early_data(protocol)

    def _probe_hangup(self) -> None:
        self._hangup_probe = None
        if self.handshake_complete or self.initial_response is not None or self.transport.is_closing():
            return
        if hung_up(self.transport):
            self.transport.abort()  # connection_lost follows: the handshake is cancelled there
            return
        self._hangup_probe = self.loop.call_later(HANGUP_PROBE_INTERVAL, self._probe_hangup)

    def _stop_hangup_probe(self) -> None:
        if self._hangup_probe is not None:
            self._hangup_probe.cancel()
            self._hangup_probe = None


__all__ = ["HANGUP_PROBE_INTERVAL", "ClientDeparture", "hung_up"]
