"""What a compressed message inflates to, for passthrough's size limit (RFC 7692, permessage-deflate).

The splice forwards compressed frames as they are, so the bytes on the wire say little about what
the receiver gets: deflate inflates zeros about a thousandfold, and a 1 MiB limit read from frame
headers would pass a 1 GiB message. :class:`InflatedSize` inflates each compressed message as its
payload goes by, keeping only a count, and says when the message goes over the limit — before the
bytes that take it over are forwarded. Its inflation is bounded by the limit too: a bomb costs the
gateway no more than a message of the limit's size, and so is the work of the deflate streams it
holds: at most one may end in each frame.
"""

from __future__ import annotations

import sys
import zlib

from ..wire_numbers import parse_digits

_TAIL = b"\x00\x00\xff\xff"
"""What the sender took off the end of each message's deflate data (RFC 7692 §7.2.2)."""


class InflatedSize:
    """Inflates the compressed messages of one direction, counting and discarding the output.

    Args:
        limit: bytes one inflated message may carry.
        keeps_context: the sender compresses each message with the previous ones' window (context
            takeover, the default): the inflater is kept between messages. Without it (the
            ``*_no_context_takeover`` parameter), it is dropped after each message and its memory
            freed.
        window_bits: the sender's negotiated window (``*_max_window_bits``): the inflater's memory,
            39 KiB at 15 (the default), 11 KiB at 12 (what a ``websockets`` server negotiates). A
            sender that reaches further back than it agreed to is not deflate data to it (1007), as
            to a receiver that keeps to the negotiation.

    One frame's data may end at most one deflate stream (a sender that flushes with a final block,
    RFC 7692 §7.2.3.3, ends one where it flushes): a message of empty final blocks (two bytes each)
    made one new inflater per two bytes and copied the rest of the data at each, about a second of
    the event loop per MiB on the wire.
    """

    __slots__ = ("_bits", "_ended", "_inflater", "_keeps_context", "_limit", "frame_length", "inflated", "mask", "size")

    def __init__(self, *, limit: int, keeps_context: bool, window_bits: int = 15) -> None:
        self._limit = min(limit, sys.maxsize - 1)  # zlib's max_length is a C ssize_t
        self._keeps_context = keeps_context
        self._bits = -max(window_bits, 9)  # raw deflate; zlib inflates an 8-bit window with a 9-bit one
        self._inflater: zlib._Decompress | None = None
        self.size = 0
        """Inflated bytes of the message in progress."""
        self.inflated = 0
        """Inflated bytes of every message so far: the scanner's work per loop turn is measured by it."""
        self.mask = b""
        """The masking key of the data frame in progress (a client's frames), kept by the scanner."""
        self.frame_length = 0
        """That frame's payload length."""
        self._ended = 0  # deflate streams that ended in that frame

    def start(self) -> None:
        """A compressed message begins."""
        self.size = self._ended = 0

    def frame(self, mask: bytes, length: int) -> None:
        """A data frame of the message begins: its masking key (b"" for an upstream's) and payload length."""
        self.mask, self.frame_length, self._ended = mask, length, 0

    def feed(self, data: bytes, *, last: bool) -> str | None:
        """Inflate the next part of the message's (unmasked) payload; ``last``: the message ends with it.

        Returns None while the message is within the limit, ``"too big"`` once it is over (nothing
        of ``data`` should then be forwarded), or what is wrong with data that is not deflate data.
        """
        try:
            if self._inflate(data):
                return "too big"
            if last:
                inflater = self._inflater
                if inflater is not None and self._inflate(_TAIL, inflater):
                    return "too big"
                if not self._keeps_context:
                    self._inflater = None  # a new window for the next message: its memory freed meanwhile
        except zlib.error as error:
            return f"invalid compressed data ({error})"
        return None

    def _inflate(self, data: bytes, inflater: zlib._Decompress | None = None) -> bool:
        """Count what ``data`` inflates to; True once the message is over the limit (inflating no more)."""
        while data:
            if inflater is None:
                inflater = self._inflater = self._inflater or zlib.decompressobj(wbits=self._bits)
            produced = len(inflater.decompress(data, self._limit - self.size + 1))
            self.size += produced
            self.inflated += produced
            if self.size > self._limit:
                return True
            if not inflater.eof:
                break
            self._ended += 1
            if self._ended > 1:
                raise zlib.error("a frame ends more than one deflate stream")
            # A final block ended this deflate stream (RFC 7692 §7.2.3.3): what follows it is
            # inflated as a new one, so nothing passes uncounted (a sender's own trailing empty
            # block inflates to nothing; anything else that is not deflate data is an error).
            data, inflater = inflater.unused_data, None
            self._inflater = None
        return False


def sender_window(extensions: str | None, *, sender_is_client: bool) -> tuple[bool, int]:
    """What the negotiated permessage-deflate lets one sender do: keep its window between messages
    (context takeover), and how large the window is (its ``*_max_window_bits``, 15 when not set)."""
    side = "client" if sender_is_client else "server"
    for extension in (extensions or "").split(","):
        name, *parameters = (part.strip().lower() for part in extension.split(";"))
        if name != "permessage-deflate":
            continue
        settings = dict(p.partition("=")[::2] for p in parameters)
        keeps = f"{side}_no_context_takeover" not in {key.strip() for key in settings}
        bits = next((v.strip().strip('"') for k, v in settings.items() if k.strip() == f"{side}_max_window_bits"), "")
        window = parse_digits(bits, 2)  # not int(): "²" raised, "٩" was 9
        return keeps, window if window is not None and 8 <= window <= 15 else 15
    return True, 15


__all__ = ["InflatedSize", "sender_window"]
