"""The passthrough frame-header scanner, against frames serialized by ``websockets``."""

from __future__ import annotations

import pytest
from websockets.frames import Close, Frame, Opcode

from asgi_ws_gateway.frames import FrameScanner, close_frame, encode_frame
from asgi_ws_gateway.relay import RelayStats


def _scanner(max_size: int = 1 << 20, inbound: bool = True) -> tuple[FrameScanner, RelayStats]:
    slots = max_size.bit_length() + 1
    stats = RelayStats(sizes_in=[0] * slots, sizes_out=[0] * slots)
    return FrameScanner(stats, inbound=inbound, max_message_size=max_size), stats


def _wire(*frames: Frame, mask: bool) -> bytes:
    return b"".join(f.serialize(mask=mask) for f in frames)


def _feed_in_pieces(scanner: FrameScanner, data: bytes, step: int) -> bytes:
    return b"".join(scanner.feed(data[i : i + step]) for i in range(0, len(data), step))


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000, 1 << 20])
def test_every_length_form_counted_whatever_the_split(mask: bool, step: int) -> None:
    """7-, 16- and 64-bit lengths, masked or not, split at any byte: every message counted once."""
    frames = [Frame(Opcode.BINARY if i % 2 else Opcode.TEXT, b"x" * n) for i, n in enumerate(SIZES)]
    data = _wire(*frames, Frame(Opcode.PING, b"p"), mask=mask)
    scanner, stats = _scanner()
    assert _feed_in_pieces(scanner, data, step) == data
    assert stats.messages_in == len(SIZES)
    assert stats.bytes_in == sum(SIZES)
    assert stats.binary_in == len(SIZES) // 2
    assert stats.binary_bytes_in == sum(n for i, n in enumerate(SIZES) if i % 2)
    assert scanner.remaining == 0 and scanner.close is None


def test_fragmented_message_is_one_message_with_a_control_frame_inside() -> None:
    """Fragments add up to one message; a ping between them is not a message."""
    data = _wire(
        Frame(Opcode.TEXT, b"ab", fin=False),
        Frame(Opcode.PING, b""),
        Frame(Opcode.CONT, b"cd", fin=False),
        Frame(Opcode.CONT, b"e"),
        mask=True,
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
    scanner, _ = _scanner()
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
            scanner, stats = _scanner()
            scanner.feed(encode_frame(2, b"\x01" * size, mask=mask))
            assert (stats.messages_in, stats.bytes_in) == (1, size)
        scanner, _ = _scanner()
        scanner.feed(close_frame(1001, "going away", mask=mask))
        assert scanner.close == (1001, "going away")
