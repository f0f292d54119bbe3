"""The framing rules a WebSocket endpoint checks on each frame header (RFC 6455 §5.2-5.5), and what
a fragment counts toward the size limit: one home for the splice's scanner and the frame relay's
assembler, so that both refuse the same frames."""

from __future__ import annotations

from .fragment_floor import FRAGMENT_FLOOR

_OPCODES_DATA = frozenset({0x0, 0x1, 0x2})  # continuation, text, binary
_OPCODES_CONTROL = frozenset({0x8, 0x9, 0xA})  # close, ping, pong
RSV1 = 0x40


def extension_names(extensions: str | None) -> set[str]:
    """The names of the negotiated ``extensions``."""
    return {item.split(";")[0].strip().lower() for item in extensions.split(",")} if extensions else set()


def allowed_rsv(names: set[str]) -> int:
    """Reserved bits a frame may set under the negotiated extensions ``names`` (RFC 6455 §5.2, RFC 7692 §6):
    RSV1 under permessage-deflate, none otherwise (the splice negotiates no other extension)."""
    return RSV1 if "permessage-deflate" in names else 0


def frame_rule_broken(
    b0: int, b1: int, opcode: int, length: int, masked: int, rsv: int, in_message: bool
) -> str | None:
    """The framing rule a frame header breaks, if any (RFC 6455 §5.2-5.5); the splice's and the frame relay's.

    Args:
        b0, b1: the header's first two bytes; ``opcode`` and ``length`` as read from it.
        masked: 0x80 if frames must be masked (a client's), 0 if they must not (an upstream's).
        rsv: the reserved bits the negotiated extensions allow (:func:`allowed_rsv`).
        in_message: a fragmented message is open (its continuation frames are expected).
    """
    if b1 & 0x80 != masked:
        return "incorrect masking"
    if opcode in _OPCODES_CONTROL:
        if not b0 & 0x80:
            return "fragmented control frame"
        if length > 125:
            return "control frame too long"
        rsv_allowed = 0 if rsv == RSV1 else rsv  # permessage-deflate: data frames only
    elif opcode in _OPCODES_DATA:
        if opcode == 0 and not in_message:
            return "unexpected continuation frame"
        if opcode != 0 and in_message:
            return "expected a continuation frame"
        rsv_allowed = rsv if opcode != 0 or rsv != RSV1 else 0
    else:
        return "invalid opcode"
    if b0 & 0x70 & ~rsv_allowed:
        return "reserved bits must be 0"
    if length >> 63:
        return "invalid frame length"
    return None


def header_start_broken(b0: int, b1: int, masked: int, rsv: int, in_message: bool) -> str | None:
    """The rule a header breaks, told from its first two bytes while its extended length is still to come:
    :func:`frame_rule_broken`'s verdict on the whole header where the length cannot change it, else None.

    A control frame's length is judged before its reserved bits: with the length unknown, a control
    frame's reserved bits wait for it (the whole header may say "control frame too long")."""
    length = b1 & 0x7F
    if length <= 125:
        return frame_rule_broken(b0, b1, b0 & 0x0F, length, masked, rsv, in_message)
    error = frame_rule_broken(b0, b1, b0 & 0x0F, 0, masked, rsv, in_message)
    if error == "reserved bits must be 0" and b0 & 0x0F in _OPCODES_CONTROL:
        return None
    return error


__all__ = ["FRAGMENT_FLOOR", "RSV1", "allowed_rsv", "extension_names", "frame_rule_broken", "header_start_broken"]
