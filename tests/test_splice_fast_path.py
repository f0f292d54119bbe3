"""The splice scanner's fast path (one whole frame per read) is held to its general path, the loop.

``FrameScanner.feed`` takes a read that is one whole final text or binary frame, or one whole close
frame, without the loop (and counts the message inline); every other read goes to the loop. Each test
feeds the same reads to two scanners, one of them made to take the loop for every read, and compares
what comes out: the bytes forwarded, the counters, and the state the splice reads.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.utils import apply_mask

from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.relay.stats import RelayStats

_STATE = ("close", "too_big", "cut", "error", "error_code", "interrupted", "halted", "sealed", "in_message",
          "remaining", "held_ping", "unscanned", "mid_frame", "_fast")  # fmt: skip
_KEY = b"\x11\x22\x33\x44"


def _pair(inbound: bool, limit: int, slots: int, extensions: str | None) -> tuple[FrameScanner, FrameScanner]:
    def one() -> FrameScanner:
        stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
        return FrameScanner(stats, inbound=inbound, max_message_size=limit, extensions=extensions)

    return one(), one()


def _through_loop(scanner: FrameScanner, data: bytes) -> bytes:
    scanner._fast = False  # the loop, whatever the read
    return scanner.feed(data)


def _same(fast: FrameScanner, loop: FrameScanner, data: bytes) -> None:
    assert fast.feed(data) == _through_loop(loop, data)
    assert dataclasses.asdict(fast._stats) == dataclasses.asdict(loop._stats)
    assert [getattr(fast, name) for name in _STATE] == [getattr(loop, name) for name in _STATE]


def _deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


# The read's strategies, built once (built inside the composite, they were rebuilt on every draw: most
# of the test's time). The same draws, in the same order, as before.
_FIRST_BYTES = st.sampled_from([0x81, 0x82, 0x81, 0x82, 0xC1, 0xC2, 0x88, 0x88, 0x88, 0x89, 0x8A, 0x01, 0x02, 0x80,
                                0x8F, 0xA2, 0x92, 0xC8]) | st.integers(0, 255)  # fmt: skip
_ONE_IN_FIVE = st.integers(0, 4)
_KINDS_OF_CLOSE = st.sampled_from(["close", "close", "deflated", "bytes"])
_KINDS_OF_OTHER = st.sampled_from(["close", "deflated", "bytes", "bytes"])
_CODES = st.sampled_from([1000, 1001, 1005, 1006, 1011, 1015, 2999, 3000, 4999, 5000, 0])
_REASONS = st.sampled_from([b"", b"bye", b"\xff\xfe", "é".encode(), b"x" * 123])
_INFLATED = st.binary(max_size=200)
_PAYLOADS = st.binary(max_size=300) | st.builds(bytes, st.integers(125, 70_000))
_EXACT = st.integers(0, 2)
_LENGTH_ERRORS = st.sampled_from([-1, 1, 4]) | st.integers(-8, 140)
_FORMS = st.sampled_from(["short", "short", "16", "64"])


@st.composite
def _reads(draw: st.DrawFn, inbound: bool) -> bytes:
    """One read: a frame header as any peer may send it (the right mask bit mostly, any opcode, reserved
    bits, each length form), and a payload that may or may not be as long as the header says."""
    b0 = draw(_FIRST_BYTES)
    masked = draw(st.booleans()) if draw(_ONE_IN_FIVE) == 0 else inbound
    kind = draw(_KINDS_OF_CLOSE if b0 & 0x0F == 8 else _KINDS_OF_OTHER)
    if kind == "close":
        code = draw(_CODES)
        reason = draw(_REASONS)
        whole = struct.pack("!H", code) + reason
        payload = draw(st.sampled_from([b"", b"\x03", whole, whole]))
    elif kind == "deflated":
        payload = _deflated(draw(_INFLATED))
    else:
        payload = draw(_PAYLOADS)
    exact = draw(_EXACT) > 0
    declared = max(0, len(payload) + (0 if exact else draw(_LENGTH_ERRORS)))
    form = draw(_FORMS)
    if form == "short" and declared < 126:
        header = bytes([b0, (0x80 if masked else 0) | declared])
    elif form != "64" and declared < 65536:
        header = bytes([b0, (0x80 if masked else 0) | 126]) + struct.pack("!H", declared)
    else:
        header = bytes([b0, (0x80 if masked else 0) | 127]) + struct.pack("!Q", declared)
    if masked:
        return header + _KEY + apply_mask(payload, _KEY)
    return header + payload


_RUNS = {inbound: st.lists(_reads(inbound), min_size=1, max_size=6) for inbound in (True, False)}
"""One to six reads from one side (built once, not per example)."""


@settings(max_examples=600, deadline=None)
@given(
    inbound=st.booleans(),
    limit=st.sampled_from([0, 1, 125, 126, 1000, 65535, 65536, 1 << 20]),
    short_slots=st.booleans(),
    extensions=st.sampled_from(
        [None, "permessage-deflate", "permessage-deflate; client_no_context_takeover", "x-webkit-deflate-frame"]
    ),
    data=st.data(),
)
@example(inbound=True, limit=1 << 20, short_slots=False, extensions=None, data=None)  # see below: unmasked, 139 bytes
def test_whole_frame_reads_come_out_as_through_the_loop(
    inbound: bool, limit: int, short_slots: bool, extensions: str | None, data: st.DataObject | None
) -> None:
    """A run of reads (one frame each, valid or not, as long as its header says or not) forwards,
    counts and stops exactly as the loop does, on either side, with or without permessage-deflate,
    whatever the limit and however few size slots the counters have."""
    slots = 4 if short_slots else limit.bit_length() + 1
    fast, loop = _pair(inbound, limit, slots, extensions)
    if data is None:
        # Unmasked from a client, 137 bytes of payload after a header saying 5: the mask bit's reading
        # (5 ^ 0x80 = 133, plus a masked header's 6) must not make it a whole frame.
        reads = [bytes([0x82, 0x05]) + b"x" * 137, bytes([0x82, 0x85]) + _KEY + b"y" * 5]
    else:
        reads = data.draw(_RUNS[inbound])
    for read in reads:
        _same(fast, loop, read)


@settings(max_examples=200, deadline=None)
@given(inbound=st.booleans(), sizes=st.lists(st.integers(0, 70_000), min_size=1, max_size=8), binary=st.booleans())
def test_whole_messages_are_counted_as_count_in_and_count_out_count_them(
    inbound: bool, sizes: list[int], binary: bool
) -> None:
    """The fast path's inline counting is RelayStats.count_in / count_out's, slot for slot."""
    limit = 1 << 17
    slots = limit.bit_length() + 1
    scanner, _ = _pair(inbound, limit, slots, None)
    expected = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
    for size in sizes:
        opcode = 0x82 if binary else 0x81
        if size < 126:
            header = bytes([opcode, (0x80 if inbound else 0) | size])
        elif size < 65536:
            header = bytes([opcode, (0x80 if inbound else 0) | 126]) + struct.pack("!H", size)
        else:
            header = bytes([opcode, (0x80 if inbound else 0) | 127]) + struct.pack("!Q", size)
        frame = header + (_KEY if inbound else b"") + bytes(size)
        assert scanner.feed(frame) == frame
        (expected.count_in if inbound else expected.count_out)(size, binary)
    assert dataclasses.asdict(scanner._stats) == dataclasses.asdict(expected)


def test_a_whole_close_frame_is_read_without_the_loop_and_ends_forwarding() -> None:
    """The one read each connection ends with: its code and reason read, forwarded as it is, and the
    splice told to look (``interrupted``); nothing after it goes on."""
    fast, _ = _pair(True, 1000, 11, None)
    frame = bytes([0x88, 0x85]) + _KEY + apply_mask(b"\x03\xe8bye", _KEY)
    assert fast.feed(frame) == frame
    assert fast.close == (1000, "bye") and fast.interrupted and not fast._fast
    assert fast.feed(bytes([0x82, 0x81]) + _KEY + b"x") == b""


def test_an_unmasked_close_frame_from_a_client_is_refused_whatever_its_read_length() -> None:
    """Its second byte read as if masked (2 ^ 0x80 = 130, after a masked header's 6) fits this read's
    length and unmasks to a valid close: still the loop's "incorrect masking", nothing forwarded."""
    key = b"\x03\xe8ab"  # the "mask" the masked reading would take: the declared payload and what follows
    read = bytes([0x88, 0x02]) + key + apply_mask(b"\x03\xe8" + b"r" * 128, key)
    fast, loop = _pair(True, 1000, 11, None)
    _same(fast, loop, read)
    assert fast.error == "incorrect masking" and fast.close is None
