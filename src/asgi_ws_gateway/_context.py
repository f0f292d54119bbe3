"""The handshake and the connection the running task serves, for code far from the middleware.

The telemetry layer sets them; a policy or a store reads them to name the caller (``identify``),
trace its own I/O (``io_span``; a store's call: ``store_call``) or count a message policy's action
(``policy_action``) without importing telemetry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class HandshakeObserver(Protocol):
    """What a policy may do with the handshake in progress."""

    def identify(self, *, subject: str | None = None, subscription: str | None = None) -> None:
        """Name who connects, once a policy knows (never a token or a key)."""

    def io_span(self, name: str, *, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        """A child span of the handshake around a policy's I/O (a non-recording one when tracing is off)."""

    def store_call(self, system: str, operation: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """``call()``, a store's call (``db.system``, ``db.operation``), in a child span of the handshake
        (``call()`` itself when tracing is off)."""

    def unchecked(self, policy: str) -> None:
        """``policy`` admits this handshake without checking it (its store failed and it fails open)."""

    @property
    def writes_access_line(self) -> bool:
        """The gateway writes this connection's access-log line (at close, refusal or abandon): a
        server's own "accepted" line would say again what that line says."""


class ConnectionObserver(Protocol):
    """What a message policy may do with the connection it runs in."""

    def policy_action(self, policy: str, action: str, direction: str, reason: str = "") -> None:
        """Count one action of a policy on this connection (a dict increment)."""


HANDSHAKE: ContextVar[HandshakeObserver | None] = ContextVar("asgi_ws_gateway.handshake", default=None)
CONNECTION: ContextVar[ConnectionObserver | None] = ContextVar("asgi_ws_gateway.connection", default=None)


def current_handshake() -> HandshakeObserver | None:
    """The handshake the calling task is deciding, or None: policies name the caller and trace their I/O with it."""
    return HANDSHAKE.get()


def current_connection() -> ConnectionObserver | None:
    """The connection the calling task relays, or None: message policies count their actions with it."""
    return CONNECTION.get()


__all__ = [
    "CONNECTION",
    "HANDSHAKE",
    "ConnectionObserver",
    "HandshakeObserver",
    "current_connection",
    "current_handshake",
]
