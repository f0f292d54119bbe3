"""The frame relay's reader: whole messages out of frames split anywhere (Sans-I/O, no sockets)."""

from __future__ import annotations

import struct

import pytest

from asgi_ws_gateway.passthrough.assembler import Event, MessageAssembler
from asgi_ws_gateway.relay.stats import RelayStats
from support.rawhttp import ws_frame as frame


def events(data: bytes, *, chunk: int | None = None, inbound: bool = True, limit: int = 1000) -> tuple[
    list[Event], MessageAssembler, RelayStats
]:  # fmt: skip
    """Feed ``data`` in ``chunk``-byte reads (None: one read), collecting every event."""
    stats = RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12)
    assembler = MessageAssembler(stats, inbound=inbound, max_message_size=limit)
    found = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        assembler.feed(data[i : i + step])
        while (event := assembler.next()) is not None:
            found.append(event)
    return found, assembler, stats


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_fragmented_text_with_a_ping_between_fragments_is_one_message_after_the_ping(chunk: int | None) -> None:
    """Control frames between fragments come out as they arrive; the message once complete."""
    ping = frame(0x9, b"are you there")
    data = frame(0x1, '{"a": "é'.encode()[:-1], fin=False) + ping + frame(0x0, '{"a": "é'.encode()[-1:] + b'"}')
    found, assembler, stats = events(data, chunk=chunk)
    assert [(op, d) for op, d, _, _ in found] == [(0x9, b"are you there"), (0x1, '{"a": "é"}')]
    assert found[0][2] == ping  # a single frame comes with its bytes, to forward as they are
    assert found[1][2] == b""  # a reassembled message does not
    assert (stats.messages_in, stats.bytes_in) == (1, len('{"a": "é"}'.encode()))
    assert assembler.error is None and not assembler.interrupted


def test_single_frame_message_keeps_its_raw_bytes_and_binary_stays_bytes() -> None:
    data = frame(0x2, b"\x00\xff" * 100)
    found, _, stats = events(data + frame(0x1, b"hi"))
    assert found == [(0x2, b"\x00\xff" * 100, data, 200), (0x1, "hi", found[1][2], 2)]
    assert (stats.messages_in, stats.binary_in, stats.binary_bytes_in) == (2, 1, 200)


def test_invalid_utf8_in_a_complete_text_message_is_1007_and_not_counted() -> None:
    found, assembler, stats = events(frame(0x1, b"ok \xff\xfe", fin=False) + frame(0x0, b"!"))
    assert found == []
    assert (assembler.error, assembler.error_code, stats.messages_in) == ("invalid UTF-8", 1007, 0)


def test_a_frame_announcing_too_much_stops_before_its_payload_arrives() -> None:
    """The limit is checked on the header: an oversize payload is never waited for, or held."""
    header = frame(0x2, b"x" * 600, fin=False) + frame(0x0, b"y" * 500)[:8]
    found, assembler, _ = events(header, limit=1000)
    assert found == [] and assembler.too_big and assembler.interrupted


BAD_FRAMES = [
    (frame(0x1, b"x", mask=False), "incorrect masking"),
    (frame(0x1, b"x", rsv=0x40), "reserved bits must be 0"),
    (frame(0x3, b"x"), "invalid opcode"),
    (frame(0xB, b"x"), "invalid opcode"),
    (frame(0x9, b"x", fin=False), "fragmented control frame"),
    (frame(0x9, b"x" * 126), "control frame too long"),
    (frame(0x0, b"x"), "unexpected continuation frame"),
    (frame(0x1, b"x", fin=False) + frame(0x1, b"y"), "expected a continuation frame"),
    (frame(0x8, b"\x03"), "invalid close frame"),
    (frame(0x8, struct.pack("!H", 1005)), "invalid close code"),
    (frame(0x8, struct.pack("!H", 2999)), "invalid close code"),
]


# Fixed ids: the frames are masked with random keys, and pytest-xdist needs the same ids on every worker.
@pytest.mark.parametrize(("data", "error"), BAD_FRAMES, ids=[f"{i}-{error}" for i, (_, error) in enumerate(BAD_FRAMES)])
def test_frames_that_break_the_rules_stop_it_with_1002(data: bytes, error: str) -> None:
    found, assembler, _ = events(data)
    assert found == []
    assert (assembler.error, assembler.error_code) == (error, 1002)


def test_upstream_frames_must_not_be_masked() -> None:
    found, assembler, _ = events(frame(0x1, b"x", mask=True), inbound=False)
    assert assembler.error == "incorrect masking"
    found, assembler, stats = events(frame(0x1, b"x", mask=False), inbound=False)
    assert [e[1] for e in found] == ["x"] and stats.messages_out == 1


def test_close_frame_is_returned_and_nothing_after_it() -> None:
    close = frame(0x8, struct.pack("!H", 4001) + b"bye")
    found, assembler, _ = events(close + frame(0x1, b"late"))
    assert found == [(0x8, b"", close, 0)]
    assert assembler.close == (4001, "bye") and assembler.interrupted
    assert events(frame(0x8, b""))[1].close == (1005, "")
    bad_reason = events(frame(0x8, struct.pack("!H", 1000) + b"\xff"))[1]
    assert (bad_reason.error, bad_reason.error_code) == ("invalid UTF-8 in the close reason", 1007)


def test_the_gateways_keepalive_pong_is_taken_out() -> None:
    stats = RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12)
    assembler = MessageAssembler(stats, inbound=True, max_message_size=100)
    assembler.pong = b"asgi-ws-gateway"
    assembler.feed(frame(0xA, b"asgi-ws-gateway") + frame(0xA, b"theirs"))
    event = assembler.next()
    assert event is not None and event[:2] == (0xA, b"theirs")
    assert assembler.next() is None


def test_reads_held_while_a_message_is_handled_keep_their_order() -> None:
    """Bytes fed while the frames before them were not taken yet come out after them."""
    stats = RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12)
    assembler = MessageAssembler(stats, inbound=True, max_message_size=100)
    first, second, third = frame(0x1, b"1"), frame(0x1, b"2"), frame(0x1, b"3")
    assembler.feed(first + second[:3])
    assert assembler.next() is not None  # "1"; the frame relay now waits for a policy
    assembler.feed(second[3:])
    assembler.feed(third)
    assert [e[1] for e in iter(assembler.next, None)] == ["2", "3"]
