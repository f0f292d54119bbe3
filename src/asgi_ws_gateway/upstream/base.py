"""What every connector provides: a connection's ``recv``/``send``/``close`` and the end of one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from .._types import Data, Headers, Scope


class UpstreamClosed(Exception):
    """The upstream connection is over.

    Attributes:
        code: the close code the upstream sent (``by_peer``), or the one this side sent when it
            failed the connection (1006 when the TCP connection was lost without a close frame).
        reason: the matching close reason.
        by_peer: True if the upstream closed; False if this side failed the connection (a
            protocol error, an oversize message, a keepalive timeout, a lost connection).
        messages_sent: how many messages the upstream had been sent when it closed, when the
            connection counts them (None: it does not).
    """

    def __init__(self, code: int, reason: str, *, by_peer: bool, messages_sent: int | None = None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.by_peer = by_peer
        self.messages_sent = messages_sent


class UpstreamStalled(UpstreamClosed):
    """The upstream took nothing for the keepalive window while a message waited for it (an in-process
    app; a network upstream whose keepalive ping could not be written): the gateway dropped it, so the
    close is the gateway's, not the upstream's; the relay records it as the splice records a stall, and
    passive health does not count it."""

    def __init__(self) -> None:
        super().__init__(1011, "upstream read nothing", by_peer=False)


class UpstreamConnection(Protocol):
    """An open WebSocket connection to a backend, as the relay uses it."""

    subprotocol: str | None
    response_headers: Headers

    @property
    def ended(self) -> asyncio.Future[None] | None:
        """Done once the connection is over on the upstream's side (its close frame in, its TCP connection
        lost, or closed by the gateway), while ``recv`` may still return messages that came before it: what
        the relay bounds their delivery to a client by. None: the connector does not tell (``recv`` raising
        :class:`UpstreamClosed` is the first word of it)."""
        ...

    async def recv(self) -> Data:
        """Next message; raises :class:`UpstreamClosed` when the connection is over."""
        ...

    async def send(self, data: Data) -> None:
        """Send one message, waiting while the upstream applies backpressure."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close (idempotent, bounded in time); never raises for an already-closed connection."""
        ...


@dataclass
class UpstreamRequest:
    """The upstream handshake being built for one client (later stages may change it)."""

    url: str
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    scope: Scope = field(repr=False)
    path_params: dict[str, str] = field(default_factory=dict)
    picked_host: bool = False
    """Whether a handshake value picked the URL's host or port (a claim in a ``set-backend-service`` host, a
    URL a custom policy set): connected to under the stricter :attr:`~.address_guard.AddressGuard.picked`."""


class Connector(Protocol):
    async def connect(self, request: UpstreamRequest) -> UpstreamConnection: ...


__all__ = ["Connector", "UpstreamClosed", "UpstreamConnection", "UpstreamRequest", "UpstreamStalled"]
