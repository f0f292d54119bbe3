"""The handshake the running task is deciding, for code far from the middleware (policies, stores).

The telemetry layer sets it for each handshake; a policy or a store reads it to name the caller
(``identify``) and to trace its own I/O (``io_span``) without importing telemetry.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Protocol


class HandshakeObserver(Protocol):
    """What a policy may do with the handshake in progress."""

    def identify(self, *, subject: str | None = None, subscription: str | None = None) -> None:
        """Name who connects, once a policy knows (never a token or a key)."""

    def io_span(self, name: str, *, attributes: dict[str, Any] | None = None) -> AbstractContextManager[Any]:
        """A child span of the handshake around a policy's I/O (a non-recording one when tracing is off)."""


HANDSHAKE: ContextVar[HandshakeObserver | None] = ContextVar("asgi_ws_gateway.handshake", default=None)


def current_handshake() -> HandshakeObserver | None:
    """The handshake the calling task is deciding, or None: policies name the caller and trace their I/O with it."""
    return HANDSHAKE.get()


__all__ = ["HANDSHAKE", "HandshakeObserver", "current_handshake"]
