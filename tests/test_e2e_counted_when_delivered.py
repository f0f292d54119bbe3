"""End to end: ``messages_out`` (the access line, ``ws_gateway.messages``) counts what reached the client,
not what the gateway read from the upstream and then had nowhere to send, on every connector.

A message a delaying policy held as the client closed was counted on the relay and the frame relay (out 3
for 2 sent); the flood the upstream sent after the gateway's own close, read and dropped, was counted on the
splice and the frame relay (440 for 232 sent). The client's own close in a flood was counted right before
too: kept, as the case the relay's send refused after the client's close would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from asgi_ws_gateway.errors import DropMessage
from asgi_ws_gateway.messages.context import WsMessage
from asgi_ws_gateway.policies.message_base import register_message_policy
from support.access import access_line
from support.configs import api_entry
from support.gateway import PASSTHROUGH, ProbedGateway
from support.hostile import CONNECTORS, Handler, gateway_before, hostile_upstream, sends_then_answers_its_close  # noqa: F401 - the fixture hostile
from support.rawhttp import accept_upstream, ws_frame
from support.rawws import next_frame, raw_client_of
from support.servers import UvicornFactory

READ_FIRST = 50
"""Messages the client reads before it closes."""


async def _floods_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send small text messages as fast as the gateway takes them until its close frame; answer it."""
    await accept_upstream(reader, writer)
    closed = asyncio.Event()

    async def read_to_the_close() -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (await next_frame(reader))[0] != 0x8:
                pass
        closed.set()

    task = asyncio.create_task(read_to_the_close())
    frame = ws_frame(0x1, b"flood" * 4000, mask=False)  # 20 kB: the client's buffers fill in a few
    with contextlib.suppress(ConnectionError):
        while not closed.is_set():
            writer.write(frame * 4)
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        await writer.drain()
    await task
    writer.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_messages_out_counts_what_the_client_was_sent_when_it_closes_mid_flood(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    _, url = gateway_before(await hostile(_floods_until_closed), connector, uvicorn_server)

    async def close(writer: asyncio.StreamWriter) -> None:
        # Reading nothing meanwhile: the gateway's sends to the client wait for room as its close comes.
        writer.write(ws_frame(0x8, struct.pack("!H", 1000)))

    received = await _read_a_flood_around(url, close)
    await _counted_out(caplog, received)


HELD = {"rate-limit-messages": {"messages": 2, "window": 60, "action": "delay"}}
"""The third message waits a minute for its window: longer than the test."""
POLICY_CONNECTORS: dict[str, dict[str, Any]] = {
    "frame relay": {"message_policies": {"outbound": [HELD]}},
    "relay": {"passthrough": False, "message_policies": {"outbound": [HELD]}},
}


CLOSERS = {
    "client": (struct.pack("!H", 4000), "closed by client with 4000"),
    "gateway": (struct.pack("!H", 1001) + b"bye", "closed by gateway with 1001"),
}
"""Who closes while the message is held (the gateway: management's close): what the upstream gets, the access line."""


@pytest.mark.parametrize("closer", list(CLOSERS))
@pytest.mark.parametrize("connector", list(POLICY_CONNECTORS))
async def test_a_message_held_by_a_policy_as_the_connection_closes_goes_nowhere_and_holds_no_close(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
    closer: str,
) -> None:
    """A message a delaying step held as the client or the gateway closed went nowhere: it is not counted as
    sent, and the upstream's answer to the close it was sent at once is read behind it, not after the hold.

    Behind the held message the gateway read nothing: the upstream's answer, sent at once, waited out
    ``close_timeout`` (the relay: the access line 1 s late, and the client's close frame with it on the
    gateway's close; the frame relay: the client's close frame 2 s late, the upstream reset). With
    ``close_timeout`` 30, longer than the test's deadlines, only a close that goes through at once finishes
    within them."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    closes: list[bytes] = []
    port = await hostile(
        sends_then_answers_its_close(b"".join(ws_frame(0x1, b"m%d" % i, mask=False) for i in range(5)), closes)
    )
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", close_timeout=30, **POLICY_CONNECTORS[connector])
    gateway = ProbedGateway({"apis": [entry]})
    reader, writer = await raw_client_of(uvicorn_server(gateway, ws=PASSTHROUGH).url("/h"))
    upstream_gets, access = CLOSERS[closer]
    try:
        received = 0
        async with asyncio.timeout(10):  # a deadline against a hang, a third of close_timeout
            while received < 2:
                opcode, _ = await next_frame(reader)
                received += opcode == 0x1
            if closer == "client":
                writer.write(ws_frame(0x8, struct.pack("!H", 4000)))
            else:
                (live,) = gateway.gateway.connections()
                await gateway.on_server(lambda: gateway.gateway.close_connection(live.id, 1001, "bye"))
            while (frame := await next_frame(reader))[0] != 0x8:
                received += frame[0] == 0x1
            if closer == "gateway":
                writer.write(ws_frame(0x8, frame[1][:2]))
    finally:
        writer.transport.abort()
    line = await access_line(caplog)  # (within 10 s: the connection over at the upstream's answer)
    assert received == 2
    assert closes == [upstream_gets]
    assert access in line, line
    assert ", out 2 msg/4 B," in line, line


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_messages_out_counts_what_the_client_was_sent_when_the_gateway_closes_mid_flood(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
) -> None:
    """The gateway's own close (management's): what the upstream sent after it is read and dropped, not counted."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    gateway, url = gateway_before(await hostile(_floods_until_closed), connector, uvicorn_server)

    async def close(_: asyncio.StreamWriter) -> None:
        (live,) = gateway.gateway.connections()
        await gateway.on_server(lambda: gateway.gateway.close_connection(live.id, 1001, "bye"))

    received = await _read_a_flood_around(url, close, answer=1001)
    await _counted_out(caplog, received)


async def _read_a_flood_around(
    url: str, close: Callable[[asyncio.StreamWriter], Awaitable[None]], *, answer: int | None = None
) -> int:
    """Text messages the client received: :data:`READ_FIRST`, then ``close``, then (after half a second of
    reading nothing, the flood piling up behind the close) every one up to the gateway's close frame,
    answered with ``answer`` if given."""
    reader, writer = await raw_client_of(url)
    try:
        received = 0
        async with asyncio.timeout(30):
            while received < READ_FIRST:
                opcode, _ = await next_frame(reader)
                received += opcode == 0x1
            await close(writer)
            await asyncio.sleep(0.5)
            while (opcode := (await next_frame(reader))[0]) != 0x8:
                received += opcode == 0x1
            if answer is not None:
                writer.write(ws_frame(0x8, struct.pack("!H", answer)))
    finally:
        writer.transport.abort()
    return received


async def _counted_out(caplog: pytest.LogCaptureFixture, received: int) -> None:
    line = await access_line(caplog)
    counted = re.search(r", out (\d+) msg/", line)
    assert counted is not None, line
    assert int(counted[1]) == received, line


async def _sends_three_then_five_after_the_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Three messages; once the gateway's close frame came (the client went away), five more before its answer."""
    await accept_upstream(reader, writer, then=b"".join(ws_frame(0x1, b"m%d" % i, mask=False) for i in range(3)))
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while (await next_frame(reader))[0] != 0x8:
            pass
        writer.write(b"".join(ws_frame(0x1, b"late%d" % i, mask=False) for i in range(5)))
        writer.write(ws_frame(0x8, struct.pack("!H", 1000), mask=False))
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_messages_out_leaves_out_what_the_upstream_sent_after_the_client_vanished(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
) -> None:
    """The client reads three messages and drops its TCP connection (no close frame); the five the upstream
    sends after the gateway's 1001 are read and dropped: out 3, as the client got (the splice counted 8)."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    _, url = gateway_before(await hostile(_sends_three_then_five_after_the_close), connector, uvicorn_server)
    reader, writer = await raw_client_of(url)
    received = 0
    try:
        async with asyncio.timeout(30):
            while received < 3:
                opcode, _ = await next_frame(reader)
                received += opcode == 0x1
    finally:
        writer.transport.abort()
    await _counted_out(caplog, received)


LIMIT_CONNECTORS: dict[str, dict[str, Any]] = {
    "frame relay": {},
    "relay": {"passthrough": False},
}


async def _answers_the_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, then: bytes = b"") -> None:
    """Read to the gateway's close frame; write ``then`` and the answer, and end."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
        async with asyncio.timeout(5):
            while (await next_frame(reader))[0] != 0x8:
                pass
            writer.write(then + ws_frame(0x8, struct.pack("!H", 1000), mask=False))
            await writer.drain()
    writer.close()


TWO = b"".join(ws_frame(0x1, b"m%d" % i, mask=False) for i in range(2))
OVER = ws_frame(0x1, b"x" * 2000, mask=False)


async def _sends_two_then_offends_after_the_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Two messages; once the gateway's close frame (the client's) came, one over the limit before its answer."""
    await accept_upstream(reader, writer, then=TWO)
    await _answers_the_close(reader, writer, then=OVER)


async def _sends_two_then_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Two messages and its close frame at once; then it reads to the gateway's answer, and ends."""
    await accept_upstream(reader, writer, then=TWO + ws_frame(0x8, struct.pack("!H", 1000), mask=False))
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
        async with asyncio.timeout(5):
            while (await next_frame(reader))[0] != 0x8:
                pass
    writer.close()


async def _sends_two_then_offends(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Two messages and one over the limit at once; then it answers the gateway's close."""
    await accept_upstream(reader, writer, then=TWO + OVER)
    await _answers_the_close(reader, writer)


@register_message_policy("test-silent-drop")
class _SilentDrop:
    """Drops a message over 1,000 bytes without answering its sender: a plain function, no step that waits
    (a drop with an error reply waits to send it)."""

    class Settings(BaseModel):
        model_config = {"extra": "forbid"}

    def __init__(self, settings: BaseModel, env: object) -> None:
        pass

    def attach(self, connection: object, direction: str) -> Callable[[WsMessage], None]:
        def check(message: WsMessage) -> None:
            if message.size > 1000:
                raise DropMessage("too_big", reply=False)

        return check


def _limit(action: str) -> dict[str, Any]:
    return {"limit-message-size": {"max": 1000, "action": action}}


OFFENCES: dict[str, tuple[Handler, str, dict[str, Any], bool, bool, str]] = {
    "upstream's closed on after the client's close": (
        _sends_two_then_offends_after_the_close, "outbound", _limit("close"), True, False, ", out 2 msg/4 B,"),
    "upstream's dropped after the client's close": (
        _sends_two_then_offends_after_the_close, "outbound", _limit("drop"), True, False, ", out 2 msg/4 B,"),
    "upstream's dropped unanswered after the client's close": (
        _sends_two_then_offends_after_the_close, "outbound", {"test-silent-drop": {}}, True, False,
        ", out 2 msg/4 B,"),
    "client's closed on after the upstream's close": (
        _sends_two_then_closes, "inbound", _limit("close"), False, True, ", out 2 msg/4 B,"),
    "upstream's closed on before any close": (
        _sends_two_then_offends, "outbound", _limit("close"), False, False, ", out 3 msg/2004 B,"),
    "upstream's dropped before any close": (
        _sends_two_then_offends, "outbound", _limit("drop"), False, False, ", out 3 msg/2004 B,"),
}  # fmt: skip
"""The upstream's script; the policy's direction and entry; whether the client closes after its two
messages; whether it then sends one over the limit (after the upstream's close frame reached it); the
access line's ``out``. (``in``: the frame relay counts the client's message, read and closed on; the
relay drops it unread then.) Before any close a policy's close or drop is counted, as what the sender sent
(docs/message-policies.md, Counting), on both connectors; after the receiver's close frame only what
it was sent is."""


@pytest.mark.parametrize("offence", list(OFFENCES))
@pytest.mark.parametrize("connector", list(LIMIT_CONNECTORS))
async def test_a_message_a_policy_stops_after_its_receivers_close_is_not_counted_as_sent(
    hostile: Callable[[Handler], Awaitable[int]],
    uvicorn_server: UvicornFactory,
    caplog: pytest.LogCaptureFixture,
    connector: str,
    offence: str,
) -> None:
    """The client gets two messages; one a policy closes on or drops after the client's close frame went
    nowhere: out 2 on both connectors. The frame relay (which runs the policies then) counted it (out 3),
    the relay (which reads it unchecked then) did not."""
    caplog.set_level(logging.INFO, logger="asgi_ws_gateway.access")
    upstream, direction, policy, client_closes, client_offends, counts = OFFENCES[offence]
    policies = {direction: [policy]}
    port = await hostile(upstream)
    entry = api_entry(f"ws://127.0.0.1:{port}/", name="h", path="/h", message_policies=policies,
                      **LIMIT_CONNECTORS[connector])  # fmt: skip
    reader, writer = await raw_client_of(uvicorn_server(ProbedGateway({"apis": [entry]}), ws=PASSTHROUGH).url("/h"))
    try:
        received = 0
        async with asyncio.timeout(10):
            while received < 2:
                opcode, _ = await next_frame(reader)
                received += opcode == 0x1
            if client_closes:
                writer.write(ws_frame(0x8, struct.pack("!H", 1000)))
            while (frame := await next_frame(reader))[0] != 0x8:
                received += frame[0] == 0x1
            if client_offends:
                writer.write(ws_frame(0x1, b"y" * 2000))
            if not client_closes:
                writer.write(ws_frame(0x8, frame[1][:2]))
            with contextlib.suppress(ConnectionError):
                await reader.read()
    finally:
        writer.transport.abort()
    line = await access_line(caplog)
    assert received == 2, line
    assert counts in line, line
