"""The frame relay's reader: whole messages out of frames split anywhere (Sans-I/O, no sockets)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- read(): feed and next in one call, with a fast path for one whole frame and nothing held --

STREAMS = [
    pytest.param([frame(0x1, b'{"a":1}')], id="text"),
    pytest.param([frame(0x2, b"\x00" * 200)], id="binary-16-bit-length"),
    pytest.param([frame(0x1, b"x" * 100)], id="exactly-at-the-limit"),
    pytest.param([frame(0x1, b"x" * 101)], id="one-byte-over-the-limit"),
    pytest.param([frame(0x1, b"ok \xff")], id="invalid-utf8"),
    pytest.param([frame(0x1, b"x", mask=False)], id="unmasked"),
    pytest.param([frame(0x1, b"ab", fin=False), frame(0x9, b"ping"), frame(0x0, b"cd")], id="ping-between-fragments"),
    pytest.param([frame(0x1, b"ab", fin=False), frame(0x1, b"whole")], id="whole-frame-inside-a-message"),
    pytest.param([frame(0x1, b"1") + frame(0x1, b"2"), frame(0x1, b"3")], id="two-frames-in-one-read"),
    pytest.param([frame(0x1, b"12345")[:4], frame(0x1, b"12345")[4:], frame(0x2, b"6")], id="split-then-whole"),
    pytest.param([frame(0x8, struct.pack("!H", 1000)), frame(0x1, b"late")], id="whole-frame-after-close"),
]


def _by_read(reads: list[bytes]) -> tuple[list[Event], MessageAssembler, RelayStats]:
    stats = RelayStats(sizes_in=[0] * 6, sizes_out=[0] * 6)  # slots up to 31 bytes: larger sizes share the last
    assembler = MessageAssembler(stats, inbound=True, max_message_size=100)
    found = []
    for data in reads:
        event = assembler.read(data)
        while event is not None:
            found.append(event)
            event = assembler.next()
    return found, assembler, stats


def _by_feed(reads: list[bytes]) -> tuple[list[Event], MessageAssembler, RelayStats]:
    stats = RelayStats(sizes_in=[0] * 6, sizes_out=[0] * 6)
    assembler = MessageAssembler(stats, inbound=True, max_message_size=100)
    found: list[Event] = []
    for data in reads:
        assembler.feed(data)
        found += iter(assembler.next, None)
    return found, assembler, stats


@pytest.mark.parametrize("reads", STREAMS)
def test_read_finds_what_feed_and_next_find_and_counts_as_count_in(reads: list[bytes]) -> None:
    """Same events, same stop (error, close, too big), and every message counted as RelayStats.count_in does."""
    found, assembler, stats = _by_read(reads)
    expected, reference, _ = _by_feed(reads)
    assert found == expected
    state = ("error", "error_code", "close", "too_big", "interrupted")
    assert [getattr(assembler, a) for a in state] == [getattr(reference, a) for a in state]
    counted = RelayStats(sizes_in=[0] * 6, sizes_out=[0] * 6)
    for opcode, _, _, size in found:
        if opcode < 8:
            counted.count_in(size, opcode == 2)
    assert stats == counted


def test_read_takes_the_fast_path_for_one_whole_frame_and_keeps_its_bytes() -> None:
    data = frame(0x1, "é".encode() * 20)
    found, assembler, stats = _by_read([data])
    assert found == [(0x1, "é" * 20, data, 40)]
    assert (stats.messages_in, stats.bytes_in, stats.binary_in, stats.sizes_in) == (1, 40, 0, [0, 0, 0, 0, 0, 1])
    assert assembler.next() is None and not assembler.interrupted


def test_read_of_a_whole_frame_while_a_message_is_assembled_is_a_protocol_error() -> None:
    found, assembler, _ = _by_read([frame(0x1, b"ab", fin=False), frame(0x1, b"whole")])
    assert found == []
    assert (assembler.error, assembler.error_code) == ("expected a continuation frame", 1002)


def test_read_of_invalid_utf8_in_one_frame_is_1007_and_not_counted() -> None:
    found, assembler, stats = _by_read([frame(0x1, b"ok \xff")])
    assert found == [] and assembler.interrupted
    assert (assembler.error, assembler.error_code, stats.messages_in) == ("invalid UTF-8", 1007, 0)


def test_read_at_the_size_limit_passes_and_one_byte_over_stops() -> None:
    assert [e[3] for e in _by_read([frame(0x2, b"x" * 100)])[0]] == [100]
    found, assembler, stats = _by_read([frame(0x2, b"x" * 101)])
    assert found == [] and assembler.too_big and assembler.interrupted and stats.messages_in == 0


def test_read_counts_upstream_messages_as_outbound() -> None:
    stats = RelayStats(sizes_in=[0] * 12, sizes_out=[0] * 12)
    assembler = MessageAssembler(stats, inbound=False, max_message_size=100)
    assert assembler.read(frame(0x2, b"abc", mask=False)) == (0x2, b"abc", frame(0x2, b"abc", mask=False), 3)
    assert (stats.messages_out, stats.bytes_out, stats.binary_out, stats.binary_bytes_out) == (1, 3, 1, 3)
    assert (stats.messages_in, stats.sizes_out[2]) == (0, 1)


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_tiny_fragments_count_the_floor_toward_the_limit(chunk: int | None) -> None:
    """As the splice's scanner: each fragment but the last counts FRAGMENT_FLOOR bytes at least, so a
    message of endless empty fragments is too big; fragments of the floor pass up to the limit."""
    endless = frame(0x1, b"", fin=False) + frame(0x0, b"", fin=False) * 200
    found, assembler, _ = events(endless, chunk=chunk, limit=64 * 100)
    assert found == [] and assembler.too_big
    whole = frame(0x2, b"x" * 64, fin=False) + frame(0x0, b"x" * 64, fin=False) * 98 + frame(0x0, b"x" * 64)
    found, assembler, _ = events(whole + frame(0x1, b"y"), chunk=chunk, limit=6400)
    assert [(op, len(d)) for op, d, _, _ in found] == [(0x2, 6400), (0x1, 1)] and not assembler.too_big


# -- idle: what the frame relay reads after each event instead of calling next() --

_FRAMES = st.one_of(
    st.binary(max_size=130).map(lambda payload: frame(0x2, payload)),
    st.text(max_size=40).map(lambda text: frame(0x1, text.encode())),
    st.sampled_from(
        [
            frame(0x1, b"ok \xff"),  # invalid UTF-8
            frame(0x1, b"x", mask=False),  # unmasked from a client
            frame(0x9, b"ping"),
            frame(0xA, b"pong"),
            frame(0x1, b"ab", fin=False),  # a message's first fragment
            frame(0x0, b"cd", fin=False),
            frame(0x0, b"ef"),  # a message's last
            frame(0x8, struct.pack("!H", 1000)),
            frame(0x2, b"x" * 101),  # over the limit
            frame(0x1, b"y", rsv=0x40),  # a reserved bit
        ]
    ),
)


def _as_the_frame_relay_reads(reads: list[bytes]) -> tuple[list[Event], MessageAssembler, RelayStats]:
    """read(), then next() only while ``idle`` is not set (``_FramedSide.pump``), checking ``idle`` on the way."""
    stats = RelayStats(sizes_in=[0] * 6, sizes_out=[0] * 6)
    assembler = MessageAssembler(stats, inbound=True, max_message_size=100)
    found = []
    for data in reads:
        event = assembler.read(data)
        while event is not None:
            found.append(event)
            if assembler.idle:
                break
            event = assembler.next()
        if assembler.idle:  # nothing held, nothing stopped, nothing to return
            assert assembler.buffered == 0 and not assembler.interrupted and assembler.next() is None
    return found, assembler, stats


@settings(max_examples=400, deadline=None)
@given(frames=st.lists(_FRAMES, max_size=8), cuts=st.lists(st.integers(0, 600), max_size=6), whole=st.booleans())
def test_reading_as_the_frame_relay_does_finds_what_feed_and_next_find(
    frames: list[bytes], cuts: list[int], whole: bool
) -> None:
    """Any frames, read one per read (the shortcut's case) or split anywhere: the same events, stop and
    counts as feeding every read and calling next() until None."""
    stream = b"".join(frames)
    points = sorted({min(cut, len(stream)) for cut in cuts})
    reads = frames if whole else [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    found, assembler, stats = _as_the_frame_relay_reads([read for read in reads if read])
    expected, reference, counted = _by_feed([read for read in reads if read])
    assert found == expected
    state = ("error", "error_code", "close", "too_big", "interrupted", "buffered")
    assert [getattr(assembler, a) for a in state] == [getattr(reference, a) for a in state]
    assert stats == counted


def test_idle_is_set_again_once_a_split_frame_is_read_whole() -> None:
    data = frame(0x1, b"hello")
    stats = RelayStats(sizes_in=[0] * 6, sizes_out=[0] * 6)
    assembler = MessageAssembler(stats, inbound=True, max_message_size=100)
    states = [assembler.idle]
    assert assembler.read(data[:3]) is None
    states.append(assembler.idle)
    assert assembler.read(data[3:]) == (0x1, "hello", data, 5)
    states.append(assembler.idle)
    assembler.halt()
    assert assembler.read(data) == (0x1, "hello", data, 5)  # read on while the gateway closes, not idle
    states.append(assembler.idle)
    assert states == [True, False, True, False]
