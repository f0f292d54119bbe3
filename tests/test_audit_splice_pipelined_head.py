"""Audit: the request-head size limit holds for a head pipelined behind another in the same read.

Real uvicorn with the gateway's HTTP protocols (httptools, which has no head limit of its own, and
h11) and its WebSocket protocol. A served request and an oversized one sent in one write: the second
gets 431 as it would alone. On h11 it was served: h11 parsed it from its buffer after the first
answer, and the read that brought it had been counted toward the first request's head, which ended
within the limit. (httptools may overshoot by the part of the next head it parsed in the slice that
ended the answered request, 2 KiB at most; the oversized head here is 4 KiB over.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from asgi_ws_gateway.server.head_deadline import DEFAULT_MAX_HEAD_BYTES
from asgi_ws_gateway.server.http import GatewayH11Protocol, GatewayHTTPProtocol
from asgi_ws_gateway.server.websocket import GatewayWebSocketProtocol
from asgi_ws_gateway.standalone import create_app
from support.rawhttp import EOF_TIMEOUT, exchange
from support.servers import UvicornServer
from support.upstream import UpstreamServer

PROTOCOLS: dict[str, Any] = {"httptools": GatewayHTTPProtocol, "h11": GatewayH11Protocol}
GATEWAY_WS: Any = GatewayWebSocketProtocol
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"
UPGRADE = (
    b"GET /ws/echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
ONE_HUGE = b"X-Big: " + b"a" * (DEFAULT_MAX_HEAD_BYTES + 4096) + b"\r\n"
NEARLY = b"X-Big: " + b"a" * (DEFAULT_MAX_HEAD_BYTES - 200) + b"\r\n"  # the whole head under the limit


@pytest.fixture(params=sorted(PROTOCOLS))
def any_port(request: pytest.FixtureRequest, upstream: UpstreamServer) -> Iterator[int]:
    echo = {"name": "echo", "path": "/ws/echo", "upstreams": [upstream.url("/echo")]}
    app = create_app({"apis": [echo]})  # type: ignore[arg-type]
    with UvicornServer(app, ws=GATEWAY_WS, http=PROTOCOLS[request.param]) as server:
        yield server.port


def _statuses(response: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]


@pytest.mark.parametrize("second", [HEALTH, UPGRADE], ids=["http", "upgrade"])
@pytest.mark.parametrize("first", [HEALTH + b"\r\n", HEALTH + b"Content-Length: 3\r\n\r\nabc"], ids=["get", "body"])
async def test_an_oversized_head_pipelined_behind_a_served_request_gets_431(
    any_port: int, first: bytes, second: bytes
) -> None:
    response = await exchange(any_port, first + second + ONE_HUGE + b"\r\n")
    assert _statuses(response) == [200, 431], response[:300]


@pytest.mark.parametrize("first", [HEALTH + b"\r\n", HEALTH + b"Content-Length: 3\r\n\r\nabc"], ids=["get", "body"])
async def test_a_pipelined_head_within_the_limit_is_served(any_port: int, first: bytes) -> None:
    """Nothing the first request's read brought counts twice: a second head just under the limit passes."""
    response = await exchange(any_port, first + HEALTH + NEARLY + b"Connection: close\r\n\r\n")
    assert _statuses(response) == [200, 200], response[:300]


async def test_a_pipelined_head_begun_in_the_first_read_counts_from_its_start(any_port: int) -> None:
    """The next head's first part comes with the first request, the rest later: the limit counts both parts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", any_port)
    try:
        writer.write(HEALTH + b"\r\n" + HEALTH + ONE_HUGE[: DEFAULT_MAX_HEAD_BYTES - 4096])
        async with asyncio.timeout(EOF_TIMEOUT):
            first = await reader.readuntil(b'{"status": "ok"}')
            await asyncio.sleep(0.05)  # the rest in a later read
            writer.write(ONE_HUGE[DEFAULT_MAX_HEAD_BYTES - 4096 :] + b"\r\n")
            second = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    # h11's own 16 KiB buffer refused a head begun in an earlier read first (400): it now follows the limit.
    assert _statuses(first + second) == [200, 431], (first + second)[:300]
