"""A message policy that closes during a close wait: its close is honoured, and the wait ends there.

The client sends its close and reads on; the upstream never answers it and streams on, then sends a
message ``limit-message-size`` closes on. On the frame relay (the connector that runs message policies on
what comes after the close) the message was dropped and nothing else happened: the close wait went on to
its bounds (``CLOSE_WAIT_LOOKS`` looks), and the client's close was answered only then, with the close it
had asked for. Now the policy closes as at any other time where a close can still be sent: the client gets
the policy's code for the other side (1001, ``upstream message too big``) at once, the upstream, which had
the client's close frame already, is dropped. The relay answers the client's close at once (its server) and
runs no policy on what the upstream sends after it; the splice runs none.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import Awaitable, Callable

import pytest

from support.hostile import (  # noqa: F401 - the fixture hostile
    Handler,
    StreamsPastTheClose,
    gateway_before,
    hostile_upstream,
)
from support.rawhttp import ws_frame
from support.rawws import next_frame, raw_client_of
from support.servers import UvicornFactory

CLOSE_TIMEOUT = 0.25
LIMIT = {"message_policies": {"outbound": [{"limit-message-size": {"max": 1000, "action": "close"}}]}}
LOOK = re.compile(r"closing handshake timed out at the close wait's look (\d+) \([^)]*\); aborting the (\w+)")


class _OffendsAfterTheClose(StreamsPastTheClose):
    """Streams small messages; once it has read the client's close frame, one over the limit, then small
    ones on."""

    offended = False

    def message(self) -> bytes:
        if self.closed.is_set() and not self.offended:
            self.offended = True
            return b"x" * 2000
        return b"small"


async def test_a_policy_closing_on_an_upstream_message_in_the_close_wait_ends_it_with_its_code(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway")
    upstream = _OffendsAfterTheClose()
    _, url = gateway_before(await hostile(upstream), "splice", uvicorn_server, close_timeout=CLOSE_TIMEOUT, **LIMIT)
    reader, writer = await raw_client_of(url)
    try:
        async with asyncio.timeout(60):
            assert (await next_frame(reader))[0] == 0x1
            writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
            while (frame := await next_frame(reader))[0] != 0x8:
                pass
            code, reason = struct.unpack("!H", frame[1][:2])[0], frame[1][2:]
            assert await reader.read() == b""  # then the gateway's FIN: the client's part is over
            writer.close()
            await upstream.ended.wait()  # the gateway dropped it
    finally:
        writer.transport.abort()
        upstream.abort_all()
    assert (code, reason) == (1001, b"upstream message too big")
    # Not to the wait's bounds: the upstream, which had the client's close frame, gets the close_timeout any
    # side gets for its answer (the next look, or the one after if the policy's close came just before it).
    looks = [(int(found[1]), found[2]) for found in map(LOOK.search, caplog.messages) if found]
    assert all(look <= 2 and side == "upstream" for look, side in looks), looks
