"""A request the HTTP parser refuses (400) while its client is still sending gets its answer whole.

uvicorn's ``send_400_response`` writes the 400 and closes the socket at once. With the client's bytes
still unread, Linux answers that close with a reset, and the client (still sending, or reading after it
sent) read ECONNRESET instead of the 400: the answer was lost, as the gateway's own 408/414/431 were before
they half-closed (``HeadDeadline._refuse``). Now the parser's 400 closes the same way: the answer, a FIN,
what still arrives dropped, the close 2 s later. And under h11, a bad chunk of a body the application was
already answering made its response (after the 400) raise: a traceback logged per bad request; now that
application is told the request is over. A real uvicorn with each of the gateway's HTTP protocols; raw
clients that send a bad head and 4 MiB behind it in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway.server import GatewayH11Protocol, GatewayHTTPProtocol, GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import not_found
from support.configs import build_config
from support.servers import UvicornServer

BAD_HEADS = {
    "control byte in the target": b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    "two Content-Lengths": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "space before the colon": b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    "a bad chunk": b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}
BEHIND = 4 << 20
"""Bytes the client sends right behind the bad head: more than the socket buffers hold."""


def _refused_while_sending(port: int, head: bytes) -> bytes:
    """Send ``head`` and :data:`BEHIND` bytes behind it (from a thread) while reading; what was read, or
    ``b"RESET"`` appended when the connection was reset."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)

    def send() -> None:
        with contextlib.suppress(OSError):  # the gateway closed: EPIPE or a reset, after its answer
            sock.sendall(head + bytes(BEHIND))

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while block := sock.recv(65536):
            received += block
    except ConnectionResetError:
        received += b"RESET"
    finally:
        sender.join(15)
        sock.close()
    return received


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
@pytest.mark.parametrize("name", BAD_HEADS)
async def test_the_parsers_400_reaches_a_client_still_sending(
    http: object, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = WebSocketGateway(not_found, config=build_config())
    with caplog.at_level(logging.INFO), UvicornServer(gateway, ws=GatewayWebSocketProtocol, http=http) as server:  # type: ignore[arg-type]
        received = await asyncio.to_thread(_refused_while_sending, server.port, BAD_HEADS[name])
    assert received.startswith(b"HTTP/1.1 400 "), received[:200]
    assert b"Invalid HTTP request received." in received, received[:400]
    assert not received.endswith(b"RESET"), received[-200:]
    # The application answering the request (a bad body comes after the head) is told it is over: its
    # response after the 400 was h11's LocalProtocolError, logged with its traceback.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


CHUNKED_POST = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def _instrumented(base: Any, lost: list[str]) -> Any:
    """``base`` that records its ``connection_lost`` in ``lost``."""

    class Instrumented(base):  # type: ignore[misc]
        def connection_lost(self, exc: Exception | None) -> None:
            lost.append("connection_lost")
            super().connection_lost(exc)

    return Instrumented


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
async def test_an_application_waiting_for_the_body_is_told_at_the_400(http: object) -> None:
    """It wakes in ``receive()`` with ``http.disconnect`` as the 400 goes out, not at the close that follows."""
    events: list[str] = []
    waiting = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        waiting.set()  # and receive() is waiting before the loop reads anything more
        events.append((await receive())["type"])

    protocol = _instrumented(http, events)
    with UvicornServer(app, http=protocol, lifespan="off") as server:

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(CHUNKED_POST)
                waiting.wait(10)
                sock.sendall(b"zz\r\n")
                received = b""
                while block := sock.recv(65536):  # the 400, then the gateway's FIN
                    received += block
            return received  # and the client's close: the gateway's connection_lost

        received = await asyncio.to_thread(exchange)
    # The server stopped: the client's close was its connection_lost, and the application has returned.
    assert received.startswith(b"HTTP/1.1 400 "), received
    assert events == ["http.disconnect", "connection_lost"]
