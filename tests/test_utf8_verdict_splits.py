"""Invalid UTF-8 in a text message gets 1007 however its bytes arrive, on every connector.

Autobahn 6.19.5 and 6.20.1-6.20.3 failed in a CI run beside 15 other cases and passed alone: their
reports showed the client's own 0.5 s timer, with nothing wrong received (tests/test_conformance.py).
This holds the verdict itself to every way the bytes can come: the frame written a byte at a time,
and the message as two fragments cut at every byte (inside a multi-byte sequence too), each fragment a
byte at a time. Each time the client's first frame back is a close with 1007.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Iterator

import pytest

from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS
from support.rawws import next_frame, raw_client_of
from support.servers import UvicornFactory
from support.upstream import UpstreamServer

INVALID = {
    "6.19.5": b"\xfc\x80\x80\x80\x80\x80",  # an overlong NUL, six bytes
    "6.20.1": b"\xed\xa0\x80",  # a lone UTF-16 surrogate
    "after valid text": "κόσμε".encode() + b"\xed\xad\xbf" + b"!",
}


def _masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    key = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)])  # under 126 bytes
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _ways(payload: bytes) -> Iterator[bytes]:
    """The message whole, then as a text fragment and its continuation cut at every byte."""
    yield _masked(0x1, payload)
    for cut in range(len(payload) + 1):
        yield _masked(0x1, payload[:cut], fin=False) + _masked(0x0, payload[cut:])


async def _first_frame_back(url: str, wire: bytes) -> tuple[int, bytes]:
    reader, writer = await raw_client_of(url)
    try:
        for byte in wire:
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                break  # failed before the rest came: fast, as it may
            await asyncio.sleep(0.001)  # each byte its own read
        async with asyncio.timeout(10):
            return await next_frame(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_utf8_gets_1007_in_every_split_and_fragmentation(
    uvicorn_server: UvicornFactory, upstream_nodeflate: UpstreamServer, connector: str, case: str
) -> None:
    gateway = ProbedGateway({"apis": [api_entry(upstream_nodeflate, **CONNECTORS[connector])]})
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/ws/echo")
    answers = [await _first_frame_back(url, wire) for wire in _ways(INVALID[case])]
    assert [(opcode, struct.unpack("!H", payload[:2])[0]) for opcode, payload in answers] == [(0x8, 1007)] * len(
        answers
    )
    await gateway.settle()
