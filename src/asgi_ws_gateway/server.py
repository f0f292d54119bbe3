"""A uvicorn WebSocket protocol that lets the application take the raw stream after the handshake.

Use it with ``uvicorn --ws asgi_ws_gateway.server:PassthroughWebSocketProtocol`` or
``uvicorn.Config(ws=PassthroughWebSocketProtocol)``. It is uvicorn's ``websockets-sansio``
implementation unchanged (upgrade, denials with ``websocket.http.response``, the ASGI WebSocket
flow), plus the ``asgi_ws_gateway.passthrough`` scope extension: instead of ``websocket.accept`` the
application may send::

    {"type": "asgi_ws_gateway.passthrough.accept", "subprotocol": ..., "headers": [...],
     "extensions": "<Sec-WebSocket-Extensions value or None>", "protocol": <asyncio.Protocol>,
     "on_started": <callable>, "on_shutdown": <callable>}

The server answers 101 with those headers (the extensions it negotiated itself are dropped:
the application negotiated them end to end), stops parsing, and hands the transport to
``protocol``; ``on_started()`` follows at once, ``on_shutdown()`` when the server shuts down.
The application's call must not return before the connection is over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from .passthrough import ACCEPT, EXTENSION


class PassthroughWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus the ``asgi_ws_gateway.passthrough`` extension."""

    passed_through = False
    _on_shutdown: Callable[[], None] | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.handshake_complete:  # set before the ASGI task first runs
            scope["extensions"][EXTENSION] = {}

    async def send(self, message: Any) -> None:
        if message["type"] != ACCEPT:
            await super().send(message)
            return
        if self.handshake_complete or self.initial_response is not None:
            raise RuntimeError(f"Unexpected ASGI message '{ACCEPT}' after the handshake.")
        if self.disconnected or self.transport.is_closing():
            from uvicorn.protocols.utils import ClientDisconnected

            raise ClientDisconnected()
        self.logger.info('%s - "WebSocket %s" [accepted]', get_client_addr(self.scope),
                         get_path_with_query_string(self.scope))  # fmt: skip
        response = self.response
        del response.headers["Date"]
        if "Sec-WebSocket-Extensions" in response.headers:
            del response.headers["Sec-WebSocket-Extensions"]  # negotiated end to end instead
        for name, value in self.default_headers + list(message.get("headers", [])):
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        if message.get("subprotocol"):
            response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]
        if message.get("extensions"):
            response.headers["Sec-WebSocket-Extensions"] = message["extensions"]
        self.handshake_complete = True
        self.passed_through = True
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        protocol = message["protocol"]
        self._on_shutdown = message.get("on_shutdown")
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        message["on_started"]()

    def shutdown(self) -> None:
        if not self.passed_through:
            super().shutdown()
        elif self._on_shutdown is not None:
            self._on_shutdown()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if self.passed_through:  # connection_lost went to the splice's protocol, not here
            self.connections.discard(self)


__all__ = ["PassthroughWebSocketProtocol"]
