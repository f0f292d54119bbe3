"""The splice's scanner holds compressed messages to the limit on their inflated size (RFC 7692).

Frames are built as a permessage-deflate sender builds them (raw deflate, a sync flush, the
``00 00 ff ff`` tail taken off, RSV1 on the first frame only) and fed split anywhere.
"""

from __future__ import annotations

import itertools
import os
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.utils import apply_mask

from asgi_ws_gateway.loop_watch import INFLATED_PER_TURN
from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.passthrough.inflate import InflatedSize, sender_window
from asgi_ws_gateway.relay.stats import RelayStats

LIMIT = 64 * 1024
DEFLATE = "permessage-deflate; client_max_window_bits"
BINARY, CONTINUATION = 0x2, 0x0


def _frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, mask: bool = True) -> bytes:
    """One frame as is (websockets builds none with RSV1 set)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    bit, size = (0x80 if mask else 0), len(payload)
    if size < 126:
        header = bytes([b0, bit | size])
    elif size < 65536:
        header = bytes([b0, bit | 126]) + struct.pack("!H", size)
    else:
        header = bytes([b0, bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


def _scanner(*, inbound: bool = True, extensions: str = DEFLATE) -> tuple[FrameScanner, RelayStats]:
    slots = LIMIT.bit_length() + 1
    stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
    return FrameScanner(stats, inbound=inbound, max_message_size=LIMIT, extensions=extensions), stats


class Sender:
    """A permessage-deflate sender: one deflate stream (context takeover) or one per message."""

    def __init__(self, *, context_takeover: bool = True) -> None:
        self.takeover = context_takeover
        self.deflate = zlib.compressobj(wbits=-15)

    def compress(self, message: bytes) -> bytes:
        if not self.takeover:
            self.deflate = zlib.compressobj(wbits=-15)
        data = self.deflate.compress(message) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        return data[:-4]

    def frames(self, message: bytes, *, fragments: int = 1, mask: bool = True) -> bytes:
        """The message's frames on the wire, its compressed payload cut into ``fragments``."""
        payload = self.compress(message)
        step = max(1, -(-len(payload) // fragments))
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        wire = b""
        for index, piece in enumerate(pieces):
            opcode = BINARY if index == 0 else CONTINUATION
            wire += _frame(opcode, piece, fin=index == len(pieces) - 1, rsv1=index == 0, mask=mask)
        return wire


def _feed(scanner: FrameScanner, data: bytes, cuts: list[int]) -> bytes:
    points = sorted({0, *(c % (len(data) + 1) for c in cuts), len(data)})
    return b"".join(scanner.feed(data[a:b]) for a, b in itertools.pairwise(points))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, LIMIT), min_size=1, max_size=4),
    fragments=st.integers(1, 4),
    takeover=st.booleans(),
    inbound=st.booleans(),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
)
def test_messages_within_the_limit_pass_byte_for_byte(
    sizes: list[int], fragments: int, takeover: bool, inbound: bool, cuts: list[int]
) -> None:
    """Any messages up to the limit, fragmented and split anywhere, each way: nothing held or stopped."""
    sender = Sender(context_takeover=takeover)
    extensions = DEFLATE if takeover else f"{DEFLATE}; client_no_context_takeover; server_no_context_takeover"
    scanner, stats = _scanner(inbound=inbound, extensions=extensions)
    wire = b"".join(sender.frames(bytes(size), fragments=fragments, mask=inbound) for size in sizes)
    assert _feed(scanner, wire, cuts) == wire
    assert not scanner.stopped and not scanner.cut
    assert (stats.messages_in if inbound else stats.messages_out) == len(sizes)


@settings(max_examples=60, deadline=None)
@given(
    before=st.integers(0, 3),
    over=st.integers(LIMIT + 1, 16 * LIMIT),
    fragments=st.integers(1, 4),
    inbound=st.booleans(),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
)
def test_a_message_over_the_limit_is_stopped_whatever_the_split(
    before: int, over: int, fragments: int, inbound: bool, cuts: list[int]
) -> None:
    """Messages before it pass whole; of it, no more goes on than was needed to find it over the limit."""
    sender = Sender()
    scanner, _ = _scanner(inbound=inbound)
    first = b"".join(sender.frames(b"fine " * 100, mask=inbound) for _ in range(before))
    bomb = sender.frames(bytes(over), fragments=fragments, mask=inbound)
    out = _feed(scanner, first + bomb + sender.frames(b"after", mask=inbound), cuts)
    assert scanner.too_big
    assert out.startswith(first) and len(out) < len(first) + len(bomb)
    assert scanner.cut == scanner.mid_frame  # stopped at a frame boundary unless part of the frame went on
    assert scanner.feed(sender.frames(b"more", mask=inbound)) == b""


@pytest.mark.parametrize("step", [1, 3, 1 << 20])
def test_control_frames_inside_a_compressed_message_are_not_inflated(step: int) -> None:
    """A ping and a pong between the fragments of a compressed message pass as they are."""
    payload = Sender().compress(b"abc" * 5000)
    third = len(payload) // 3
    wire = (
        _frame(BINARY, payload[:third], fin=False, rsv1=True) + _frame(0x9, b"ping?")
        + _frame(CONTINUATION, payload[third : 2 * third], fin=False) + _frame(0xA, b"\xff" * 20)
        + _frame(CONTINUATION, payload[2 * third :])
    )  # fmt: skip
    scanner, stats = _scanner()
    assert _feed(scanner, wire, list(range(step, len(wire), step))) == wire
    assert not scanner.stopped and stats.messages_in == 1


def test_one_read_holding_the_whole_bomb_forwards_none_of_it() -> None:
    """The frame arrived whole: stopped at its start, at a frame boundary (a close frame can follow)."""
    sender = Sender()
    scanner, _ = _scanner()
    bomb = sender.frames(bytes(64 * LIMIT))
    assert len(bomb) < LIMIT // 8  # the wire says nothing: a fraction of the limit
    assert scanner.feed(bomb) == b""
    assert scanner.too_big and not scanner.cut and not scanner.mid_frame


def test_found_part_way_through_a_frame_begun_in_an_earlier_read_cuts_it() -> None:
    sender = Sender()
    scanner, _ = _scanner()
    bomb = sender.frames(bytes(4 * LIMIT))
    first = scanner.feed(bomb[:20])  # header and a little payload: within the limit
    assert first == bomb[:20] and not scanner.stopped
    assert scanner.feed(bomb[20:]) == b""
    assert scanner.too_big and scanner.cut and scanner.mid_frame
    assert scanner.feed(b"\x88\x80abcd") == b""  # nothing more, not even a close frame


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\xff\xff\xff\xff not deflate", "invalid compressed data"),
        (zlib.compress(b"x", wbits=-15) + b"\xff\xff more", "invalid compressed data"),
    ],
    ids=["not-deflate", "not-deflate-after-a-final-block"],
)
def test_data_that_does_not_inflate_is_1007(payload: bytes, problem: str) -> None:
    scanner, _ = _scanner()
    assert scanner.feed(_frame(0x1, payload, rsv1=True)) == b""
    assert scanner.error is not None and scanner.error.startswith(problem)
    assert scanner.error_code == 1007


def _final_block_message(message: bytes) -> bytes:
    """A message's payload as RFC 7692 §7.2.1 makes it with a final block: the empty stored block
    appended after it, less its last four octets (one byte of it is left)."""
    deflate = zlib.compressobj(wbits=-15)
    data = deflate.compress(message) + deflate.flush(zlib.Z_FINISH) + b"\x00\x00\x00\xff\xff"
    return data[:-4]


def test_a_final_block_then_a_new_stream_in_the_next_message() -> None:
    """A sender may end a message's data with a final block (RFC 7692 §7.2.3.3): the next is new."""
    scanner, _ = _scanner()
    wire = b"".join(_frame(BINARY, _final_block_message(bytes(LIMIT)), rsv1=True) for _ in range(3))
    assert scanner.feed(wire) == wire and not scanner.stopped


def test_a_second_deflate_stream_after_a_final_block_is_counted() -> None:
    """Data after the final block is not ignored: a bomb hidden behind a small first stream is found."""
    scanner, _ = _scanner()
    hidden = zlib.compress(b"small", wbits=-15) + zlib.compress(bytes(4 * LIMIT), wbits=-15)
    assert scanner.feed(_frame(BINARY, hidden, rsv1=True)) == b""
    assert scanner.too_big


@pytest.mark.parametrize("cut", [None, 3, 5], ids=["whole", "split-in-the-first-stream", "split-between-streams"])
def test_a_frame_may_end_one_deflate_stream(cut: int | None) -> None:
    """Each new stream costs an inflater: a frame of empty final blocks (2 bytes a stream) is 1007 at
    its second, wherever the reads split it; one stream a frame, fragment after fragment, is valid."""
    scanner, _ = _scanner()
    frame = _frame(BINARY, b"\x03\x00" * 3, rsv1=True)
    parts = [frame] if cut is None else [frame[: 6 + cut], frame[6 + cut :]]
    assert b"".join(scanner.feed(part) for part in parts) in (b"", parts[0])  # what came before the second: valid
    assert scanner.error == "invalid compressed data (a frame ends more than one deflate stream)"
    assert scanner.error_code == 1007
    scanner, _ = _scanner()
    fragments = _frame(BINARY, b"\x03\x00", fin=False, rsv1=True)
    fragments += b"".join(_frame(CONTINUATION, b"\x03\x00", fin=False) for _ in range(100))
    fragments += _frame(CONTINUATION, b"\x03\x00")
    assert _feed(scanner, fragments, [7, 100, 333]) == fragments and not scanner.stopped


def test_uncompressed_messages_are_read_from_their_headers() -> None:
    scanner, _ = _scanner()
    plain = _frame(BINARY, bytes(LIMIT))
    assert scanner.feed(plain) == plain and not scanner.stopped


def test_rsv1_is_deflates_whatever_else_was_negotiated_beside_it() -> None:
    """Another extension beside permessage-deflate does not turn the inflation off (RSV1 is deflate's)."""
    scanner, _ = _scanner(extensions=f"{DEFLATE}, x-other")
    assert scanner.feed(Sender().frames(bytes(4 * LIMIT))) == b""
    assert scanner.too_big
    scanner, _ = _scanner(extensions="x-other")  # no deflate: RSV1 is no one's (the splice negotiates no other)
    scanner.feed(_frame(BINARY, b"\xff" * 10, rsv1=True))
    assert scanner.error == "reserved bits must be 0"


def test_without_context_takeover_the_inflater_is_dropped_after_each_message() -> None:
    sizes = InflatedSize(limit=LIMIT, keeps_context=False)
    sender = Sender(context_takeover=False)
    sizes.start()
    assert sizes.feed(sender.compress(b"a" * 1000), last=True) is None and sizes.size == 1000
    assert sizes._inflater is None  # its ~40 KiB freed between messages
    kept = InflatedSize(limit=LIMIT, keeps_context=True)
    kept.start()
    assert kept.feed(Sender().compress(b"a" * 1000), last=True) is None
    assert kept._inflater is not None


@pytest.mark.parametrize(
    ("extensions", "client", "server"),
    [
        ("permessage-deflate", (True, 15), (True, 15)),
        ("permessage-deflate; client_no_context_takeover", (False, 15), (True, 15)),
        ("permessage-deflate;server_no_context_takeover; client_max_window_bits=10", (True, 10), (False, 15)),
        ("PerMessage-Deflate; Client_No_Context_Takeover; SERVER_MAX_WINDOW_BITS=12", (False, 15), (True, 12)),
        ('permessage-deflate; client_max_window_bits="9"; server_max_window_bits=8', (True, 9), (True, 8)),
        ("permessage-deflate; client_max_window_bits=16; server_max_window_bits=x", (True, 15), (True, 15)),
        ("x-other, permessage-deflate; client_max_window_bits=11", (True, 11), (True, 15)),
        (None, (True, 15), (True, 15)),
    ],
)
def test_context_takeover_and_window_are_read_per_direction(
    extensions: str | None, client: tuple[bool, int], server: tuple[bool, int]
) -> None:
    assert sender_window(extensions, sender_is_client=True) == client
    assert sender_window(extensions, sender_is_client=False) == server


@pytest.mark.parametrize("bits", [9, 10, 12])
def test_the_inflater_is_as_small_as_the_window_the_sender_agreed_to(bits: int) -> None:
    """39 KiB with the default window (15 bits), about 11 KiB at 12 (what a websockets server asks)."""
    text = bytes(range(64)) * 1024  # repeats every 64 bytes: within any window
    deflate = zlib.compressobj(wbits=-bits)
    wire = b"".join(
        _frame(BINARY, (deflate.compress(text) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv1=True) for _ in range(3)
    )

    def memory(extensions: str) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            scanners = [_scanner(extensions=extensions)[0] for _ in range(20)]
            for scanner in scanners:
                assert scanner.feed(wire) == wire and not scanner.stopped
            return (tracemalloc.get_traced_memory()[0] - before) / len(scanners)
        finally:
            tracemalloc.stop()

    negotiated = memory(f"permessage-deflate; client_max_window_bits={bits}")
    assert negotiated < 14 * 1024 < 36 * 1024 < memory("permessage-deflate")


def test_a_limit_beyond_what_zlib_takes_still_counts() -> None:
    """A server's ws_max_size or an API's limit beyond a C ssize_t: counted, never an OverflowError."""
    sizes = InflatedSize(limit=10**30, keeps_context=True)
    sizes.start()
    assert sizes.feed(Sender().compress(bytes(LIMIT)), last=True) is None
    assert sizes.size == LIMIT


def test_a_read_of_highly_compressed_messages_is_scanned_an_inflated_share_at_a_time() -> None:
    """Deflate inflates zeros about a thousandfold, so a read's wire bytes say little of its cost: 32 KiB
    of ~1 KB messages, each 1 MB inflated, was 32 MB of inflation in one callback (a client held every
    other connection of the worker's loop ~30 ms a read; an echo beside it went from 0.8 to 83 ms).
    The scanner starts no frame once a callback inflated INFLATED_PER_TURN bytes, holding the rest back
    as it does past BYTES_PER_TURN, and every message still goes on whole."""
    size = 1_000_000
    slots = size.bit_length() + 1
    stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
    scanner = FrameScanner(stats, inbound=True, max_message_size=size, extensions=DEFLATE)
    deflate = zlib.compressobj(wbits=-15)
    message = _frame(BINARY, (deflate.compress(bytes(size)) + deflate.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv1=True)
    read = message * 32  # ~32 KB on the wire, under BYTES_PER_TURN: one callback before
    first = scanner.feed(read)
    assert scanner.unscanned, f"{stats.messages_in} messages ({stats.messages_in} MB) inflated in one callback"
    assert stats.messages_in <= INFLATED_PER_TURN // size + 1
    forwarded, callbacks = first, 1
    while scanner.unscanned:
        scanner.unscanned = False
        forwarded += scanner.feed(b"")
        callbacks += 1
    assert forwarded == read and stats.messages_in == 32 and callbacks > 1
    assert not scanner.too_big and scanner.error is None
