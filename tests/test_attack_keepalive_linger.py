"""uvicorn's keep-alive timer does not cut a lingering close short.

A response's end arms uvicorn's keep-alive timer (``timeout_keep_alive``), which only a read that reaches
uvicorn's parser disarms. A 400 that waited for a response before it (a bad request pipelined behind it),
or a 431 read whole in one go, closes lingering (``passthrough/lingering_close.py``: a FIN once all is
written, what arrives read and dropped) with that timer still armed, and the transport is not closing
(a FIN written is no close): the timer closed it outright while the linger still delivered to a slow
reader. The client's next bytes then met a closed socket, and the kernel reset the connection: the rest
of the response and the 400 or 431 behind it were lost.

uvicorn's shutdown (SIGTERM) did the same: it closed such a connection's transport outright. Now it is
left to its linger, and dropped at half of ``timeout_graceful_shutdown`` if it still delivers then.

A real uvicorn with each of the gateway's HTTP protocols and ``timeout_keep_alive=1``; a raw client with a
small receive buffer that reads slowly and sends a little as it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from typing import Any

import pytest

from asgi_ws_gateway.server import GatewayH11Protocol, GatewayHTTPProtocol
from support.servers import UvicornServer

BODY = 8 << 20
"""The response's body: written whole at once, and still on its way to the slow reader seconds later."""
READ, PAUSE = 32 << 10, 0.005
"""The client reads this much (16 KiB a read, its receive buffer's), then pauses this long (seconds): ~3.3 MB/s
at most, 2.6 s for ``BODY`` at the least (8 MiB at 0.01 s took ~5 s), past ``timeout_keep_alive`` (1 s) and
half of a ``timeout_graceful_shutdown`` of 1 s."""
BAD_REQUEST = b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"
GET_BIG = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD_BEGUN = b"GET / HTTP/1.1\r\nHost: x\r\n"
AFTER = {
    # name: (what is pipelined behind the request for the large response, the answer to it, header_timeout)
    "a 400 that waited for the response": (BAD_REQUEST, b"HTTP/1.1 400 ", 10.0),
    "a 408 for a head begun behind it": (HEAD_BEGUN, b"HTTP/1.1 408 ", 0.3),  # before the keep-alive's 1 s
}


async def _big(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"content-length", str(BODY).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": bytes(BODY)})


def _slow_exchange(port: int, then: bytes, read: threading.Event | None = None) -> bytes:
    """``GET /big`` and ``then`` in one write, read slowly to EOF, sending a byte per read in the middle of
    the response (the refusal is written by then); what was read, and ``b"RESET"`` if the connection was reset.
    ``read``: set once a MiB is read (the refusal is written and its linger begun by then), and at the end."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    sock.settimeout(15)
    received = b""
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(GET_BIG + then)
        while block := sock.recv(READ):
            received += block
            if read is not None and len(received) > 1 << 20:
                read.set()
            if BODY // 2 < len(received) < BODY * 3 // 4:  # a client sending on (not near the end: no race)
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            time.sleep(PAUSE)
        return received
    except ConnectionResetError:
        return received + b"RESET"
    finally:
        if read is not None:
            read.set()
        sock.close()


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
@pytest.mark.parametrize("name", AFTER)
async def test_the_keepalive_timer_does_not_cut_a_lingering_close_short(http: Any, name: str) -> None:
    """The response and the refusal behind it reach a slow reader whole, past ``timeout_keep_alive``."""
    then, answer, header_timeout = AFTER[name]
    protocol = type("Protocol", (http,), {"header_timeout": header_timeout})
    with UvicornServer(_big, http=protocol, lifespan="off", timeout_keep_alive=1) as server:
        received = await asyncio.to_thread(_slow_exchange, server.port, then)
    assert not received.endswith(b"RESET"), (len(received), received[-200:])
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), received[:200]
    assert len(rest) > BODY and rest[BODY:].startswith(answer), (len(rest), rest[BODY : BODY + 200])


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
async def test_the_servers_shutdown_does_not_cut_a_lingering_close_short(http: Any) -> None:
    """The server shuts down (SIGTERM) while a refusal's linger still delivers the response before it to a
    slow reader, within the shutdown's bound: the response and the 400 reach it whole. uvicorn's shutdown
    closed the transport outright, and the client's next bytes had the kernel reset the connection."""
    read = threading.Event()
    server = UvicornServer(_big, http=http, lifespan="off", timeout_graceful_shutdown=30)
    server.start()
    try:
        exchange = asyncio.create_task(asyncio.to_thread(_slow_exchange, server.port, BAD_REQUEST, read))
        await asyncio.to_thread(read.wait, 15)
    finally:
        await asyncio.to_thread(server.stop)
    received = await exchange
    assert not received.endswith(b"RESET"), (len(received), received[-200:])
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), received[:200]
    assert len(rest) > BODY and rest[BODY:].startswith(b"HTTP/1.1 400 "), (len(rest), rest[BODY : BODY + 200])


@pytest.mark.parametrize("http", [GatewayHTTPProtocol, GatewayH11Protocol], ids=["httptools", "h11"])
async def test_a_lingering_close_still_delivering_past_the_shutdowns_wait_is_dropped(
    http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The same linger, with half of ``timeout_graceful_shutdown`` shorter than the slow read: it is dropped
    then, with one INFO line, and nothing at ERROR (the shutdown stays bounded)."""
    read = threading.Event()
    server = UvicornServer(_big, http=http, lifespan="off", timeout_graceful_shutdown=1, log_level="info")
    server.start()
    try:
        exchange = asyncio.create_task(asyncio.to_thread(_slow_exchange, server.port, BAD_REQUEST, read))
        await asyncio.to_thread(read.wait, 15)
    finally:
        with caplog.at_level(logging.INFO):
            await asyncio.to_thread(server.stop)
    received = await exchange
    assert len(received) < BODY, len(received)  # dropped before its end
    assert "a refusal still being delivered at shutdown was dropped" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
