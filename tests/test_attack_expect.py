"""Attacks on backend health through the client's request: ``Expect: 100-continue``.

An upgrade request carries no content, so ``Expect`` asks nothing a handshake needs (RFC 9110
§10.1.1), but the gateway forwarded it, and an upstream behind nginx answers it with ``100
Continue`` before its 101 (nginx 1.x answers any request with the expectation so). The gateway
takes an answer that is neither 101 nor a refusal for a failed backend: each such handshake was a
502, and three of them put a healthy backend into cooldown for every other client. ``Expect`` is
not forwarded now. A raw upstream answers as nginx does, for the splice and the relay.
"""

from __future__ import annotations

import asyncio

import pytest

from support.gateway import PASSTHROUGH, ProbedGateway, gateway_config
from support.rawhttp import accept_upstream, handshake
from support.servers import UvicornServer


class _NginxLike:
    """An upstream that answers ``100 Continue`` to a request with ``Expect: 100-continue``, then 101."""

    def __init__(self) -> None:
        self.expectations = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"\r\nexpect:" in head.lower():
            self.expectations += 1
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        reader.feed_data(head)  # accept_upstream reads the request again
        await accept_upstream(reader, writer)
        writer.close()  # the handshake is what is measured: the connection ends at once


@pytest.mark.parametrize("mode", ["splice", "relay"])
async def test_expect_100_continue_is_not_forwarded_and_no_backend_cools_down(mode: str) -> None:
    """Before: 502 for each, ``backend ... failed 3 times in a row; skipped for 10 s``. Now: 101 each."""
    upstream = _NginxLike()
    listener = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    api = {"passthrough": False} if mode == "relay" else {}
    gateway = ProbedGateway(gateway_config(f"ws://127.0.0.1:{port}", unhealthy_after=3, **api))
    statuses = []
    async with listener:
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            for _ in range(4):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(handshake(extra=b"Expect: 100-continue\r\n"))
                line = await asyncio.wait_for(reader.readline(), 10)
                statuses.append(int(line.split(b" ", 2)[1]))
                writer.close()
            await gateway.settle()
    assert statuses == [101] * 4
    assert upstream.expectations == 0
