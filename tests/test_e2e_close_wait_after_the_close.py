"""A client that closes and reads on, to an upstream that never answers and streams on: one close wait on
every connector (docs/security.md, "A client that closes and an upstream that does not").

What the upstream sends after the client's close frame is on its way to the client, and the client's taking it
in is the close wait's progress (docs/architecture.md: "a side that bytes are still on their way to took some
of them in since the last look"), until the wait's bounds: ``CLOSE_WAIT_LOOKS`` looks (:data:`LOOKS` here; the
stream stays far below ``CLOSE_WAIT_BYTES``). The splice waited so (32 looks, 32 s at ``close_timeout: 1``);
the frame relay dropped what the upstream sent once the close began on a direction with message policies, so
the client took in nothing and the wait ended at its second look (2 s), and forwarded it on a direction
without policies (32 looks). The relay's server answers the client's close at once: nothing more can go to the
client, and the upstream gets the client's close frame and ``close_timeout`` to answer it. Counted in the
upstream's message numbers and the close wait's looks (its log line), never on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import Awaitable, Callable

import pytest

from asgi_ws_gateway.relay import close_wait
from support.hostile import (  # noqa: F401 - the fixture hostile
    CONNECTORS,
    Handler,
    StreamsPastTheClose,
    gateway_before,
    hostile_upstream,
)
from support.rawhttp import ws_frame
from support.rawws import next_frame, raw_client_of
from support.servers import UvicornFactory

CLOSE_TIMEOUT = 0.25
LOOKS = 8
"""The close wait's look bound here (``CLOSE_WAIT_LOOKS``, 32, read as the wait runs): the bound's end as
plainly apart from the second look, where the frame relay's wait ended, in a quarter of the 8 s per case."""
VARIANTS = {**CONNECTORS, "frame relay (inbound policies)": {}}
"""Each connector; the frame relay also with its policies on the client's messages only."""
INBOUND_ONLY = {"message_policies": {"inbound": [{"limit-message-size": {"max": 65536}}]}}
LOOK = re.compile(r"closing handshake timed out at the close wait's look (\d+) \(([^)]*)\)")


async def _close_then_read_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[list[int], bytes]:
    """Once the stream is on, send a close frame and read to the end: the numbers of the messages read after
    it, and the code of the close frame read (b"": none, the connection aborted)."""
    first, _ = await asyncio.wait_for(next_frame(reader), 10)
    assert first == 0x1
    writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
    numbers: list[int] = []
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            opcode, payload = await asyncio.wait_for(next_frame(reader), 60)
            if opcode == 0x8:
                assert await asyncio.wait_for(reader.read(), 60) == b""
                return numbers, payload[:2]
            numbers.append(int(payload.split(b" ", 1)[0]))
    return numbers, b""


@pytest.fixture(autouse=True)
def _fewer_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(close_wait, "CLOSE_WAIT_LOOKS", LOOKS)


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_a_client_reading_an_unanswering_upstreams_stream_past_its_close_is_waited_for_to_the_bound(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    variant: str,
) -> None:
    """The client closes and reads on, the upstream streams on and never answers: the client takes in what
    the upstream sent after reading the close, and the close wait ends at ``CLOSE_WAIT_LOOKS`` looks (its
    bounds; :data:`LOOKS` here), on the splice and the frame relay whichever direction has policies; the relay
    answers the client's close at once and closes the upstream with its code."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    upstream = StreamsPastTheClose()
    connector = variant if variant in CONNECTORS else "splice"
    extra = INBOUND_ONLY if variant not in CONNECTORS else {}
    _, url = gateway_before(await hostile(upstream), connector, uvicorn_server, close_timeout=CLOSE_TIMEOUT, **extra)
    reader, writer = await raw_client_of(url)
    try:
        numbers, code = await _close_then_read_on(reader, writer)
        await asyncio.wait_for(upstream.ended.wait(), 60)  # the gateway dropped it
        assert upstream.after is not None and upstream.closes == [struct.pack("!H", 1000)]
        if connector == "relay":
            assert code == struct.pack("!H", 1000)  # its own close echoed, by the server, at once
            return
        fed = [number for number in numbers if number >= upstream.after]
        assert fed, f"none of {len(numbers)} messages read after the close was sent after the upstream read it"
        looks = {(int(found[1]), found[2]) for found in map(LOOK.search, caplog.messages) if found}
        assert looks == {(LOOKS, "its bounds")}, looks
    finally:
        writer.transport.abort()
        upstream.abort_all()
