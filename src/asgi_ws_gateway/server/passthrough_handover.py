"""The ``asgi_ws_gateway.passthrough`` scope extension's accept: the server answers 101 with the
application's headers and hands the transport to the application's protocol (the splice)."""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected, get_client_addr

from .client_leg import ClientLeg
from .log_lines import ACCEPTED, UVICORN_ERROR, connection_line_level, logged_path


class PassthroughHandover(ClientLeg):
    """Answer the handshake for the application and give it the connection (see :mod:`.websocket`)."""

    async def _pass_through(self, message: Any) -> None:
        if self.disconnected or self.transport.is_closing():
            raise ClientDisconnected()
        # Checked before its level is decided and its arguments built: both cost more than the check.
        if UVICORN_ERROR.isEnabledFor(logging.INFO) and UVICORN_ERROR.isEnabledFor(level := connection_line_level()):
            # uvicorn's line, without the query string (as PathOnly writes it), straight to the logger.
            scope = self.scope
            UVICORN_ERROR.log(level, ACCEPTED, get_client_addr(scope), logged_path(scope["path"]))
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
        self._release_early_data(protocol)
        # The connection is the application's protocol's now. What parsed and answered the handshake
        # (websockets' protocol with the parsed request and response, the receive queue) would stay
        # allocated for the connection's whole life: idle spliced connections are many.
        del self.conn, self.request, self.response, self.queue, self.writable


__all__ = ["PassthroughHandover"]
