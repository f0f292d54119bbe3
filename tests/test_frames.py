"""The passthrough frame-header scanner, against frames serialized by ``websockets``."""

from __future__ import annotations

import zlib

import pytest
from websockets.frames import Close, Frame, Opcode

from asgi_ws_gateway.frame_rules import FRAGMENT_FLOOR
from asgi_ws_gateway.loop_watch import BYTES_PER_TURN
from asgi_ws_gateway.passthrough.frame_encoding import close_frame, encode_frame
from asgi_ws_gateway.passthrough.frames import FrameScanner
from asgi_ws_gateway.relay.stats import RelayStats


def _scanner(max_size: int = 1 << 20, inbound: bool = True) -> tuple[FrameScanner, RelayStats]:
    slots = max_size.bit_length() + 1
    stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
    return FrameScanner(stats, inbound=inbound, max_message_size=max_size), stats


def _wire(*frames: Frame, mask: bool) -> bytes:
    return b"".join(f.serialize(mask=mask) for f in frames)


def _feed_in_pieces(scanner: FrameScanner, data: bytes, step: int) -> bytes:
    return b"".join(_feed_whole(scanner, data[i : i + step]) for i in range(0, len(data), step))


def _feed_whole(scanner: FrameScanner, data: bytes) -> bytes:
    """What the splice gets for ``data``: the rest of a large read held back is fed again (a loop turn
    later there) until none is left."""
    out = scanner.feed(data)
    while scanner.unscanned:
        scanner.unscanned = False
        out += scanner.feed(b"")
    return out


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000, 1 << 20])
def test_every_length_form_counted_whatever_the_split(mask: bool, step: int) -> None:
    """7-, 16- and 64-bit lengths, masked or not, split at any byte: every message counted once."""
    frames = [Frame(Opcode.BINARY if i % 2 else Opcode.TEXT, b"x" * n) for i, n in enumerate(SIZES)]
    data = _wire(*frames, Frame(Opcode.PING, b"p"), mask=mask)
    scanner, stats = _scanner(inbound=mask)  # clients mask, servers do not
    assert _feed_in_pieces(scanner, data, step) == data
    counted = (stats.messages_in, stats.bytes_in, stats.binary_in, stats.binary_bytes_in) if mask else (
        stats.messages_out, stats.bytes_out, stats.binary_out, stats.binary_bytes_out)  # fmt: skip
    assert counted == (len(SIZES), sum(SIZES), len(SIZES) // 2, sum(n for i, n in enumerate(SIZES) if i % 2))
    assert scanner.remaining == 0 and scanner.close is None


def test_fragmented_message_is_one_message_with_a_control_frame_inside() -> None:
    """Fragments add up to one message; a ping between them is not a message."""
    data = _wire(
        Frame(Opcode.TEXT, b"ab", fin=False),
        Frame(Opcode.PING, b""),
        Frame(Opcode.CONT, b"cd", fin=False),
        Frame(Opcode.CONT, b"e"),
        mask=False,
    )
    scanner, stats = _scanner(inbound=False)
    assert _feed_in_pieces(scanner, data, 3) == data
    assert (stats.messages_out, stats.bytes_out, stats.binary_out) == (1, 5, 0)
    assert not scanner.in_message


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("step", [1, 5, 100])
def test_close_frame_code_and_reason_read_and_nothing_after_it_forwarded(mask: bool, step: int) -> None:
    """A close frame's code and reason are read (unmasked); bytes after it are not forwarded."""
    close = Frame(Opcode.CLOSE, Close(4000, "bye é").serialize())
    head = _wire(Frame(Opcode.TEXT, b"hi"), close, mask=mask)
    scanner, _ = _scanner(inbound=mask)
    out = _feed_in_pieces(scanner, head + _wire(Frame(Opcode.TEXT, b"late"), mask=mask), step)
    assert out == head
    assert scanner.close == (4000, "bye é")


def test_empty_close_frame_is_1005() -> None:
    """A close frame without a payload reads as 1005 (no status)."""
    scanner, _ = _scanner()
    scanner.feed(_wire(Frame(Opcode.CLOSE, b""), mask=True))
    assert scanner.close == (1005, "")


def test_oversize_message_stops_before_its_offending_frame() -> None:
    """The frame that takes a message over the limit is not forwarded; earlier fragments are."""
    first = _wire(Frame(Opcode.BINARY, b"x" * 60, fin=False), mask=True)
    second = _wire(Frame(Opcode.CONT, b"x" * 60), mask=True)
    scanner, stats = _scanner(max_size=100)
    assert scanner.feed(first + second) == first
    assert scanner.too_big
    assert stats.messages_in == 0


def test_frames_the_gateway_writes_parse_back() -> None:
    """``encode_frame``/``close_frame`` output, masked or not, is what a peer reads."""
    for mask in (True, False):
        for size in (0, 3, 125, 126, 70000):
            scanner, stats = _scanner(inbound=mask)
            scanner.feed(encode_frame(2, b"\x01" * size, mask=mask))
            assert (stats.messages_in + stats.messages_out, stats.bytes_in + stats.bytes_out) == (1, size)
        scanner, _ = _scanner(inbound=mask)
        scanner.feed(close_frame(1001, "going away", mask=mask))
        assert scanner.close == (1001, "going away")


def _raw(b0: int, payload: bytes = b"hi", *, mask: bool = True) -> bytes:
    """A frame with first byte ``b0`` (FIN, RSV1-3, opcode) as is: websockets refuses to build bad ones."""
    return bytes([b0]) + encode_frame(0, payload, mask=mask)[1:]


_DEFLATED = zlib.compress(b"hi", wbits=-15)
"""A compressed message's payload (valid deflate data: the scanner inflates it)."""

BAD_FROM_CLIENT = [
    pytest.param(_raw(0x81, mask=False), "incorrect masking", id="unmasked"),
    pytest.param(_raw(0xC1), "reserved bits must be 0", id="rsv1"),
    pytest.param(_raw(0xA1), "reserved bits must be 0", id="rsv2"),
    pytest.param(_raw(0x91), "reserved bits must be 0", id="rsv3"),
    pytest.param(b"\x83\x80abcd", "invalid opcode", id="opcode-3"),
    pytest.param(b"\x8f\x80abcd", "invalid opcode", id="opcode-15"),
    pytest.param(b"\x09\x80abcd", "fragmented control frame", id="ping-no-fin"),
    pytest.param(b"\x89\xfe\x00\x7eabcd" + b"x" * 126, "control frame too long", id="ping-126"),
    pytest.param(_raw(0x80), "unexpected continuation frame", id="cont-first"),
    pytest.param(
        _raw(0x01, b"a") + _raw(0x81, b"b"),
        "expected a continuation frame",
        id="text-in-text",
    ),
    pytest.param(b"\x82\xff\x80" + b"\x00" * 7 + b"abcd", "invalid frame length", id="length-msb"),
]


@pytest.mark.parametrize(("bad", "error"), BAD_FROM_CLIENT)
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_bad_client_frame_is_named_and_not_forwarded(bad: bytes, error: str, step: int) -> None:
    """A frame a server must fail with 1002: the rule it broke is named; it and what follows stay back."""
    good = Frame(Opcode.BINARY, b"ok").serialize(mask=True)
    scanner, stats = _scanner(max_size=1 << 70)
    out = _feed_in_pieces(scanner, good + bad + good, step)
    assert scanner.error == error
    assert scanner.stopped
    legit = len(_raw(0x01, b"a")) if error == "expected a continuation frame" else 0  # its first fragment is fine
    assert out == good + bad[:legit]
    assert stats.messages_in == 1


def _close_raw(payload: bytes, *, mask: bool) -> bytes:
    """A close frame with ``payload`` as is (websockets refuses to build invalid ones)."""
    return encode_frame(0x8, payload, mask=mask)


BAD_CLOSES = [
    *(
        pytest.param(code.to_bytes(2, "big"), "invalid close code", 1002, id=f"code-{code}")
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    ),
    pytest.param(b"\x03", "invalid close frame", 1002, id="one-byte"),
    pytest.param(b"\x03\xe8\xff", "invalid UTF-8 in the close reason", 1007, id="reason-not-utf8"),
]


@pytest.mark.parametrize(("payload", "error", "code"), BAD_CLOSES)
@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_invalid_close_frame_is_an_error_and_none_of_it_is_forwarded(
    payload: bytes, error: str, code: int, mask: bool, step: int
) -> None:
    """Autobahn 7.9.x, 7.13.x, 7.5.1: a close code no peer may send, or a bad payload, is the sender's error."""
    good = encode_frame(0x2, b"ok", mask=mask)
    scanner, _ = _scanner(inbound=mask)
    out = _feed_in_pieces(scanner, good + _close_raw(payload, mask=mask) + good, step)
    assert (scanner.error, scanner.error_code, scanner.close) == (error, code, None)
    assert out == good


@pytest.mark.parametrize("code", [1000, 1003, 1007, 1014, 3000, 4001, 4999])
@pytest.mark.parametrize("step", [1, 1000])
def test_valid_close_code_is_read_and_forwarded_whole(code: int, step: int) -> None:
    """A close frame split across reads is held back until whole, then goes on as it came."""
    close = _close_raw(code.to_bytes(2, "big") + "ok é".encode(), mask=True)
    scanner, _ = _scanner()
    assert _feed_in_pieces(scanner, close, step) == close
    assert scanner.close == (code, "ok é") and scanner.error is None


def test_masked_frame_from_the_upstream_is_incorrect_masking() -> None:
    """Servers must not mask: the direction decides which masking is wrong."""
    scanner, _ = _scanner(inbound=False)
    assert scanner.feed(_raw(0x81)) == b""
    assert scanner.error == "incorrect masking"


@pytest.mark.parametrize(
    ("extensions", "frame", "error"),
    [
        ("permessage-deflate; client_max_window_bits", _raw(0xC1, _DEFLATED), None),
        ("permessage-deflate", _raw(0xA1), "reserved bits must be 0"),
        ("permessage-deflate", _raw(0xC9, b""), "reserved bits must be 0"),
        ("x-unknown-extension", _raw(0x91), "reserved bits must be 0"),  # never negotiated by the splice
        (None, _raw(0xC2), "reserved bits must be 0"),
    ],
    # Named, not derived from the frames: their masking keys are random, and ids must be the same
    # at every collection (pytest-xdist compares them across workers; --lf and -k need them too).
    ids=[
        "deflate-text-rsv1",
        "deflate-text-rsv2",
        "deflate-ping-rsv1",
        "unknown-extension-text-rsv3",
        "no-extension-binary-rsv1",
    ],
)
def test_reserved_bits_follow_the_negotiated_extensions(
    extensions: str | None, frame: bytes, error: str | None
) -> None:
    """RSV1 is permessage-deflate's, on data frames only; no other bit is ever allowed (the splice forwards
    no other extension's offer and refuses an upstream that answers one)."""
    stats = RelayStats(sizes_in=[0] * 8, sizes_out=[0] * 8)
    scanner = FrameScanner(stats, inbound=True, max_message_size=100, extensions=extensions)
    scanner.feed(frame)
    assert scanner.error == error


def test_deflate_continuation_frame_with_rsv1_is_bad() -> None:
    """RFC 7692 §6.1: only the first frame of a compressed message carries RSV1."""
    stats = RelayStats(sizes_in=[0] * 8, sizes_out=[0] * 8)
    scanner = FrameScanner(stats, inbound=True, max_message_size=100, extensions="permessage-deflate")
    first = _raw(0x41, b"a")
    assert scanner.feed(first) == first and scanner.error is None
    scanner.feed(_raw(0xC0, b"b"))
    assert scanner.error == "reserved bits must be 0"


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_one_whole_frame_per_read_is_counted_and_sizes_slotted(mask: bool, size: int) -> None:
    """Reads of one whole frame each (the common case, scanned without the loop) count like split ones."""
    scanner, stats = _scanner(inbound=mask)
    for opcode in (Opcode.TEXT, Opcode.BINARY):
        data = Frame(opcode, b"x" * size).serialize(mask=mask)
        assert scanner.feed(data) == data
    counted = (stats.messages_in, stats.bytes_in, stats.binary_in) if mask else (
        stats.messages_out, stats.bytes_out, stats.binary_out)  # fmt: skip
    assert counted == (2, 2 * size, 1)
    assert sum(stats.sizes_in if mask else stats.sizes_out) == 2 and not scanner.mid_frame


@pytest.mark.parametrize("data", [
    Frame(Opcode.TEXT, b"hi").serialize(mask=False),  # unmasked from a client
    b"\xc1" + encode_frame(0x1, b"hi", mask=True)[1:],  # RSV1 without permessage-deflate
], ids=["unmasked", "rsv1"])  # fmt: skip
def test_one_whole_bad_frame_is_still_refused(data: bytes) -> None:
    """A whole frame that looks like the common case but breaks a rule is stopped, not forwarded."""
    scanner, _ = _scanner(inbound=True)
    assert scanner.feed(data) == b"" and scanner.error is not None and scanner.interrupted


def test_one_whole_compressed_frame_passes_with_permessage_deflate() -> None:
    """RSV1 on a whole first frame is fine once permessage-deflate was negotiated."""
    stats = RelayStats(sizes_in=[0] * 22, sizes_out=[0] * 22)
    scanner = FrameScanner(stats, inbound=True, max_message_size=1 << 20, extensions="permessage-deflate")
    data = b"\xc1" + encode_frame(0x1, b"zz", mask=True)[1:]
    assert scanner.feed(data) == data and stats.messages_in == 1


def test_one_whole_frame_over_the_limit_is_stopped() -> None:
    """The size limit holds for a whole frame read at once."""
    scanner, stats = _scanner(max_size=100, inbound=True)
    assert scanner.feed(Frame(Opcode.BINARY, b"x" * 101).serialize(mask=True)) == b""
    assert scanner.too_big and stats.messages_in == 0


def test_halted_scanner_forwards_no_whole_frame_but_still_reads_the_close() -> None:
    """After halt(), whole frames are not forwarded and a close frame is still read."""
    scanner, _ = _scanner(inbound=True)
    scanner.halt()
    assert scanner.feed(Frame(Opcode.TEXT, b"late").serialize(mask=True)) == b""
    assert scanner.feed(close_frame(1000, "bye", mask=True)) == b""
    assert scanner.close == (1000, "bye")


@pytest.mark.parametrize("inbound", [True, False], ids=["client", "upstream"])
def test_halted_mid_frame_forwards_the_rest_of_that_frame_only(inbound: bool) -> None:
    """Halted inside frame A: the rest of A goes on; no byte of the frames after it, whatever the reads.

    A read that ends inside frame B after A's end, then one that finishes B: B's tail must not be
    forwarded (it was, headless, and corrupted the stream under the gateway's close frame).
    """
    scanner, _ = _scanner(inbound=inbound)
    a, b, c = (Frame(Opcode.BINARY, bytes([n]) * 512).serialize(mask=inbound) for n in (1, 2, 3))
    assert scanner.feed(a[:100]) == a[:100]
    scanner.halt()
    assert scanner.feed(a[100:] + b[:50]) == a[100:]
    assert scanner.feed(b[50:] + c[:10]) == b""
    assert scanner.feed(c[10:] + close_frame(1000, "bye", mask=inbound)) == b""
    assert scanner.close == (1000, "bye")


def test_halted_between_frames_is_sealed_at_once_even_with_a_header_held_back() -> None:
    """A header split across reads was never forwarded: halting then forwards nothing more."""
    scanner, _ = _scanner(inbound=False)
    frame = Frame(Opcode.BINARY, b"x" * 300).serialize(mask=False)
    assert scanner.feed(frame[:1]) == b""
    scanner.halt()
    assert scanner.sealed
    assert scanner.feed(frame[1:]) == b""


@pytest.mark.parametrize("step", [1, 2, 5, 7, 1000])
def test_while_pings_are_held_they_leave_the_stream_and_only_the_latest_is_kept(step: int) -> None:
    """``hold_pings``: every ping is taken out whatever the split (a fragmented message's control
    frames too), the rest goes on byte for byte, and ``held_ping`` is the latest, as it arrived."""
    pings = [Frame(Opcode.PING, f"ping {i}".encode()) for i in range(3)]
    data_frames = [Frame(Opcode.TEXT, b"a", fin=False), Frame(Opcode.CONT, b"b"), Frame(Opcode.BINARY, b"x" * 300)]
    wire = [f.serialize(mask=True) for f in (data_frames[0], pings[0], data_frames[1], pings[1], pings[2],
                                              data_frames[2])]  # fmt: skip
    scanner, stats = _scanner()
    scanner.hold_pings = True
    out = _feed_in_pieces(scanner, b"".join(wire), step)
    assert out == wire[0] + wire[2] + wire[5]
    assert scanner.held_ping == wire[4]
    assert scanner.interrupted  # the splice looks after each read until the ping goes on
    assert (stats.messages_in, stats.bytes_in) == (2, 302)
    scanner.hold_pings = False
    scanner.held_ping = None  # what the splice does once it forwarded it
    assert _feed_in_pieces(scanner, wire[1], step) == wire[1]  # reading again: pings pass
    assert scanner.held_ping is None


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_tiny_fragments_count_the_floor_toward_the_limit(step: int) -> None:
    """Empty fragments carry no bytes a limit counts, yet cost a receiver per frame: each fragment but
    the last counts FRAGMENT_FLOOR bytes at least. An endless message of them is stopped."""
    empty = _wire(Frame(Opcode.TEXT, b"", fin=False), *[Frame(Opcode.CONT, b"", fin=False)] * 200, mask=True)
    scanner, _ = _scanner(max_size=64 * 100)
    forwarded = _feed_in_pieces(scanner, empty, step)
    assert scanner.too_big
    assert forwarded == empty[: 6 * 100]  # 100 fragments of 64 counted bytes: the 101st is over


def test_fragments_of_the_floor_or_more_count_their_bytes_only() -> None:
    """A message of max_message_size in fragments of FRAGMENT_FLOOR bytes passes (Autobahn 9.3.1's
    fragments are 64 bytes); so does a small last fragment, and a small message in one frame."""
    assert FRAGMENT_FLOOR == 64
    body = [Frame(Opcode.TEXT, b"x" * 64, fin=False), *[Frame(Opcode.CONT, b"x" * 64, fin=False)] * 98]
    data = _wire(*body, Frame(Opcode.CONT, b"x" * 64), Frame(Opcode.TEXT, b"y"), mask=False)
    scanner, stats = _scanner(max_size=64 * 100, inbound=False)
    assert _feed_in_pieces(scanner, data, 5) == data
    assert not scanner.too_big and (stats.messages_out, stats.bytes_out) == (2, 64 * 100 + 1)
    last_small = _wire(Frame(Opcode.BINARY, b"x" * 64, fin=False), Frame(Opcode.CONT, b""), mask=False)
    scanner, stats = _scanner(max_size=64, inbound=False)
    assert _feed_in_pieces(scanner, last_small, 3) == last_small and stats.messages_out == 1


def test_a_read_of_many_frames_is_scanned_a_slice_at_a_time() -> None:
    """A read of many tiny frames stops at the first frame boundary past BYTES_PER_TURN bytes, the rest
    held back for the next call; a frame larger than that is never cut."""
    tiny = _wire(*[Frame(Opcode.BINARY, b"x")] * 10_000, mask=True)  # 70,000 bytes
    scanner, stats = _scanner(inbound=True)
    first = scanner.feed(tiny)
    assert scanner.unscanned and scanner.interrupted and BYTES_PER_TURN <= len(first) < BYTES_PER_TURN + 7
    assert stats.messages_in == len(first) // 7
    scanner.unscanned = False
    assert first + _feed_whole(scanner, b"") == tiny and stats.messages_in == 10_000
    large = _wire(Frame(Opcode.BINARY, b"x" * 100_000), Frame(Opcode.TEXT, b"y"), mask=False)
    scanner, stats = _scanner(inbound=False)
    assert scanner.feed(large) == large[:-3] and scanner.unscanned  # the large frame whole, then a boundary
