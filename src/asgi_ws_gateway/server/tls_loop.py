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
from typing import Any

from .head_deadline import HeadDeadline


def _bounded(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``create_server``'s keyword arguments, a TLS server's handshake bounded to ``header_timeout`` unless
    the caller bounded it. Its close keeps the loop's bound: that timer also covers writing out what the
    transports hold, and cut a client still reading (:mod:`.tls_close` bounds a peer taking in nothing)."""
    if kwargs.get("ssl") is None:
        return kwargs  # a plain server takes none (uvloop raises on it)
    return {**kwargs, "ssl_handshake_timeout": kwargs.get("ssl_handshake_timeout") or HeadDeadline.header_timeout}


class _BoundsTLS:
    """Mixed in before an event loop class: its TLS servers take :func:`_bounded`'s bounds."""

    bounds_tls = True  # read by head_deadline: no warning on this loop

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        return await super().create_server(*args, **_bounded(kwargs))  # type: ignore[misc, no-any-return]

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        return await super().create_unix_server(*args, **_bounded(kwargs))  # type: ignore[misc, no-any-return]


try:
    import uvloop
except ImportError:  # pragma: no cover  (uvicorn[standard]'s, but not on every platform)
    _BASE: type[asyncio.AbstractEventLoop] = asyncio.SelectorEventLoop
else:
    _BASE = uvloop.Loop
_LOOP: type[asyncio.AbstractEventLoop] = type("TLSBoundedLoop", (_BoundsTLS, _BASE), {})


def tls_bounded_loop() -> asyncio.AbstractEventLoop:
    """A new event loop (uvloop when installed, else asyncio's) whose TLS servers time a handshake out
    after ``header_timeout`` seconds (``$ASGI_WS_GATEWAY_HEADER_TIMEOUT``, default 10), not 60.

    uvicorn's ``--loop`` (0.36 or later: a loop factory) for a server that terminates TLS itself.
    """
    return _LOOP()


__all__ = ["tls_bounded_loop"]
