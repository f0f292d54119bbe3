"""A frame's header checked while websockets waits for its payload, on both legs of the relay, by the splice's rules.

websockets' parser reads a frame's header, waits for the whole payload it announces, and only then
checks the reserved bits, a control frame's FIN and length, and whether a continuation was due. A peer
whose header breaks one of those rules and sends less than it announces was not failed until the
keepalive gave up on it (40 s by default; never without a keepalive): an upstream's 101 followed by
a body (``Content-Length: 5`` then ``hello``: a close frame without FIN announcing 101 bytes) held the
client on the relay, where the splice and the frame relay fail the same header at once (1002 to the
peer, 1011 ``upstream connection failed`` to the client). Each leg calls :func:`fail_at_waiting_header`
after a read: the header of the frame the parser is left waiting in is checked by
:func:`..frame_rules.frame_rule_broken`, and a broken rule fails the connection with websockets' own
words for it. A frame that arrives whole is left to websockets' checks: nothing is added per frame, a
look per read (an override of ``receive_data`` cost 3-5 k instructions a read, the look a few hundred).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from websockets.exceptions import ProtocolError
from websockets.frames import CloseCode, Frame
from websockets.protocol import SERVER, Protocol

from ..frame_rules import allowed_rsv, frame_rule_broken, header_start_broken

_FRAME_PARSE = Frame.parse.__func__.__code__  # type: ignore[attr-defined]
"""The code of websockets' frame parser, a generator the protocol's parser delegates each frame to."""


def waiting_header(parser: Generator[Any, Any, Any]) -> tuple[int, int, int | None] | None:
    """The first two bytes of the frame ``parser`` (a websockets protocol's) waits inside, once they are in,
    and its payload's length once known (None while an extended length is still to come).

    Reads the suspended generators' chain (the protocol's parser, the frame's, the reader's): None
    between frames, while a header is still short, or where websockets names its locals otherwise
    (the check is then websockets' own, once the payload is in)."""
    generator: Any = parser
    while generator is not None:
        if generator.gi_code is _FRAME_PARSE:
            frame = generator.gi_frame
            found = frame.f_locals if frame is not None else {}
            head1, head2, length = found.get("head1"), found.get("head2"), found.get("length")
            if not (isinstance(head1, int) and isinstance(head2, int) and isinstance(length, int)):
                return None
            # An extended length equal to its marker (126, 127) cannot be told from the marker: taken as unknown.
            known = length if head2 & 0x7F <= 125 or length != head2 & 0x7F else None
            return head1, head2, known
        generator = generator.gi_yieldfrom
    return None


def header_problem(protocol: Protocol, b0: int, b1: int, length: int | None) -> str | None:
    """The framing rule a frame header (its first two bytes, its payload's ``length`` or None where still to
    come) breaks on ``protocol``'s connection, if any."""
    rsv = allowed_rsv({extension.name for extension in protocol.extensions}) if protocol.extensions else 0
    masked = 0x80 if protocol.side is SERVER else 0
    in_message = protocol.current_size is not None
    if length is None:
        return header_start_broken(b0, b1, masked, rsv, in_message)
    return frame_rule_broken(b0, b1, b0 & 0x0F, length, masked, rsv, in_message)


def rule_before_size(protocol: Protocol, exc: BaseException) -> str | None:
    """The framing rule broken by the header of the frame websockets' parser refused as too big (``exc``,
    raised in ``Frame.parse`` once the length was read, before the rules on the rest), if any.

    The splice and the frame relay judge a header's rules before its length: a control frame, a reserved
    bit or a data frame out of order that also announces more than the limit is a protocol error there
    (1002), and a 64-bit length with its top bit set is one ("invalid frame length")."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_frame.f_code is not _FRAME_PARSE:
        trace = trace.tb_next
    if trace is None:  # not the parser's (a fragment over the floor, a message inflated past the limit)
        return None
    found = trace.tb_frame.f_locals
    head1, head2, length = found.get("head1"), found.get("head2"), found.get("length")
    if not (isinstance(head1, int) and isinstance(head2, int) and isinstance(length, int)):
        return None
    return header_problem(protocol, head1, head2, length)


def fail_at_waiting_header(protocol: Protocol) -> bool:
    """Fail ``protocol``'s connection (1002, websockets' words for the rule, ``parser_exc`` set) if its
    parser waits for the payload of a frame whose header breaks a framing rule; True if it did.

    Called after each read (not per frame: a frame that arrives whole is websockets' to check). The
    parser is then replaced, as when it fails a frame itself: what follows is discarded."""
    generator: Any = protocol.parser
    while generator is not None and generator.gi_code is not _FRAME_PARSE:  # the parser between frames: at_eof
        generator = generator.gi_yieldfrom
    if generator is None:
        return False
    header = waiting_header(generator)
    problem = None if header is None else header_problem(protocol, *header)
    if problem is None:
        return False
    protocol.fail(CloseCode.PROTOCOL_ERROR, problem)
    protocol.parser_exc = ProtocolError(problem)
    return True


__all__ = ["fail_at_waiting_header", "header_problem", "rule_before_size", "waiting_header"]
