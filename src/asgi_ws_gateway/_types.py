"""ASGI aliases used across the package (the subset of the spec the gateway speaks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Headers = list[tuple[bytes, bytes]]
"""Raw ASGI headers: lower-case names, latin-1 bytes."""

Data = str | bytes
"""One WebSocket message: ``str`` for a text frame, ``bytes`` for a binary one."""

__all__ = ["ASGIApp", "Data", "Headers", "Message", "Receive", "Scope", "Send"]
