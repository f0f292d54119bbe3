"""An event loop whose TLS servers give a client's handshake, and its close, the request-head deadline.

A server that terminates TLS itself (``uvicorn --ssl-keyfile ... --ssl-certfile ...``) hands a
connection to its protocol only once the TLS handshake is done. Until then the gateway's request-head
deadline (:mod:`.head_deadline`, 10 s) and its shedding near the open-file limit do not see it: the
event loop's own handshake bound holds it, ``ssl_handshake_timeout``, 60 s in asyncio and uvloop,
which uvicorn leaves as it is. A client that opened TCP and sent nothing, or its ClientHello a byte a
second, held its descriptor for 60 s, and 113 of them held every descriptor of a worker under a 128
open-file limit: for those 60 s each new client was closed unserved, and nothing was logged (a plain
text worker sheds them and serves on).

:func:`tls_bounded_loop` is uvicorn's ``--loop`` for a server that ends TLS itself: the loop
uvicorn would pick (uvloop when installed, else asyncio's), whose TLS servers bound the handshake to
``header_timeout``. A connection then holds a descriptor for at most twice that before its request
head is read (the handshake, then the head).

Nor was a connection in its handshake shed near the open-file limit: the loop's server wraps it in its
TLS layer out of sight, and only the handshake's end hands it over. 200 connections that sent nothing,
each one closed opened again at once, held a worker under a 128 open-file limit at that limit for as
long as they went on: no TLS client was served (0 of 143 in 15 s), where plain text served 145 of 145.
Here a TLS connection is set up as the loop's server sets it up (the loop's own TLS protocol class), from
the accepted connection (:class:`_TLSAccept`): it lands among the connections waiting for a request head
(:data:`~.head_deadline.HEAD_WAITERS`) at once, makes room if its descriptor is near the limit, and is
shed, the longest waiting first, until its handshake ends.

The close keeps the loop's bound (``ssl_shutdown_timeout``, 30 s): its timer also covers writing out
what the transports still hold at the close, and ``header_timeout`` there cut a client still reading a
response written at once (1 s: 3,997,696 bytes of 8 MiB read). The gateway's protocols let go of a
closing TLS connection whose peer takes in nothing for ``header_timeout`` themselves (:mod:`.tls_close`)::

    uvicorn app:app --ssl-keyfile key.pem --ssl-certfile cert.pem \\
        --loop asgi_ws_gateway.server:tls_bounded_loop \\
        --ws asgi_ws_gateway.server:GatewayWebSocketProtocol --http asgi_ws_gateway.server:GatewayHTTPProtocol
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, cast

from .head_deadline import HEAD_WAITERS, HeadDeadline

logger = logging.getLogger(__name__)

_TLS: Callable[..., asyncio.BaseProtocol] = sslproto.SSLProtocol
_WITHOUT_UVLOOP_TLS: str | None = None
"""Why the loop is uvloop's but its TLS layer asyncio's (None: both the loop's own), logged once a process."""
try:
    import uvloop
except ImportError:  # pragma: no cover  (uvicorn[standard]'s, but not on every platform)
    _BASE: type[asyncio.AbstractEventLoop] = asyncio.SelectorEventLoop
else:
    _BASE = uvloop.Loop
    try:
        from uvloop.loop import SSLProtocol as _UVLOOP_TLS  # type: ignore[attr-defined]  # (not in its stubs)
    except ImportError:
        # A name uvloop does not export: a release without it kept the whole server off uvloop (the
        # upstream leg, Redis and every timer included) for want of its TLS protocol. asyncio's runs on
        # uvloop's transports (it asks only what any transport answers): TLS costs what it does on
        # asyncio's loop, the rest keeps uvloop.
        _WITHOUT_UVLOOP_TLS = (
            f"uvloop {getattr(uvloop, '__version__', '?')} has no uvloop.loop.SSLProtocol: "
            "TLS connections use asyncio's TLS layer on uvloop's event loop"
        )
    else:
        _TLS = _UVLOOP_TLS


class _TLSAccept(asyncio.Protocol):
    """A TLS server's accepted connection, before its handshake: it puts the loop's TLS protocol between the
    connection and the server's own protocol, as the loop's server does, and waits among the connections
    that may be shed (:data:`~.head_deadline.HEAD_WAITERS`) until the handshake ends."""

    transport: asyncio.Transport

    def __init__(
        self, loop: asyncio.AbstractEventLoop, app: asyncio.BaseProtocol, settings: tuple[ssl.SSLContext, float, Any]
    ) -> None:
        self.loop, self._app, self._settings = loop, app, settings
        self._handshake: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        context, handshake_timeout, shutdown_timeout = self._settings
        self.transport = cast(asyncio.Transport, transport)
        tls = _TLS(self.loop, self._app, context, self._handshake, server_side=True,
                   ssl_handshake_timeout=handshake_timeout, ssl_shutdown_timeout=shutdown_timeout)  # fmt: skip
        del self._app  # (the TLS protocol holds it from here)
        HEAD_WAITERS.admitted(self, transport)  # near the open-file limit: room made, this one not counted
        HEAD_WAITERS.waiting[self] = None
        self._handshake.add_done_callback(self._ended)
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def _ended(self, handshake: asyncio.Future[None]) -> None:
        """The handshake ended: done (the server's protocol has the connection), failed, or cut short."""
        HEAD_WAITERS.waiting.pop(self, None)
        if not handshake.cancelled() and handshake.exception() is not None:
            self.transport.abort()  # (the TLS protocol closed it already: the loop's server makes sure too)

    def shed(self) -> None:
        """Closed to make room for new connections (the process is near its open-file limit)."""
        HEAD_WAITERS.waiting.pop(self, None)
        if not self._handshake.done():
            self.transport.abort()


_Factory = Callable[[], asyncio.BaseProtocol]


def _bounded(
    loop: asyncio.AbstractEventLoop, factory: _Factory, kwargs: dict[str, Any]
) -> tuple[_Factory, dict[str, Any]]:
    """``create_server``'s protocol factory and keyword arguments; for a TLS server, a plain one's whose
    protocol sets up TLS on each connection (:class:`_TLSAccept`), its handshake bounded to ``header_timeout``
    unless the caller bounded it. Its close keeps the loop's bound: that timer also covers writing out what
    the transports hold, and cut a client still reading (:mod:`.tls_close` bounds a peer taking in nothing)."""
    context = kwargs.get("ssl")
    if not isinstance(context, ssl.SSLContext):
        return factory, kwargs  # plain (or ssl=True, which the loop refuses on a server)
    kwargs = dict(kwargs, ssl=None)
    settings = (context, kwargs.pop("ssl_handshake_timeout", None) or HeadDeadline.header_timeout,
                kwargs.pop("ssl_shutdown_timeout", None))  # fmt: skip
    return (lambda: _TLSAccept(loop, factory(), settings)), kwargs


class _BoundsTLS:
    """Mixed in before an event loop class: its TLS servers shed a handshake near the open-file limit and
    bound it (:func:`_bounded`)."""

    bounds_tls = True  # read by head_deadline: no warning on this loop

    async def create_server(self, protocol_factory: _Factory, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        factory, kwargs = _bounded(self, protocol_factory, kwargs)  # type: ignore[arg-type]
        return await super().create_server(factory, *args, **kwargs)  # type: ignore[misc, no-any-return]

    async def create_unix_server(self, protocol_factory: _Factory, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        factory, kwargs = _bounded(self, protocol_factory, kwargs)  # type: ignore[arg-type]
        return await super().create_unix_server(factory, *args, **kwargs)  # type: ignore[misc, no-any-return]


_LOOP: type[asyncio.AbstractEventLoop] = type("TLSBoundedLoop", (_BoundsTLS, _BASE), {})


def tls_bounded_loop() -> asyncio.AbstractEventLoop:
    """A new event loop (uvloop when installed, else asyncio's) whose TLS servers time a handshake out
    after ``header_timeout`` seconds (``$ASGI_WS_GATEWAY_HEADER_TIMEOUT``, default 10), not 60.

    uvicorn's ``--loop`` (0.36 or later: a loop factory) for a server that terminates TLS itself. With a
    uvloop that does not export its TLS protocol, the loop is still uvloop's and its TLS layer asyncio's
    (said once, at WARNING).
    """
    global _WITHOUT_UVLOOP_TLS
    if _WITHOUT_UVLOOP_TLS is not None:
        logger.warning("%s", _WITHOUT_UVLOOP_TLS)
        _WITHOUT_UVLOOP_TLS = None  # once a process (each worker says it)
    return _LOOP()


__all__ = ["tls_bounded_loop"]
