"""Frame-header scanning for passthrough: what crossed one direction, without parsing payloads.

:class:`FrameScanner` reads the bytes one side sends as they arrive, split anywhere, and finds
frame boundaries from the headers alone (RFC 6455 §5.2: 7, 16 or 64-bit lengths, masked or not).
It counts messages and bytes into :class:`~asgi_ws_gateway.relay.stats.RelayStats`, reads close frames'
code and reason, and stops at the first frame that would take a message over the size limit, or
that breaks the rules a WebSocket endpoint checks (§5.1-5.5: masking by direction, reserved bits no
extension claimed, reserved opcodes, fragmented or long control frames, continuation frames out of
order; §7.4: a close code no peer may send, a close reason that is not UTF-8) -- so that passthrough
fails such a peer with 1002 (1007) as the relay's endpoints do, instead of passing the bad frame on.
Payloads are not copied or unmasked, except a close frame's (at most 125 bytes, held back until
whole and checked before any of it goes on) and, with permessage-deflate, a compressed message's,
which is inflated to hold it to the size limit (:mod:`.inflate`).
"""

from __future__ import annotations

import struct
from typing import Protocol

try:  # websockets' C helper, and its pure-Python one where the extension was not built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

from ..frame_rules import FRAGMENT_FLOOR, RSV1, allowed_rsv, extension_names, frame_rule_broken, header_start_broken
from ..loop_watch import BYTES_PER_TURN, INFLATED_PER_TURN
from ..relay.close_codes import close_code_and_reason, close_problem
from ..relay.stats import RelayStats
from .inflate import InflatedSize, sender_window
from .ping_window import PINGS_IN_FLIGHT, SUPERSEDED, UNSOLICITED, answered, count_drop

_CLOSE = 0x8
_PING = 0x9
_PONG = 0xA
_CONTROL = 0x8  # opcodes 0x8 and above are control frames


_WHOLE = 0x1  # the first byte of a whole, final, unfragmented text or binary frame (if the rest agrees)
_BINARY = 0x2
_COMPRESSED = 0x4  # RSV1 set: allowed only under permessage-deflate


def _kinds(*, rsv1: bool) -> tuple[int, ...]:
    """What each first byte of a frame says to :meth:`FrameScanner.feed`'s fast path (0: take the loop)."""
    kinds = [0] * 256
    for first in (0x81, 0x82, *((0xC1, 0xC2) if rsv1 else ())):
        kinds[first] = _WHOLE | (_BINARY if first & 0x0F == 2 else 0) | (_COMPRESSED if first & RSV1 else 0)
    return tuple(kinds)


_KINDS = _kinds(rsv1=False)
_KINDS_RSV1 = _kinds(rsv1=True)
_NOT_FAST = 1 << 63  # over any limit: the loop reads the frame


def _lengths(*, masked: bool) -> tuple[int, ...]:
    """What each second byte of a frame says to the fast path: its 7-bit length, -1 for a 16-bit length
    that follows, :data:`_NOT_FAST` for a 64-bit one or the wrong mask bit (the loop refuses that)."""
    mask = 0x80 if masked else 0
    return tuple(
        (_NOT_FAST if second & 0x80 != mask or second & 0x7F == 127 else -1 if second & 0x7F == 126 else second & 0x7F)
        for second in range(256)
    )


_LENGTHS = _lengths(masked=False)
_LENGTHS_MASKED = _lengths(masked=True)


class Scanner(Protocol):
    """What the splice reads of the reader of one side's frames (:class:`FrameScanner`, or the frame
    relay's :class:`~asgi_ws_gateway.passthrough.assembler.MessageAssembler`)."""

    remaining: int
    in_message: bool
    close: tuple[int, str] | None
    too_big: bool
    cut: bool
    error: str | None
    error_code: int
    interrupted: bool
    halted: bool
    sealed: bool
    pong: bytes | None
    hold_pings: bool
    held_ping: bytes | None
    pings_in_flight: tuple[bytes, ...]
    unscanned: bool

    @property
    def mid_frame(self) -> bool: ...

    def halt(self) -> None: ...

    def seal(self) -> None: ...

    def feed(self, data: bytes) -> bytes: ...


class FrameScanner:
    """Scans the frames one side sends.

    Args:
        stats: where messages and bytes are counted.
        inbound: True for client to upstream (``*_in``: frames must be masked), False for upstream
            to client (frames must not be).
        max_message_size: payload bytes one message may carry: on the wire and, compressed with
            permessage-deflate, inflated too.
        extensions: the negotiated ``Sec-WebSocket-Extensions`` (None: none), which decides the
            reserved bits a frame may set: RSV1 with permessage-deflate only; any with another
            extension, which the scanner cannot know.

    After :meth:`feed`, ``too_big`` is True once a message went over the limit, ``error`` names
    the rule the first bad frame broke and ``error_code`` the close code it calls for (nothing from
    the offending frame on is returned, in both cases; a close frame with a code no peer may send is
    one), and ``close`` holds ``(code, reason)`` once a valid close frame arrived in full (1005 when
    it had no code). ``cut`` is True when a compressed message was found over the limit (or not to
    be deflate data) part way through a frame: part of that frame was forwarded, and the rest never
    will be.
    """

    # A scanner's starting state, as class attributes: two scanners start per connection, and
    # nothing here changes until a frame says so (each is then set on the instance).
    _inflating: InflatedSize | None = None  # ``_inflated`` while a compressed message is read
    cut = False
    _head = b""  # a header split across reads, held back until complete
    remaining = 0
    """Payload bytes of the current frame not seen yet (0: at a frame boundary)."""
    _message = 0  # payload bytes of the message so far
    _charged = 0  # what it counts toward the limit: each fragment but the last at least FRAGMENT_FLOOR
    _binary = False
    in_message = False
    """True between the first and the last frame of a fragmented message."""
    _fin = False  # the current frame ends its message
    _control = False
    too_big = False
    error: str | None = None
    error_code = 1002
    """The close code ``error`` calls for."""
    close: tuple[int, str] | None = None
    halted = False
    """Set by :meth:`halt`: the frame in flight is finished, nothing after it is forwarded."""
    sealed = False
    """Set once halted and the frame in flight (if any) is complete: nothing more is forwarded."""
    interrupted = False
    """True once :attr:`stopped` or :attr:`halted`, or while a ping is held: the splice has to look
    after each read."""
    pong: bytes | None = None
    """The payload of the gateway's keepalive pings: a pong carrying it is taken out of the stream."""
    hold_pings = False
    """Set while this side reads nothing (the gateway's writes to it are paused): its pings are
    taken out of the stream and only the latest is kept, in ``held_ping``, since the pongs they
    ask for could not reach it and would pile up at the peer (RFC 6455 §5.5.3 lets the peer
    answer only the most recent)."""
    held_ping: bytes | None = None
    """The latest ping taken out while ``hold_pings`` or ``pings_in_flight`` is full, as it arrived: the
    splice forwards it later."""
    pings_in_flight: tuple[bytes, ...] = ()
    """The payloads of this side's pings that went on and await a pong of its peer's, oldest first: while
    there are ``PINGS_IN_FLIGHT`` its pings are held (``held_ping``, the latest), so that its peer owes
    that many pongs at most however fast it pings (RFC 6455 §5.5.3 lets the peer answer only the most
    recent); see :mod:`.ping_window`."""
    answers: FrameScanner | None = None
    """The peer's scanner, whose pings this side's pongs answer: a pong goes on only when it answers one
    in flight, and lets the peer's held ping go (None: every pong goes on)."""
    _fast = True  # at a frame boundary, between messages, nothing held back or stopped
    # What negotiated extensions decide (none: these).
    _rsv = 0  # the reserved bits a frame may set
    _inflated: InflatedSize | None = None  # with permessage-deflate: what holds a compressed message to the limit
    unscanned = False
    """Set when :meth:`feed` stopped at a frame boundary past ``BYTES_PER_TURN`` bytes of a read (or
    ``INFLATED_PER_TURN`` inflated in the call) and held
    the rest back (``interrupted`` too): the splice clears it and calls ``feed(b"")`` in the next loop
    turn, reading nothing meanwhile."""

    def __init__(
        self, stats: RelayStats, *, inbound: bool, max_message_size: int, extensions: str | None = None
    ) -> None:
        self._count = stats.count_in if inbound else stats.count_out
        self._stats = stats
        self._inbound = inbound
        sizes = self._sizes = stats.sizes_in if inbound else stats.sizes_out
        self._max = max_message_size
        # The fast path counts into the size slot ``length.bit_length()`` without count_in's clamp: it
        # takes the messages that slot exists for, the general path (which clamps) any larger.
        top = (1 << (len(sizes) - 1)) - 1
        self._whole_max = max_message_size if max_message_size <= top else top
        # The fast path's tables and constants, on the instance (read faster there than from the class).
        self._masked = 0x80 if inbound else 0  # frames must be masked (a client's) or not (an upstream's)
        self._header = 6 if inbound else 2  # a frame header's bytes with a 7-bit length
        self._lengths = _LENGTHS_MASKED if inbound else _LENGTHS  # what a frame's second byte says
        self._kinds = _KINDS  # what its first byte says
        self._fast = True
        if extensions:  # (none: the class's defaults, no reserved bit and nothing to inflate)
            names = extension_names(extensions)
            self._rsv = allowed_rsv(names)
            # With permessage-deflate (RSV1 is its, whatever else was negotiated beside it), compressed
            # messages are inflated to be held to the limit.
            if "permessage-deflate" in names:
                keeps, bits = sender_window(extensions, sender_is_client=inbound)
                self._inflated = InflatedSize(limit=max_message_size, keeps_context=keeps, window_bits=bits)
            self._kinds = _KINDS_RSV1 if self._rsv & RSV1 else _KINDS

    def halt(self) -> None:
        """The gateway closes: finish the frame in flight, forward nothing after it (frames are still
        scanned, so the peer's answer to the gateway's close frame is seen)."""
        self.halted = self.interrupted = True
        self.sealed = not self.remaining  # a header held back was never forwarded
        self._fast = False

    def seal(self) -> None:
        """Its receiver is gone: forward nothing more, not even the rest of the frame in flight, and count
        no message as sent from here on (frames are still scanned, so a close frame is seen)."""
        self.halt()
        self.sealed = True

    @property
    def stopped(self) -> bool:
        """True once nothing more goes on: a close frame, an oversize message or a bad frame arrived."""
        return self.close is not None or self.too_big or self.error is not None

    @property
    def mid_frame(self) -> bool:
        """True while part of a frame has been forwarded (or held back) and the rest has not."""
        return bool(self.remaining or self._head or self.cut)

    def feed(self, data: bytes) -> bytes:
        """Scan ``data``; returns the bytes to forward (``data`` itself unless a header was split, a
        frame stopped the scan, ``halted`` is set, or a keepalive pong was taken out)."""
        if self._fast and len(data) > 3 and (kind := self._kinds[data[0]]):
            # One whole final text or binary frame, as most reads are: checked and counted here.
            # Inline, as MessageAssembler.read's same check: a shared function measured +9 %
            # instructions per echo (a call per read); a rule change goes into both.
            length = self._lengths[data[1]]
            header = self._header
            if length < 0:  # a 16-bit length follows
                length = data[2] << 8 | data[3]
                header += 2
            if length <= self._whole_max and header + length == len(data):
                # RSV1 passes only under permessage-deflate, which set ``_inflated``.
                if kind & _COMPRESSED and not self._inflate_whole(self._inflated, data, header):  # type: ignore[arg-type]
                    return b""
                # RelayStats.count_in / count_out's increments, inline (the call and its min() were ~40 %
                # of this path's instructions); the slot exists (``_whole_max``).
                stats = self._stats
                if self._inbound:
                    stats.messages_in += 1
                    stats.bytes_in += length
                    if kind & _BINARY:
                        stats.binary_in += 1
                        stats.binary_bytes_in += length
                else:
                    stats.messages_out += 1
                    stats.bytes_out += length
                    if kind & _BINARY:
                        stats.binary_out += 1
                        stats.binary_bytes_out += length
                self._sizes[length.bit_length()] += 1
                return data
        elif self._fast and data[:1] == b"\x88":  # a final close frame, no reserved bit: each connection's end
            return self._whole_close(data)
        return self._feed(data)

    def _whole_close(self, frame: bytes) -> bytes:
        """A read that may be one whole valid close frame, between messages: read as :meth:`_feed`
        reads one, without the loop and the header's rule checks, which it passes (anything else:
        :meth:`_feed`)."""
        length = frame[1] ^ self._masked if len(frame) > 1 else 128  # 128 and up: the mask bit is wrong
        header = self._header
        if length > 125 or header + length != len(frame):
            return self._feed(frame)  # another frame follows, or it is cut, or too long: the loop's
        payload = frame[header:]
        if self._masked:
            payload = apply_mask(payload, frame[header - 4 : header])
        problem = close_problem(payload)
        if problem is not None:
            return self._feed(frame)  # refused as the loop refuses it
        self.close = close_code_and_reason(payload)
        self.interrupted, self._fast = True, False
        return frame

    def _inflate_whole(self, inflated: InflatedSize, frame: bytes, header: int) -> bool:
        """Inflate a compressed message that is one whole frame; False (stopped) when it is over the
        limit or not deflate data."""
        payload = frame[header:]
        if self._masked:
            payload = apply_mask(payload, frame[header - 4 : header])
        inflated.start()
        problem = inflated.feed(payload, last=True)
        if problem is None:
            return True
        self._stop(problem)
        self.interrupted, self._fast = True, False
        return False

    def _feed(self, data: bytes) -> bytes:
        if self.cut:
            return b""  # the frame cut short never ends: nothing more can be forwarded
        if self._head:
            data = self._head + data
            self._head = b""
        size = len(data)
        pos = 0
        end = 0 if self.sealed else size  # nothing from here on is forwarded
        kept: list[bytes] | None = None  # the pieces around pings and pongs taken out
        keep = 0
        release = False  # a pong answered the peer's ping in flight while it holds another
        frame_start = -1  # where the frame in progress starts in ``data`` (-1: in an earlier read)
        inflated = self._inflated
        # What this callback may inflate: its wire bytes say little of that (zeros inflate ~1,000-fold).
        inflate_until = -1 if inflated is None else inflated.inflated + INFLATED_PER_TURN
        while pos < size:
            remaining = self.remaining
            if remaining:
                take = min(remaining, size - pos)
                if (
                    self._inflating is not None
                    and not self._control
                    and not self._inflate(self._inflating, data[pos : pos + take], remaining)
                ):
                    if frame_start >= 0:  # none of the frame went on: stopped at its start
                        end, self.remaining = min(end, frame_start), 0
                    else:  # part of it went on in an earlier read, and the rest never will
                        end, self.cut = min(end, pos), True
                    break
                pos += take
                self.remaining = remaining - take
                if self.remaining == 0:
                    self._frame_done()
                continue
            if self.close is not None or self.too_big or self.error is not None:
                end = min(end, pos)  # nothing after a close frame, an oversize or a bad frame goes on
                break
            if self.halted and not self.sealed:
                end = pos  # the frame in flight is complete: the peer may now take the gateway's close
                self.sealed = True
            if pos >= BYTES_PER_TURN or (inflated is not None and inflated.inflated >= inflate_until):
                # Frames enough for one callback (never part of one): the rest later.
                return self._hold_rest(data, pos, min(end, pos), kept, keep)
            start = frame_start = pos
            if size - pos < 2:
                self._head = data[pos:]
                end = min(end, start)
                break
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            header = 2 + (4 if b1 & 0x80 else 0) + (2 if length == 126 else 8 if length == 127 else 0)
            if size - pos < header:
                # Its first two bytes tell most rules: a header that breaks one is refused now, not once the
                # rest of it comes (a peer that sent no more was held to the keepalive).
                error = header_start_broken(b0, b1, self._masked, self._rsv, self.in_message)
                if error is not None:
                    self.error = error
                    end = min(end, start)
                    break
                self._head = data[pos:]
                end = min(end, start)
                break
            if length == 126:
                (length,) = struct.unpack_from("!H", data, pos + 2)
            elif length == 127:
                (length,) = struct.unpack_from("!Q", data, pos + 2)
            opcode = b0 & 0x0F
            error = frame_rule_broken(b0, b1, opcode, length, self._masked, self._rsv, self.in_message)
            if error is not None:
                self.error = error
                end = min(end, start)
                break
            if opcode == _PING and end == size:
                if size - pos < header + length:  # held back whole: to take out, or to know its payload
                    self._head = data[pos:]
                    end = min(end, start)
                    break
                pos += header + length
                if self.hold_pings or self.held_ping is not None or len(self.pings_in_flight) >= PINGS_IN_FLIGHT:
                    if self.held_ping is not None:
                        count_drop(self._stats, inbound=self._inbound, reason=SUPERSEDED)
                    self.held_ping = data[start:pos]
                    kept = kept or []
                    kept.append(data[keep:start])
                    keep = pos
                else:  # it goes on: only a pong carrying its payload answers it
                    self.pings_in_flight += (_payload(data, pos, length, b1 & 0x80),)
                continue
            if opcode == _PONG:
                if size - pos < header + length:  # held back whole: it may be taken out
                    self._head = data[pos:]
                    end = min(end, start)
                    break
                pos += header + length
                ours = self.pong is not None and length == len(self.pong)  # the gateway's keepalive's answer?
                if ours and _payload(data, pos, length, b1 & 0x80) != self.pong:
                    ours = False
                pinger = self.answers
                if not ours and pinger is not None and pinger.pings_in_flight:
                    in_flight = answered(pinger.pings_in_flight, _payload(data, pos, length, b1 & 0x80))
                    if in_flight is not None:  # the peer's held ping, if any, may go now
                        pinger.pings_in_flight = in_flight
                        release = release or pinger.held_ping is not None
                        continue
                if (ours or pinger is not None) and end == size:  # the gateway's, or answering nothing
                    kept = kept or []
                    kept.append(data[keep:start])
                    keep = pos
                    if not ours:
                        count_drop(self._stats, inbound=self._inbound, reason=UNSOLICITED)
                continue
            if opcode == _CLOSE:
                # Held back whole (131 bytes at most) and checked before any of it goes on: a close
                # code no peer may send never reaches the other side (Autobahn 7.9.x, 7.13.x).
                if size - pos < header + length:
                    self._head = data[pos:]
                    end = min(end, start)
                    break
                pos += header + length
                payload = _payload(data, pos, length, b1 & 0x80)
                problem = close_problem(payload)
                if problem is not None:
                    self.error, self.error_code = problem
                    end = min(end, start)
                    break
                self.close = close_code_and_reason(payload)
                continue
            pos += header
            if opcode >= _CONTROL:
                self._fin = True
            else:
                if opcode:  # the first frame of a message: text (1) or binary (2)
                    self._binary = opcode == 2
                    self._message = self._charged = 0
                    self._inflating = self._inflated if b0 & RSV1 else None  # RSV1: compressed
                    if self._inflating is not None:
                        self._inflating.start()
                self._message += length
                self._charged += length if length >= FRAGMENT_FLOOR or b0 & 0x80 else FRAGMENT_FLOOR
                if self._charged > self._max:  # the message's bytes, and its tiny fragments' floor
                    self.too_big = True
                    end = min(end, start)
                    break
                self.in_message = not b0 & 0x80
                self._fin = not self.in_message
                if (inflating := self._inflating) is not None:
                    inflating.frame(data[pos - 4 : pos] if b1 & 0x80 else b"", length)
                    if length == 0 and self._fin and not self._inflate(inflating, b"", 0):
                        end = min(end, start)
                        break
            self._control = opcode >= _CONTROL
            self.remaining = length
            if length == 0:
                self._frame_done()
        if self.halted and not self.sealed and not self.remaining and not self.cut:
            # The frame in flight ended with this read (as most do): the peer may take the gateway's
            # close now. Sealed only when the next frame's header came in the same read, the close
            # frame waited for close_timeout and the peer was aborted without it (1006).
            self.sealed = True
        self.interrupted = (self.halted or self.close is not None or self.too_big or self.error is not None
                            or self.held_ping is not None or release)  # fmt: skip
        self._fast = not (self.interrupted or self.remaining or self._head or self.in_message)
        if kept is not None:
            kept.append(data[keep:end])
            return b"".join(kept)
        return data if end == size else data[:end]

    def _hold_rest(self, data: bytes, pos: int, end: int, kept: list[bytes] | None, keep: int) -> bytes:
        """Stop scanning at ``pos``, a frame boundary, holding the rest back as ``unscanned``; what
        :meth:`_feed` returns for what came before."""
        self._head = data[pos:]
        self.unscanned = self.interrupted = True
        self._fast = False
        if kept is not None:
            kept.append(data[keep:end])
            return b"".join(kept)
        return data[:end]

    def _inflate(self, inflating: InflatedSize, part: bytes, remaining: int) -> bool:
        """Inflate the next ``part`` of a compressed message's data frame (``remaining`` of its payload
        were unseen before it); False when the message is over the limit or not deflate data."""
        mask = inflating.mask
        if mask:  # unmasked from where the part starts in the frame's payload
            offset = (inflating.frame_length - remaining) % 4
            part = apply_mask(part, mask[offset:] + mask[:offset])
        problem = inflating.feed(part, last=self._fin and len(part) == remaining)
        if problem is None:
            return True
        self._stop(problem)
        return False

    def _stop(self, problem: str) -> None:
        """A compressed message is over the limit, or not deflate data (what :class:`InflatedSize` says)."""
        if problem == "too big":
            self.too_big = True
        else:
            self.error, self.error_code = problem, 1007

    def _frame_done(self) -> None:
        # An upstream's message that ends once the scanner is sealed (the gateway closes) is read and
        # dropped, never sent to the client: not counted as sent.
        if not self._control and self._fin and (self._inbound or not self.sealed):
            self._count(self._message, self._binary)


def _payload(data: bytes, end: int, length: int, masked: int) -> bytes:
    """The payload, unmasked, of the frame of ``length`` payload bytes that ends at ``end`` in ``data``
    (a pong or a close frame the scanner held back whole: 125 bytes at most)."""
    payload = data[end - length : end]
    return apply_mask(payload, data[end - length - 4 : end - length]) if masked else payload


__all__ = ["FrameScanner", "Scanner"]
