"""Audit, end to end: a frame whose 64-bit length has its top bit set (RFC 6455 §5.2: it MUST be 0) is a
framing error, not a message over the limit, on every connector. A real uvicorn serves the gateway's
protocol in front of a raw upstream. An upstream's: the upstream gets 1002 "invalid frame length" and
the client 1011 "upstream connection failed", as for any frame that breaks the framing rules; a
client's: the client gets 1002 "invalid frame length" (docs/security.md, "A 64-bit length with its top
bit set"). The relay (``passthrough: false``, websockets' parser) said 1001/1009 "message too big" before.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

import pytest

from support.clients import connect, expect_close
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import (  # noqa: F401 - the fixture hostile
    CONNECTORS,
    Handler,
    gateway_before,
    hostile_upstream,
    sends_then_answers_close,
)
from support.rawws import close_frame_in, raw_client
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("length", [0, 5])
async def test_an_upstream_length_with_the_top_bit_set_is_a_protocol_error_not_a_message_too_big(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, length: int
) -> None:
    got: list[bytes] = []
    top_bit = b"\x82\x7f" + struct.pack("!Q", length | 1 << 63) + b"x" * length  # and length bytes of it
    port = await hostile(sends_then_answers_close(top_bit, got))
    gateway, url = gateway_before(port, connector, uvicorn_server, ping_interval=None)
    async with await connect(url) as ws:
        assert await expect_close(ws) == (1011, "upstream connection failed")
    await gateway.settle()
    assert got == [b"\x88\x03\xeainvalid frame length"]  # 1002


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("length", [0, 5])
async def test_a_clients_length_with_the_top_bit_set_is_a_protocol_error_not_a_message_too_big(
    upstream: UpstreamServer, uvicorn_server: UvicornFactory, connector: str, length: int
) -> None:
    gateway = ProbedGateway({"apis": [api_entry(upstream, **CONNECTORS[connector])]})
    server = uvicorn_server(gateway, ws=PASSTHROUGH)
    reader, writer = await raw_client(server.port, deflate=False)
    try:
        writer.write(b"\x82\xff" + struct.pack("!Q", length | 1 << 63) + b"\x00\x00\x00\x00" + b"x" * length)
        await writer.drain()
        assert await asyncio.wait_for(close_frame_in(reader), 10) == (1002, b"invalid frame length")
    finally:
        writer.close()
    await gateway.settle()
