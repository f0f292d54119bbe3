"""A client that reads nothing and an application that streams to it, for the relay's client-leg tests."""

from __future__ import annotations

import socket
import threading

from asgi_ws_gateway.standalone import not_found
from support.apps import ASGIApp, Receive, Scope, Send
from support.rawhttp import handshake

__all__ = ["MESSAGE", "SMALL_BUFFER", "small_socket", "streaming_app", "windowed_client"]

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


def windowed_client(port: int, path: str, window: int | None = None) -> socket.socket:
    """A blocking client of ``path`` whose receive buffer (the window it offers) is ``window`` bytes,
    its 101 read and nothing after it: what follows is read (or not) by the test. ``window`` None: the
    kernel's own."""
    sock = socket.socket()
    if window is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)  # before connect: the window it offers
    sock.settimeout(15)
    sock.connect(("127.0.0.1", port))
    sock.sendall(handshake(path))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def streaming_app(ended: threading.Event, *, other_scopes: bool = False) -> ASGIApp:
    """An ASGI WebSocket app sending ``MESSAGE`` as fast as it may; ``ended`` once it returns.

    ``other_scopes``: it also answers what is not a WebSocket (404, lifespan accepted), as the
    application under a gateway must; else it returns from them (as an in-process upstream, its
    lifespan, which the gateway runs, is then unsupported).
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            if other_scopes:
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
