"""What a compressed message inflates to, for passthrough's size limit (RFC 7692, permessage-deflate).

The splice forwards compressed frames as they are, so the bytes on the wire say little about what
the receiver gets: deflate inflates zeros about a thousandfold, and a 1 MiB limit read from frame
headers would pass a 1 GiB message. :class:`InflatedSize` inflates each compressed message as its
payload goes by, keeping only a count, and says when the message goes over the limit — before the
bytes that take it over are forwarded. Its inflation is bounded by the limit too: a bomb costs the
gateway no more than a message of the limit's size.
"""

from __future__ import annotations

import sys
import zlib

_TAIL = b"\x00\x00\xff\xff"
"""What the sender took off the end of each message's deflate data (RFC 7692 §7.2.2)."""


class InflatedSize:
    """Inflates the compressed messages of one direction, counting and discarding the output.

    Args:
        limit: bytes one inflated message may carry.
        keeps_context: the sender compresses each message with the previous ones' window (context
            takeover, the default): the inflater is kept between messages. Without it (the
            ``*_no_context_takeover`` parameter), it is dropped after each message and its memory
            (about 40 KiB) freed.
    """

    __slots__ = ("_inflater", "_keeps_context", "_limit", "size")

    def __init__(self, *, limit: int, keeps_context: bool) -> None:
        self._limit = min(limit, sys.maxsize - 1)  # zlib's max_length is a C ssize_t
        self._keeps_context = keeps_context
        self._inflater: zlib._Decompress | None = None
        self.size = 0
        """Inflated bytes of the message in progress."""

    def start(self) -> None:
        """A compressed message begins."""
        self.size = 0

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
                inflater = self._inflater = self._inflater or zlib.decompressobj(wbits=-15)
            self.size += len(inflater.decompress(data, self._limit - self.size + 1))
            if self.size > self._limit:
                return True
            if not inflater.eof:
                break
            # A final block ended this deflate stream (RFC 7692 §7.2.3.3): what follows it is
            # inflated as a new one, so nothing passes uncounted (a sender's own trailing empty
            # block inflates to nothing; anything else that is not deflate data is an error).
            data, inflater = inflater.unused_data, None
            self._inflater = None
        return False


def keeps_context(extensions: str | None, *, sender_is_client: bool) -> bool:
    """Whether the negotiated permessage-deflate lets the sender keep its window between messages."""
    parameter = "client_no_context_takeover" if sender_is_client else "server_no_context_takeover"
    for extension in (extensions or "").split(","):
        name, *parameters = (part.strip().lower() for part in extension.split(";"))
        if name == "permessage-deflate":
            return parameter not in (p.partition("=")[0].strip() for p in parameters)
    return True


__all__ = ["InflatedSize", "keeps_context"]
