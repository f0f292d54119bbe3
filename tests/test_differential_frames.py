"""Differential: what a client sees through each connector against what it sees from the upstream directly.

Real uvicorn serving the gateway's protocol, a real ``websockets`` echo upstream. A text message that is
not UTF-8 followed, in the same read, by the client's close frame: websockets parses the whole read
before the message is decoded, so it has answered the close already when the message turns out invalid.
The relay's client leg then called ``send_close(1007)`` on a closing connection: websockets raised
InvalidState, uvicorn logged "Fatal error on transport" with a traceback and dropped the connection, and
the client never got a close frame (1006), where the upstream directly and the splice answer the close.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct

import pytest

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.rawws import ended_after_the_close, next_frame, raw_client_of
from support.servers import UvicornFactory
from support.upstream import UpstreamServer


def _masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    key = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)])  # under 126 bytes
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


CLOSE_1000 = _masked(0x8, struct.pack("!H", 1000))

INVALID_THEN_CLOSE = {
    "whole": _masked(0x1, b"ok \xff") + CLOSE_1000,
    "fragmented": _masked(0x1, b"ok", fin=False) + _masked(0x0, b" \xc3") + CLOSE_1000,
}

CLOSE_CODE = {"splice": 1000, "frame relay": 1007, "relay": 1000}
"""The close code the client gets back. The splice and the relay, as the upstream directly: the close it
answered in that read ends the connection, the invalid message is dropped. The frame relay reads the
message before the close frame and refuses it (1007), as the upstream does when the close comes later."""


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("case", list(INVALID_THEN_CLOSE))
async def test_invalid_text_then_the_clients_close_in_one_read_is_answered_with_a_close_frame(
    uvicorn_server: UvicornFactory,
    upstream_nodeflate: UpstreamServer,
    caplog: pytest.LogCaptureFixture,
    connector: str,
    case: str,
) -> None:
    gateway = ProbedGateway({"apis": [api_entry(upstream_nodeflate, **CONNECTORS[connector])]})
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/ws/echo")
    reader, writer = await raw_client_of(url)
    writer.write(INVALID_THEN_CLOSE[case])
    async with asyncio.timeout(10):
        opcode, payload = await next_frame(reader)
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, CLOSE_CODE[connector])
        await ended_after_the_close(reader, writer)
    await gateway.settle()
    loud = [(r.name, r.getMessage()[:120]) for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == []
