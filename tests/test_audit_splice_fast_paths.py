"""Audit: the splice's and the frame relay's shortcuts against their general loops, on adversarial frames.

``tests/test_splice_fast_path.py`` compares whole reads through ``FrameScanner.feed``'s fast path with
the same reads through its loop. This module adds the classes it draws rarely or never: non-minimal
length encodings, 64-bit lengths with the top bit set, lengths at the size limit and one either side,
every opcode and reserved bit, close frames with one-byte payloads, codes no peer may send and reasons
that are not UTF-8, all from either side (a client's masked frames, an upstream's unmasked ones), with
the state a connection may carry when the read comes (the keepalive payload drawn, pings held, the
gateway closing). The same frames split at every byte through the loop forward and stop as the whole
reads do; and the frame relay's ``MessageAssembler.read`` shortcut is held to ``feed`` + ``next``.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.utils import apply_mask

from asgi_ws_gateway.passthrough.assembler import Event, MessageAssembler
from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.relay.stats import RelayStats

_KEY = b"\x5a\xa5\x0f\xf0"
_LIMIT = 130  # small, so that the limit and one either side are cheap to draw in every length form
_SLOTS = _LIMIT.bit_length() + 1
_STATE = ("close", "too_big", "cut", "error", "error_code", "interrupted", "halted", "sealed", "in_message",
          "remaining", "held_ping", "unscanned", "mid_frame", "_fast")  # fmt: skip
_CLOSE_CODES = [0, 999, 1000, 1001, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1014, 1015, 1016, 2999, 3000, 4999,
                5000, 65535]  # fmt: skip
_REASONS = [b"", b"bye", b"\xff", b"\xc3", "é".encode(), b"\xed\xa0\x80", b"r" * 123]


def _header(b0: int, length: int, *, masked: bool, form: str) -> bytes:
    """A frame header with ``length`` in the ``form`` asked for: the minimal one, a non-minimal 16 or
    64-bit one, or 64 bits with the top bit set (``length`` ORed into it)."""
    mask = 0x80 if masked else 0
    if form == "minimal":
        form = "short" if length < 126 else "16" if length < 65536 else "64"
    if form == "short" and length < 126:
        return bytes([b0, mask | length])
    if form == "16" and length < 65536:
        return bytes([b0, mask | 126]) + struct.pack("!H", length)
    if form == "top":
        return bytes([b0, mask | 127]) + struct.pack("!Q", length | 1 << 63)
    return bytes([b0, mask | 127]) + struct.pack("!Q", length)


# The frame's strategies, built once (built inside the composite, they were rebuilt on every draw:
# most of these tests' time). The same draws, in the same order, as before.
_FIRST_BYTES = (
    st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0x08, 0x09, 0xC1, 0xA2, 0x92, 0xF1])
    | st.integers(0, 255).map(lambda b: b | 0x80)  # every opcode and reserved bit, final
    | st.integers(0, 255)
)
_ONE_IN_SIX = st.integers(0, 5)
_ONE_IN_FOUR = st.integers(0, 3)
_ONE_IN_EIGHT = st.integers(0, 7)
_CODES = st.sampled_from(_CLOSE_CODES)
_CLOSE_REASONS = st.sampled_from(_REASONS) | st.integers(0, 127).map(lambda n: b"r" * n)
_SIZES = st.sampled_from([0, 1, 5, 125, 126, 127, _LIMIT - 1, _LIMIT, _LIMIT + 1]) | st.integers(0, 140)
_UNITS = st.sampled_from([b"x", b"\xff", "é".encode()])
_FORMS = st.sampled_from(["minimal", "minimal", "minimal", "16", "64", "top"])
_AFTER = st.sampled_from([b"", b"", b"", b"", b"\x82\x00", b"abcd"])


@st.composite
def _frame(draw: st.DrawFn, inbound: bool) -> bytes:
    """One frame as a hostile peer may send it, whole (its payload as long as its header says)."""
    b0 = draw(_FIRST_BYTES)
    masked = inbound if draw(_ONE_IN_SIX) else not inbound
    if b0 & 0x0F == 0x8 and draw(_ONE_IN_FOUR):
        code = draw(_CODES)
        reason = draw(_CLOSE_REASONS)
        payload = draw(st.sampled_from([b"", b"\x03", struct.pack("!H", code) + reason]))
    else:
        size = draw(_SIZES)
        payload = draw(_UNITS) * size
        payload = payload[:size]
    form = draw(_FORMS)
    header = _header(b0, len(payload), masked=masked, form=form)
    whole = header + _KEY + apply_mask(payload, _KEY) if masked else header + payload
    # Now and then a read that is not one frame: its payload short, or bytes of what follows after it.
    return whole + draw(_AFTER) if draw(_ONE_IN_EIGHT) else whole[:-1]


_READS = {inbound: st.lists(_frame(inbound), min_size=1, max_size=6) for inbound in (True, False)}
"""One to six reads, each a frame from one side (built once, not per example)."""
_SPLIT_READS = {inbound: st.lists(_frame(inbound), min_size=1, max_size=5) for inbound in (True, False)}


def _scanner(inbound: bool, *, pong: bool = False, hold_pings: bool = False) -> FrameScanner:
    stats = RelayStats(sizes_in=[0] * _SLOTS, sizes_out=[0] * _SLOTS)
    scanner = FrameScanner(stats, inbound=inbound, max_message_size=_LIMIT)
    if pong:
        scanner.pong = b"\x01\x02\x03\x04\x05\x06\x07\x08"  # the keepalive payload, drawn
    scanner.hold_pings = hold_pings
    return scanner


def _observed(scanner: FrameScanner) -> list[object]:
    return [dataclasses.asdict(scanner._stats), *(getattr(scanner, name) for name in _STATE)]


@settings(max_examples=1500, deadline=None)
@given(
    inbound=st.booleans(),
    pong=st.booleans(),
    hold_pings=st.booleans(),
    halt_at=st.integers(-1, 6),
    data=st.data(),
)
def test_whole_frame_reads_answer_as_the_loop_for_hostile_frames_in_any_state(
    inbound: bool, pong: bool, hold_pings: bool, halt_at: int, data: st.DataObject
) -> None:
    """Each read one frame: the fast paths (whole data frame, whole close frame) forward, count and stop
    exactly as the loop does, whatever the frame breaks and whatever state the connection is in."""
    frames = data.draw(_READS[inbound])
    fast, loop = (
        _scanner(inbound, pong=pong, hold_pings=hold_pings),
        _scanner(inbound, pong=pong, hold_pings=hold_pings),
    )
    for index, read in enumerate(frames):
        if index == halt_at:
            fast.halt()
            loop.halt()
        loop._fast = False  # the loop, whatever the read
        assert fast.feed(read) == loop.feed(read)
        assert _observed(fast) == _observed(loop)


@settings(max_examples=600, deadline=None)
@given(inbound=st.booleans(), data=st.data())
def test_frames_split_at_every_byte_forward_and_stop_as_whole_reads_do(inbound: bool, data: st.DataObject) -> None:
    """The loop fed one byte at a time forwards the same bytes in all and ends in the same place (the
    same close, error and code, oversize, and counts) as the same frames read whole, fast path included."""
    frames = data.draw(_SPLIT_READS[inbound])
    whole, split = _scanner(inbound), _scanner(inbound)
    forwarded_whole = b"".join(whole.feed(read) for read in frames)
    stream = b"".join(frames)
    forwarded_split = b"".join(split.feed(stream[at : at + 1]) for at in range(len(stream)))
    assert forwarded_split == forwarded_whole
    state = ("close", "too_big", "error", "error_code", "in_message", "remaining")
    assert [getattr(split, name) for name in state] == [getattr(whole, name) for name in state]
    assert dataclasses.asdict(split._stats) == dataclasses.asdict(whole._stats)


def _assembler(inbound: bool) -> MessageAssembler:
    return MessageAssembler(RelayStats(sizes_in=[0] * _SLOTS, sizes_out=[0] * _SLOTS), inbound=inbound,
                            max_message_size=_LIMIT)  # fmt: skip


def _events_by_read(assembler: MessageAssembler, reads: list[bytes]) -> list[Event]:
    found = []
    for read in reads:
        event = assembler.read(read)
        while event is not None:
            found.append(event)
            event = assembler.next()
    return found


def _events_by_feed(assembler: MessageAssembler, reads: list[bytes]) -> list[Event]:
    found: list[Event] = []
    for read in reads:
        assembler.feed(read)
        found += iter(assembler.next, None)
    return found


@settings(max_examples=1000, deadline=None)
@given(inbound=st.booleans(), data=st.data())
def test_the_frame_relays_whole_frame_shortcut_answers_as_feed_and_next(inbound: bool, data: st.DataObject) -> None:
    """``MessageAssembler.read``'s shortcut (one whole final text or binary frame) on hostile frames from
    either side: the same events, the same stop and code, the same counts as ``feed`` then ``next``."""
    reads = data.draw(_READS[inbound])
    fast, loop = _assembler(inbound), _assembler(inbound)
    assert _events_by_read(fast, reads) == _events_by_feed(loop, reads)
    state = ("error", "error_code", "close", "too_big", "interrupted", "buffered")
    assert [getattr(fast, name) for name in state] == [getattr(loop, name) for name in state]
    assert fast._stats == loop._stats


def _confusable(inbound: bool) -> list[bytes]:
    """Reads that a shortcut misreading one header byte would take for a whole frame of another length."""
    mask, key = (0x80, _KEY) if inbound else (0, b"")
    return [
        bytes([0x82, mask | 127]) + key + struct.pack("!Q", 119) + b"x" * 119,  # 127 read as a 7-bit length
        bytes([0x82, mask | 126]) + key + struct.pack("!H", 122) + b"x" * 122,  # 126 read as a 7-bit length
        bytes([0x88, mask | 126]) + key + struct.pack("!H", 124) + b"\x03\xe8" + b"r" * 122,  # a close as long
        bytes([0x88, mask | 127]) + key + struct.pack("!Q", 2) + b"\x03\xe8" + b"r" * 115,
        bytes([0x82, (0x80 - mask) | 5]) + b"x" * (9 if inbound else 1),  # the wrong mask bit, lengths that fit
        bytes([0x88, (0x80 - mask) | 2]) + b"\x03\xe8" + (b"r" * 4 if inbound else b""),
        bytes([0x88, (0x80 - mask) | 6]) + b"\x03\xe8" + b"r" * (4 if inbound else 0),
    ]


def _close_read_as_126_bytes() -> bytes:
    """A client's close frame with a 16-bit length of 124 (132 bytes in all) that, its second byte read
    as a 7-bit length of 126, is a valid close frame too: the extended length and the key taken for a
    key and a payload unmask to code 1000. Read as sent, its code (0x7272) is no peer's."""
    key = b"\x11\x22\x03\x94"  # 0x03 ^ 0x00, 0x94 ^ 0x7C: code 1000 under the misread key
    misread_key = b"\x00\x7c" + key[:2]
    wanted = b"r" * 124  # what the misread payload's bytes from the third on unmask to
    payload = bytes(wanted[j] ^ misread_key[(j + 2) % 4] ^ key[j % 4] for j in range(124))
    return b"\x88\xfe\x00\x7c" + key + apply_mask(payload, key)


@pytest.mark.parametrize("inbound", [True, False])
def test_reads_a_misread_header_byte_would_make_whole_frames_are_read_as_the_loop_reads_them(inbound: bool) -> None:
    """A header byte misread (127 or 126 as a 7-bit length, the mask bit ignored) makes each of these
    reads one whole frame of another length; the shortcuts must answer as the loops do."""
    for read in [*_confusable(inbound), *([_close_read_as_126_bytes()] if inbound else [])]:
        fast, loop = _scanner(inbound), _scanner(inbound)
        loop._fast = False
        assert fast.feed(read) == loop.feed(read)
        assert _observed(fast) == _observed(loop)
        by_read, by_feed = _assembler(inbound), _assembler(inbound)
        assert _events_by_read(by_read, [read]) == _events_by_feed(by_feed, [read])
        assert by_read._stats == by_feed._stats and by_read.error == by_feed.error


# -- a 64-bit length with its top bit set: a framing error (1002), not a message over the limit (1009) --


@pytest.mark.parametrize("inbound", [True, False])
@pytest.mark.parametrize("length", [0, 5, _LIMIT])
def test_a_length_with_the_top_bit_set_is_invalid_framing_on_the_splice_and_the_frame_relay(
    inbound: bool, length: int
) -> None:
    """RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0. Both passthrough readers
    call that a protocol error (1002, "invalid frame length"), before any size limit: the length it
    announces is not a message's, whatever the rest says, and nothing of it is forwarded."""
    header = _header(0x82, length, masked=inbound, form="top")
    read = header + (_KEY if inbound else b"") + b"x" * length
    scanner, assembler = _scanner(inbound), _assembler(inbound)
    assert scanner.feed(read) == b""
    assert assembler.read(read) is None
    for reader in (scanner, assembler):
        assert (reader.error, reader.error_code, reader.too_big) == ("invalid frame length", 1002, False)
