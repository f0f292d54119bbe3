"""A client that reads nothing and an application that streams to it, for the relay's client-leg tests."""

from __future__ import annotations

import socket
import threading

from asgi_ws_gateway.standalone import not_found
from support.apps import ASGIApp, Receive, Scope, Send

__all__ = ["MESSAGE", "SMALL_BUFFER", "small_socket", "streaming_app"]

MESSAGE = b"y" * 65536
"""What :func:`streaming_app` sends, again and again."""
SMALL_BUFFER = 8192
"""The clients' SO_RCVBUF: what their kernel takes in for them stays small."""


def small_socket(port: int) -> socket.socket:
    """A non-blocking socket connected to ``port`` with a receive buffer of ``SMALL_BUFFER`` (set before
    connecting: the window it offers), for a client that reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def streaming_app(ended: threading.Event, *, other_scopes: bool = False) -> ASGIApp:
    """An ASGI WebSocket app sending ``MESSAGE`` as fast as it may; ``ended`` once it returns.

    ``other_scopes``: it also answers what is not a WebSocket (404, lifespan accepted), as the
    application under a gateway must; as an in-process upstream it gets WebSockets only.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if other_scopes and scope["type"] != "websocket":
            await not_found(scope, receive, send)
            return
        try:
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            while True:
                await send({"type": "websocket.send", "bytes": MESSAGE})
        except OSError:
            pass  # the client is gone
        finally:
            ended.set()

    return app
