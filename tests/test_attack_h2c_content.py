"""A request that asks to switch protocols (``Upgrade: h2c``) and is answered as plain HTTP, under httptools.

httptools takes such a request's message to end with its head and stops parsing there: the
application got an empty body whatever the request declared (``curl --http2 -d ...`` on an
``http://`` URL sends exactly that), and any byte the client sent later was parsed as a new request,
an error: a 400 was written and the connection closed before the request's own answer. Real uvicorn
with the gateway's HTTP protocols (httptools and h11, which read the content already) in front of an
application that echoes the body it received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import Receive, Scope, Send
from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from support.rawhttp import exchange, status_of
from support.servers import UvicornServer

PROTOCOLS: dict[str, Any] = {"httptools": GatewayHTTPProtocol, "h11": GatewayH11Protocol}
GATEWAY_WS: Any = GatewayWebSocketProtocol

H2C = b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"


async def echo_body(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the body it received; ``/slow`` answers a moment later."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(0.3)  # the client's next bytes arrive before the answer
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=sorted(PROTOCOLS))
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    app = WebSocketGateway(echo_body, config={"apis": []})
    with UvicornServer(app, ws=GATEWAY_WS, http=PROTOCOLS[request.param]) as server:
        yield server.port


CONTENT = {
    "content-length": b"Content-Length: 10\r\n" + H2C + b"\r\n0123456789",
    "chunked": b"Transfer-Encoding: chunked\r\n" + H2C + b"\r\n4\r\n0123\r\n6;x=y\r\n456789\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("framing", list(CONTENT))
@pytest.mark.parametrize("dribble", [None, 0.002], ids=["one read", "a byte a read"])
async def test_the_content_of_a_request_answered_as_http_reaches_the_application(
    port: int, framing: str, dribble: float | None
) -> None:
    """The application gets the body the request declared (under httptools it got b"")."""
    response = await exchange(port, b"POST /echo HTTP/1.1\r\nHost: gw\r\n" + CONTENT[framing], dribble=dribble)
    assert status_of(response) == 200
    assert response.endswith(b"\r\n\r\n0123456789"), response


async def test_bytes_after_a_request_answered_as_http_do_not_cut_its_answer(port: int) -> None:
    """What the client sends after it, in later reads (anything: here bytes no HTTP parser takes), is
    dropped: the answer is the request's own, not a 400 sent while the application still worked on
    it, and the only one."""
    head = b"GET /slow HTTP/1.1\r\nHost: gw\r\n" + H2C + b"\r\n"
    response = await exchange(port, head + b"\x16\x03\x01\x00\x05hello", dribble=0.002)
    assert status_of(response) == 200
    assert response.count(b"HTTP/1.1 ") == 1, response


async def test_malformed_content_after_such_a_request_is_a_400(port: int) -> None:
    """A chunk size that is no number: a 400 and the connection closed, as for any malformed request."""
    request = b"POST /echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n" + H2C + b"\r\nzz\r\n"
    assert status_of(await exchange(port, request)) == 400
