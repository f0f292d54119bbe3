"""uvicorn's HTTP protocols with a deadline for the request head (slowloris).

uvicorn closes idle keep-alive connections, but a client that opens a connection and sends its
request head a byte at a time (or not at all) keeps it for as long as it likes: every WebSocket
handshake passes through this stage, before the WebSocket protocol exists. ``GatewayHTTPProtocol``
(httptools) and ``GatewayH11Protocol`` (h11) give each request head ``header_timeout`` seconds
from the connection (or the previous response) on; a client that is late gets ``408 Request
Timeout`` (or, when it sent nothing, a plain close).

The deadline is ``$ASGI_WS_GATEWAY_HEADER_TIMEOUT`` seconds (default 10), read once at import; a
subclass may set ``header_timeout`` instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_ENV = "ASGI_WS_GATEWAY_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 10.0

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 26\r\nconnection: close\r\n\r\nrequest head not complete\n"
)


def _header_timeout_from_env() -> float:
    raw = os.environ.get(HEADER_TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_HEADER_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{HEADER_TIMEOUT_ENV}: expected a positive number of seconds, got {raw!r}")
    return value


class _HeadDeadline(asyncio.Protocol):
    """The request-head deadline, for either of uvicorn's HTTP protocols (mixed in before it)."""

    header_timeout: float = _header_timeout_from_env()
    _head_timer: asyncio.TimerHandle | None = None
    _head_started = False
    # Provided by uvicorn's protocol class:
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    logger: logging.Logger
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_head():
            self._head_started = True
            self._arm()
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._head_started = False
        if self._waiting_for_head():  # the next request's head gets a fresh deadline
            self._disarm()
            self._arm()

    def _waiting_for_head(self) -> bool:
        """True while no request is being served and the connection was not handed to a WebSocket protocol."""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return False
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._waiting_for_head():
            return
        if self._head_started:  # a client that sent nothing gets no response, as on a keep-alive timeout
            client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
            self.logger.info("%s - request head not complete after %gs: 408", client, self.header_timeout)
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


class GatewayHTTPProtocol(_HeadDeadline, HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` that closes a connection whose request head is not complete in time.

    Attributes:
        header_timeout: seconds a client has to send a complete request head (request line and
            headers), counted from the connection or from the end of the previous response.
            Default 10, or ``$ASGI_WS_GATEWAY_HEADER_TIMEOUT``.
    """


class GatewayH11Protocol(_HeadDeadline, H11Protocol):
    """The same deadline on uvicorn's pure-Python ``H11Protocol``.

    Use it with ``--http asgi_ws_gateway.server:GatewayH11Protocol`` where httptools is not installed.
    """


__all__ = ["DEFAULT_HEADER_TIMEOUT", "HEADER_TIMEOUT_ENV", "GatewayH11Protocol", "GatewayHTTPProtocol"]
