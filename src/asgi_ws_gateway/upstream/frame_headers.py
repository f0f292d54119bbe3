"""Each frame's header checked as it comes in, on both legs of the relay, by the splice's rules.

websockets' parser reads a frame's header, waits for the whole payload it announces, and only then
checks the reserved bits, a control frame's FIN and length, and whether a continuation was due. A peer
whose header breaks one of those rules and sends less than it announces was not failed until the
keepalive gave up on it (40 s by default; never without a keepalive): an upstream's 101 followed by
a body (``Content-Length: 5`` then ``hello``: a close frame without FIN announcing 101 bytes) held the
client on the relay, where the splice and the frame relay fail the same header at once (1002 to the
peer, 1011 ``upstream connection failed`` to the client). :class:`HeadersFirst` checks each header by
:func:`..frame_rules.frame_rule_broken` as soon as its two bytes are in, and fails the connection
with websockets' own words for the rule.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from typing import cast

from websockets.exceptions import ProtocolError
from websockets.protocol import SERVER, Protocol
from websockets.streams import StreamReader

from ..frame_rules import allowed_rsv, frame_rule_broken


class _HeaderCheckingReader(StreamReader):
    """websockets' stream reader, checking the header of each frame as the parser takes it.

    websockets' parser asks :meth:`at_eof` before each frame and reads the frame's two header bytes
    next: that read alone is checked (every other read returns websockets' own generator, unwrapped).
    The protocol is held weakly: the reader is the protocol's, and a cycle would keep a connection
    that is over until a full collection.
    """

    owner: weakref.ref[Protocol]
    _header_next = False

    def at_eof(self) -> Generator[None, None, bool]:
        self._header_next = True
        return super().at_eof()

    def read_exact(self, n: int) -> Generator[None, None, bytearray]:
        if not self._header_next:
            return super().read_exact(n)
        self._header_next = False
        return self._checked_header(n)

    def _checked_header(self, n: int) -> Generator[None, None, bytearray]:
        header = yield from StreamReader.read_exact(self, n)
        protocol = self.owner()
        if protocol is not None:
            problem = header_problem(protocol, header[0], header[1])
            if problem is not None:
                raise ProtocolError(problem)  # the parser fails the connection with 1002
        return header


def header_problem(protocol: Protocol, b0: int, b1: int) -> str | None:
    """The framing rule a frame header (its first two bytes) breaks on ``protocol``'s connection, if any."""
    rsv = allowed_rsv({extension.name for extension in protocol.extensions}) if protocol.extensions else 0
    masked = 0x80 if protocol.side is SERVER else 0
    # The 7-bit length: 126 and 127 (an extended length follows) are too long for a control frame, as they
    # should be; a 64-bit length's top bit is TopBitLength's, once its 8 bytes are in.
    return frame_rule_broken(b0, b1, b0 & 0x0F, b1 & 0x7F, masked, rsv, protocol.current_size is not None)


class HeadersFirst(Protocol):
    """A websockets ``Protocol`` (mix in before ``ServerProtocol``/``ClientProtocol``) that fails a frame
    whose header breaks a framing rule as soon as the header is in, not once its payload is: call
    :meth:`read_headers_first` once it is swapped in (before any frame is read)."""

    def read_headers_first(self) -> None:
        """Check each frame's header as it comes in, from the next frame on."""
        reader = cast(_HeaderCheckingReader, self.reader)
        reader.__class__ = _HeaderCheckingReader  # only methods differ: the instance keeps its buffer
        reader.owner = weakref.ref(self)


__all__ = ["HeadersFirst", "header_problem"]
