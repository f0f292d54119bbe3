"""Differential: what a client sees through each connector against what it sees from the upstream directly.

Real uvicorn serving the gateway's protocol, a real ``websockets`` echo upstream (a raw one for the
upstream's frames). Found by a differential fuzz of the splice, the frame relay and the relay against
direct connections (docs/security.md):

* A text message that is not UTF-8 followed, in the same read, by the client's close frame: websockets
  parses the whole read before the message is decoded, so it has answered the close already when the
  message turns out invalid. The relay's client leg then called ``send_close(1007)`` on a closing
  connection: websockets raised InvalidState, uvicorn logged "Fatal error on transport" with a traceback
  and dropped the connection, and the client never got a close frame (1006), where the upstream directly
  and the splice answer the close.
* The same read with a ping after the invalid text: the relay's client leg answered the ping after its
  FIN ("Cannot call write() after write_eof()", a fatal transport error logged with a traceback).
* A header that breaks a framing rule and announces more than the limit: the relay's legs said 1009
  (websockets reads the length before the rules), the splice and the frame relay 1002.

The last test runs hypothesis's sequences of valid messages (fragmented anywhere, pings between the
fragments, non-minimal lengths) ending in a fault or a close, through every connector and directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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
from support.rawws import ended_after_the_close, next_frame, raw_client_of
from support.servers import UvicornFactory, UvicornServer
from support.upstream import UpstreamServer


def _loud(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """The records at ERROR or with a traceback (logger name, message head): a client's bad frames make none."""
    return [(r.name, r.getMessage()[:120]) for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


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
    try:
        writer.write(INVALID_THEN_CLOSE[case])
        async with asyncio.timeout(10):
            opcode, payload = await next_frame(reader)
            assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, CLOSE_CODE[connector])
            await ended_after_the_close(reader, writer)
    finally:
        writer.transport.abort()  # (closed already, unless the test failed)
    await gateway.settle()
    loud = _loud(caplog)
    assert loud == []


@pytest.mark.parametrize("connector", list(CONNECTORS))
async def test_invalid_text_then_a_ping_in_one_read_is_1007_and_logs_no_error(
    uvicorn_server: UvicornFactory,
    upstream_nodeflate: UpstreamServer,
    caplog: pytest.LogCaptureFixture,
    connector: str,
) -> None:
    """The relay's client leg failed the connection at the text (its close frame and FIN out), then answered
    the ping that followed it in the read: uvloop's "Cannot call write() after write_eof()", logged as a
    fatal transport error with a traceback."""
    gateway = ProbedGateway({"apis": [api_entry(upstream_nodeflate, **CONNECTORS[connector])]})
    url = uvicorn_server(gateway, ws=PASSTHROUGH).url("/ws/echo")
    reader, writer = await raw_client_of(url)
    try:
        writer.write(_masked(0x1, b"\xff") + _masked(0x9, b"ping"))
        async with asyncio.timeout(10):
            while (frame := await next_frame(reader))[0] != 0x8:  # the upstream's pong, on the splice
                pass
            assert frame[1][:2] == struct.pack("!H", 1007)
            writer.write(_masked(0x8, frame[1][:2]))
            await ended_after_the_close(reader, writer)
    finally:
        writer.transport.abort()  # (closed already, unless the test failed)
    await gateway.settle()
    loud = _loud(caplog)
    assert loud == []


# -- a header that breaks a framing rule and announces more than the limit: a protocol error on every connector --

LIMIT = 4096


def _unmasked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    return bytes([first, 126]) + struct.pack("!H", size) + payload if size >= 126 else bytes([first, size]) + payload


OVERSIZE_RULE_BREAKERS = {
    "control frame too long": (0x9, 5000, True, 0, b""),
    "fragmented control frame": (0x9, 5000, False, 0, b""),
    "reserved bits must be 0": (0x2, 5000, True, 0x20, b""),
    # The open message's fragment counts FRAGMENT_FLOOR (64) bytes: 4090 more were "too big" on the relay only.
    "expected a continuation frame": (0x2, 4090, True, 0, b"open"),
}
"""The rule, then the offending frame's opcode, payload size, FIN, reserved bits, and the text fragment that
opens a message before it (if any). websockets reads a header's length before these rules and refused such
a frame as a message too big (1009) on the relay's two legs, where the splice and the frame relay say 1002."""


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("rule", list(OVERSIZE_RULE_BREAKERS))
async def test_a_clients_oversize_header_that_breaks_a_rule_is_a_protocol_error(
    upstream_nodeflate: UpstreamServer, uvicorn_server: UvicornFactory, connector: str, rule: str
) -> None:
    opcode, size, fin, rsv, opening = OVERSIZE_RULE_BREAKERS[rule]
    api = api_entry(upstream_nodeflate, max_message_size=LIMIT, **CONNECTORS[connector])
    gateway = ProbedGateway({"apis": [api]})
    reader, writer = await raw_client_of(uvicorn_server(gateway, ws=PASSTHROUGH).url("/ws/echo"))
    opened = _frame(0x1, opening, fin=False) if opening else b""
    try:
        writer.write(opened + _frame(opcode, b"x" * size, fin=fin, rsv=rsv))
        async with asyncio.timeout(10):
            opcode_back, payload = await next_frame(reader)
            assert (opcode_back, payload[:2], payload[2:].decode()) == (0x8, struct.pack("!H", 1002), rule)
            await ended_after_the_close(reader, writer)
    finally:
        writer.transport.abort()  # (closed already, unless the test failed)
    await gateway.settle()
    assert await upstream_nodeflate.wait_for_closes_async(1) == [(1002, rule)]  # the upstream told the same


@pytest.mark.parametrize("connector", list(CONNECTORS))
@pytest.mark.parametrize("rule", list(OVERSIZE_RULE_BREAKERS))
async def test_an_upstreams_oversize_header_that_breaks_a_rule_is_a_protocol_error(
    hostile: Callable[[Handler], Awaitable[int]], uvicorn_server: UvicornFactory, connector: str, rule: str
) -> None:
    opcode, size, fin, rsv, opening = OVERSIZE_RULE_BREAKERS[rule]
    got: list[bytes] = []
    opened = _unmasked(0x1, opening, fin=False) if opening else b""
    port = await hostile(sends_then_answers_close(opened + _unmasked(opcode, b"x" * size, fin=fin, rsv=rsv), got))
    gateway, url = gateway_before(port, connector, uvicorn_server, ping_interval=None, max_message_size=LIMIT)
    async with await connect(url) as ws:
        assert await expect_close(ws) == (1011, "upstream connection failed")
    await gateway.settle()
    assert got == [b"\x88\x03\xea" + rule.encode()]  # 1002, to the upstream


# -- the differential run: hypothesis's frame sequences, the upstream directly against each connector --

_KEY = b"\x37\xfa\x21\x3d"  # the masking key: any key reads the same


def _frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, length_bytes: int = 0) -> bytes:
    """A client's frame, its length in ``length_bytes`` extra bytes (0: the minimal form; 2, 8: non-minimal)."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    if length_bytes == 0:
        length_bytes = 0 if size < 126 else 2 if size < 65536 else 8
    if length_bytes == 0:
        head = bytes([first, 0x80 | size])
    else:
        head = bytes([first, 0x80 | (126 if length_bytes == 2 else 127)]) + size.to_bytes(length_bytes, "big")
    return head + _KEY + bytes(b ^ _KEY[i % 4] for i, b in enumerate(payload))


def _close(code: int, reason: bytes = b"") -> bytes:
    return _frame(0x8, struct.pack("!H", code) + reason)


ENDINGS = {
    "nothing": b"",
    "invalid UTF-8": _frame(0x1, "κ".encode() + b"\xff"),
    "invalid UTF-8 across fragments": _frame(0x1, b"\xce", fin=False) + _frame(0x0, b"\xff"),
    "invalid UTF-8 then close": INVALID_THEN_CLOSE["whole"],
    "invalid UTF-8 then a ping": _frame(0x1, b"\xff") + _frame(0x9, b"p"),
    "reserved bit": _frame(0x2, b"x", rsv=0x20),
    "compressed, nothing negotiated": _frame(0x1, b"x", rsv=0x40),
    "reserved opcode": _frame(0xB, b""),
    "continuation without a start": _frame(0x0, b"x"),
    "fragmented ping": _frame(0x9, b"", fin=False),
    "ping of 126 bytes": _frame(0x9, b"p" * 126),
    "length with the top bit set": bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + _KEY,
    "new message inside a message": _frame(0x1, b"a", fin=False) + _frame(0x2, b"b"),
    "unmasked": bytes([0x82, 0x01]) + b"u",
    "close": _close(1000, b"bye"),
    "close of 3000 then data": _close(3000) + _frame(0x1, b"after"),
    "close of one byte": _frame(0x8, b"\x03"),
    "close reason not UTF-8": _close(1000, b"\xff"),
    **{f"close {code}": _close(code) for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000)},
}
"""What may end a run of valid messages: nothing (the client's close follows), one fault, or a close."""


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    """One valid message: text (cut anywhere, inside a character too), binary or empty, in one to three
    fragments with pings and pongs between them, lengths in the minimal form or not."""
    if draw(st.booleans()):
        opcode, payload = 0x1, draw(st.text(max_size=8)).encode()
    else:
        opcode, payload = 0x2, draw(st.binary(max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=2)))
    parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    frames = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        frames.append(
            _frame(opcode if i == 0 else 0x0, part, fin=last, length_bytes=draw(st.sampled_from([0, 0, 2, 8])))
        )
        if not last and draw(st.booleans()):
            frames.append(_frame(draw(st.sampled_from([0x9, 0xA])), draw(st.binary(max_size=4))))
    return b"".join(frames)


@st.composite
def _sequence(draw: st.DrawFn) -> tuple[list[bytes], str]:
    """Up to three valid messages then an ending, as the writes that carry them (one, or cut anywhere)."""
    ending = draw(st.sampled_from(list(ENDINGS)))
    wire = b"".join(draw(st.lists(_message(), max_size=3))) + ENDINGS[ending]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(wire) - 1, 1)), max_size=4))))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True) if wire[a:b]], ending


Outcome = tuple[list[tuple[int, bytes]], int | str]
"""The messages echoed back, in order, and the close code of the first close frame (or how it ended)."""


async def _run(url: str, writes: list[bytes], *, pause: float) -> Outcome:
    """Send ``writes`` (``pause`` seconds apart), then the client's own close; what came back, up to a close."""
    reader, writer = await raw_client_of(url)
    echoed: list[tuple[int, bytes]] = []
    try:
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError):
                for data in writes:
                    writer.write(data)
                    await writer.drain()
                    await asyncio.sleep(pause)
                await asyncio.sleep(0.02)  # the client's close in a read of its own
                writer.write(CLOSE_1000)
                await writer.drain()
            message, kind = b"", 0
            while True:
                try:
                    first, second = await reader.readexactly(2)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return echoed, "no close frame"
                assert second & 0x80 == 0 and first & 0x70 == 0, "a masked or reserved-bit frame to the client"
                length = second & 0x7F
                if length >= 126:
                    length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8), "big")
                payload = await reader.readexactly(length)
                if first & 0x0F == 0x8:
                    return echoed, struct.unpack("!H", payload[:2])[0] if payload else 1005
                if first & 0x0F < 0x8:
                    kind, message = kind or first & 0x0F, message + payload
                    if first & 0x80:
                        echoed.append((kind, message))
                        message, kind = b"", 0
    finally:
        writer.transport.abort()


def _frames(writes: list[bytes]) -> list[bytes]:
    """The bytes of ``writes`` as one write per frame (a frame cut short: the rest in one)."""
    data, frames = b"".join(writes), []
    while data:
        length = data[1] & 0x7F if len(data) > 1 else 0
        header = 6 + (2 if length == 126 else 8 if length == 127 else 0)
        if len(data) >= header and length >= 126:
            length = int.from_bytes(data[2 : header - 4], "big")
        frames.append(data[: header + length])
        data = data[header + length :]
    return frames


@pytest.fixture(scope="module")
def _stack() -> Iterator[tuple[str, dict[str, str], ProbedGateway]]:
    """The upstream's echo URL and, per connector, the gateway's URL in front of it (one uvicorn)."""
    with UpstreamServer(compression=None) as upstream:
        apis = [
            api_entry(upstream, name=f"c{i}", path=f"/c{i}", close_timeout=2, **CONNECTORS[connector])
            for i, connector in enumerate(CONNECTORS)
        ]
        gateway = ProbedGateway({"apis": apis})
        with UvicornServer(gateway, ws=PASSTHROUGH) as server:
            yield upstream.url("/echo"), {c: server.url(f"/c{i}") for i, c in enumerate(CONNECTORS)}, gateway


STRICTER = {"length with the top bit set": 1002}
"""Where the gateway answers as RFC 6455 says and websockets does not: a 64-bit length with its top bit set
is a framing error (1002, docs/security.md), websockets takes it for a message too big (1009)."""


def _agrees(outcome: Outcome, direct: Outcome, ending: str) -> bool:
    """The same close code, and the same echoes; a close in the same read, or a fault, may cut the echoes
    short through a gateway (the client's side closes before the upstream's echo is back)."""
    if outcome[1] != STRICTER.get(ending, direct[1]):
        return False
    if ending == "nothing":
        return outcome[0] == direct[0]
    return outcome[0] == direct[0][: len(outcome[0])]


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=_sequence())
@example(sequence=([INVALID_THEN_CLOSE["whole"]], "invalid UTF-8 then close"))
@example(sequence=([INVALID_THEN_CLOSE["fragmented"]], "invalid UTF-8 then close"))
def test_every_connector_answers_a_sequence_as_the_upstream_does_directly(
    _stack: tuple[str, dict[str, str], ProbedGateway],
    caplog: pytest.LogCaptureFixture,
    sequence: tuple[list[bytes], str],
) -> None:
    """Echoes and close code through the splice, the frame relay and the relay are the upstream's own, read
    whole as sent or frame by frame (websockets parses a whole read before it decodes its messages: a
    fault and a close in one read end as the first or the second)."""
    direct_url, urls, gateway = _stack
    writes, ending = sequence

    async def check() -> None:
        direct = await _run(direct_url, writes, pause=0.002)
        in_order: Outcome | None = None
        for connector, url in urls.items():
            outcome = await _run(url, writes, pause=0.002)
            if _agrees(outcome, direct, ending):
                continue
            in_order = in_order or await _run(direct_url, _frames(writes), pause=0.02)
            assert _agrees(outcome, in_order, ending), (connector, ending, outcome, direct, in_order)
        await gateway.settle()

    asyncio.run(check())
    loud = _loud(caplog)
    assert loud == []
