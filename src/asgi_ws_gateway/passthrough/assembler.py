"""Sans-I/O: the whole messages one side sends, read from its frames (RFC 6455 §5).

:class:`MessageAssembler` is the frame relay's reader (``passthrough/framed.py``): where the
splice's :class:`~asgi_ws_gateway.passthrough.frames.FrameScanner` only reads frame headers, it
unmasks payloads, reassembles fragmented messages (control frames may come between the fragments),
checks that a complete text message is UTF-8 and that a close frame's code and reason are valid,
and stops at the first frame that would take a message over the size limit. It never reads ahead
more than one frame: a frame's bytes are held until it is complete, and a frame header that
announces too much stops it before its payload is waited for.

No extension is negotiated on a framed connection (the gateway takes the client's offer out of the
upstream's handshake), so every reserved bit must be 0.
"""

from __future__ import annotations

import struct

from websockets.speedups import apply_mask

from .._types import Data
from ..frame_rules import FRAGMENT_FLOOR, frame_rule_broken, header_start_broken
from ..relay.close_codes import close_code_and_reason, close_problem
from ..relay.stats import RelayStats

_TEXT, _CLOSE, _PONG = 0x1, 0x8, 0xA
_WHOLE = frozenset({0x81, 0x82})  # the first byte of a final text or binary frame, no reserved bit
_LONGEST_HEADER = 14  # a 64-bit length and a mask key

Event = tuple[int, Data, bytes, int]
"""``(opcode, data, raw, size)``: a message (opcode 1 with ``str``, 2 with ``bytes``) or a control
frame (``bytes``); ``raw`` is the frame as it arrived when the event is one whole frame (b"" for a
reassembled message), ``size`` the payload bytes."""


class MessageAssembler:
    """Reads the frames one side sends into whole messages and control frames.

    Args:
        stats: where messages are counted (when complete and valid, before any policy).
        inbound: True for the client's frames (they must be masked), False for the upstream's.
        max_message_size: payload bytes one message may carry (each fragment but the last counting
            ``FRAGMENT_FLOOR`` at least, as on the splice).

    :meth:`feed` takes bytes as they arrive; :meth:`next` returns the next event, or None when it
    needs more bytes or has stopped (:meth:`read` is the two in one call): ``close`` holds
    ``(code, reason)`` once a valid close frame arrived (1005 when it had no code), ``too_big`` is
    True once a message went over the limit, ``error`` names the rule the first bad frame broke and
    ``error_code`` the close code it calls for (1002, or 1007 for invalid UTF-8).
    """

    # What the splice reads of a scanner: the frame relay forwards whole frames only, so no side is
    # ever left in the middle of one.
    remaining = 0
    mid_frame = False
    in_message = False
    unscanned = False

    def __init__(self, stats: RelayStats, *, inbound: bool, max_message_size: int) -> None:
        # Messages are counted here, inline (RelayStats.count_in's increments without its call).
        self._stats = stats
        self._inbound = inbound
        self._sizes = stats.sizes_in if inbound else stats.sizes_out
        self._top = len(self._sizes) - 1
        self._max = max_message_size
        self.hold_limit = max_message_size + _LONGEST_HEADER
        """What the frame relay holds unread while a policy step waits (a whole frame, the largest
        allowed) before it stops reading that side."""
        self._masked = 0x80 if inbound else 0
        self._buffer = b""
        self._pos = 0
        self._more: list[bytes] = []  # reads not joined to the buffer yet: joined once a frame is complete
        self._extra = 0
        # The fragments of the message being assembled, joined as they come: one bytearray, not a
        # list of bytes objects (tiny fragments must not cost ~40 bytes of memory per payload byte).
        self._parts: bytearray | None = None
        self._opcode = 0
        self._charged = 0  # what the message counts toward the limit (FRAGMENT_FLOOR)
        self.close: tuple[int, str] | None = None
        self.too_big = False
        self.cut = False  # it holds a frame until whole: never forwarded part way
        self.error: str | None = None
        self.error_code = 1002
        self.halted = False
        """Set by :meth:`halt`: the gateway closes; events still come (the peer's answer is a close frame)."""
        self.sealed = False
        """Set with ``halted``: frames are forwarded whole, so nothing is ever in flight."""
        self.interrupted = False
        """True once stopped or halted: the splice looks after each read."""
        self.idle = True
        """Nothing held (no bytes, no fragments) and nothing stopped: :meth:`next` has nothing to
        return, and a read may be one whole frame (:meth:`read`'s shortcut). The frame relay reads
        it after each event instead of calling :meth:`next`."""
        self.pong: bytes | None = None
        """The payload of the gateway's keepalive pings: a pong carrying it is not returned."""
        self.hold_pings = False
        """Set while this side reads nothing: the frame relay keeps only its latest ping (``held_ping``)."""
        self.held_ping: bytes | None = None
        self.pings_in_flight: tuple[bytes, ...] = ()
        """The payloads of its pings that went on and await its peer's pong, oldest first (:mod:`.ping_window`)."""

    @property
    def buffered(self) -> int:
        """Bytes taken in and not read into an event yet (the fragments of a message being joined
        aside): a frame still incomplete, and what a side sent while the frame relay held its events."""
        return len(self._buffer) - self._pos + self._extra

    def halt(self) -> None:
        self.halted = self.interrupted = self.sealed = True
        self.idle = False

    seal = halt  # frames go on whole: halted, nothing is in flight

    def read(self, data: bytes) -> Event | None:
        """:meth:`feed` then :meth:`next`: one whole final text or binary frame, with nothing held
        (what most reads are), is checked here, without the loop (inline, as the splice's
        ``FrameScanner.feed`` does the same check: a call per read costs more than the lines)."""
        if self.idle and len(data) > 3:
            b0, b1, masked = data[0], data[1], self._masked  # (each read once: an index costs a call)
            if b0 in _WHOLE and b1 & 0x80 == masked:
                length = b1 & 0x7F
                header = 6 if masked else 2
                if length == 126:
                    length = data[2] << 8 | data[3]
                    header += 2
                if length != 127 and header + length == len(data) and length <= self._max:
                    payload = apply_mask(data[header:], data[header - 4 : header]) if masked else data[header:]
                    return self._message(b0 & 0x0F, payload, data)
        self.feed(data)
        return self._next()

    def feed(self, data: bytes) -> bytes:
        """Take ``data``; returns b"" (nothing is forwarded as it arrives)."""
        if self.close is not None or self.too_big or self.error is not None:
            # Nothing after a close frame, an oversize or a bad frame is read: dropped, not kept
            # until the closing handshake ends (a client grew a gateway by 2.7 GB in 8 s).
            self._buffer, self._pos, self._more, self._extra = b"", 0, [], 0
            return b""
        if self._pos == len(self._buffer) and not self._extra:
            self._buffer, self._pos = data, 0
        else:
            self._more.append(data)
            self._extra += len(data)
        self.idle = False  # (until next() finds nothing held)
        return b""

    def _have(self, n: int) -> bool:
        """True when ``n`` bytes from the current position are in the buffer (joining held reads)."""
        avail = len(self._buffer) - self._pos
        if avail >= n:
            return True
        if avail + self._extra < n:
            return False
        self._buffer = self._buffer[self._pos :] + b"".join(self._more)
        self._pos, self._more, self._extra = 0, [], 0
        return True

    def _fail(self, error: str, code: int = 1002) -> None:
        self.error, self.error_code, self.interrupted = error, code, True
        self.idle = False

    def next(self) -> Event | None:
        """The next message or control frame, or None (more bytes needed, or stopped)."""
        if self.idle:
            return None
        return self._next()

    def _next(self) -> Event | None:
        event = self._scan()
        self.idle = self._pos == len(self._buffer) and not self._extra and self._parts is None and not self.interrupted
        return event

    def _scan(self) -> Event | None:
        while self.close is None and self.error is None and not self.too_big:
            if not self._have(2):
                return None
            buf, pos = self._buffer, self._pos
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            header = 2 + (4 if b1 & 0x80 else 0) + (2 if length == 126 else 8 if length == 127 else 0)
            if not self._have(header):
                # Its first two bytes tell most rules: refused now (as the scanner does).
                error = header_start_broken(b0, b1, self._masked, 0, self._parts is not None)
                if error is not None:
                    self._fail(error)
                return None
            buf, pos = self._buffer, self._pos
            if length == 126:
                (length,) = struct.unpack_from("!H", buf, pos + 2)
            elif length == 127:
                (length,) = struct.unpack_from("!Q", buf, pos + 2)
            opcode = b0 & 0x0F
            error = frame_rule_broken(b0, b1, opcode, length, self._masked, 0, self._parts is not None)
            if error is not None:
                self._fail(error)
                return None
            if opcode < _CLOSE:  # the message's bytes, and its tiny fragments' floor, within the limit
                charged = (self._charged if opcode == 0 else 0) + (
                    length if length >= FRAGMENT_FLOOR or b0 & 0x80 else FRAGMENT_FLOOR
                )
                if charged > self._max:
                    self.too_big = self.interrupted = True
                    return None
            end = header + length
            if not self._have(end):
                return None
            buf, pos = self._buffer, self._pos
            end += pos
            raw = buf[pos:end]
            payload = buf[end - length : end]
            if b1 & 0x80:
                payload = apply_mask(payload, buf[end - length - 4 : end - length])
            if end == len(buf):
                self._buffer, self._pos = b"", 0
            else:
                self._pos = end
            if opcode >= _CLOSE:
                if opcode == _CLOSE:
                    return self._closed(payload, raw)
                if opcode == _PONG and payload == self.pong:
                    continue  # the answer to the gateway's keepalive ping
                return opcode, payload, raw, length
            if opcode:
                if b0 & 0x80:
                    return self._message(opcode, payload, raw)
                self._opcode, self._parts, self._charged = opcode, bytearray(payload), charged
                continue
            assert self._parts is not None
            self._parts += payload
            self._charged = charged
            if b0 & 0x80:
                payload, self._parts = bytes(self._parts), None
                return self._message(self._opcode, payload, b"")
        return None

    def _message(self, opcode: int, payload: bytes, raw: bytes) -> Event | None:
        size = len(payload)
        data: Data = payload
        if opcode == _TEXT:
            try:
                data = payload.decode()
            except UnicodeDecodeError:
                self._fail("invalid UTF-8", 1007)
                return None
        stats = self._stats
        if self._inbound:
            stats.messages_in += 1
            stats.bytes_in += size
            if opcode != _TEXT:
                stats.binary_in += 1
                stats.binary_bytes_in += size
        else:
            stats.messages_out += 1
            stats.bytes_out += size
            if opcode != _TEXT:
                stats.binary_out += 1
                stats.binary_bytes_out += size
        slot = size.bit_length()
        self._sizes[slot if slot < self._top else self._top] += 1
        return opcode, data, raw, size

    def _closed(self, payload: bytes, raw: bytes) -> Event | None:
        problem = close_problem(payload)
        if problem is not None:
            self._fail(*problem)
            return None
        self.close = close_code_and_reason(payload)
        self.interrupted = True
        return _CLOSE, b"", raw, 0


__all__ = ["Event", "MessageAssembler"]
