"""A WebSocket frame as websockets' debug lines show it (``> CLOSE 1011 (internal error) bye [5 bytes]``),
with the peer's text in it redacted as free text: a close reason, a message, a ping's payload.

websockets shows the start and the end of a long payload: a secret cut in two (``api_key=sk_li...
0123``, a JWT's signature) matches no pattern. So the payload is redacted whole first and only then
cut as websockets would; a payload too long to read whole for a debug line shows no text at all.
"""

from __future__ import annotations

import struct
from typing import Any

from websockets.frames import Close, Frame, Opcode

from .text import redact_free_text

_WHOLE = 65536
"""Bytes of a payload read whole for its line; a longer one is shown by its kind and size only."""
_NOT_SHOWN = "(not shown)"


def is_frame(value: object) -> bool:
    """Whether ``value`` is a frame websockets logs: its Sans-I/O ``Frame`` or its legacy one (a tuple)."""
    kind = type(value)
    return kind is Frame or (kind.__name__ == "Frame" and kind.__module__ == "websockets.legacy.framing")


def frame_text(value: Any) -> str:
    """``str(frame)`` as websockets writes it, the payload's text redacted before it is cut short."""
    frame: Frame = value if type(value) is Frame else value.new_frame
    shown = str(frame)
    kind, metadata = frame.opcode.name, shown[shown.rfind(" [") :]  # "[38 bytes]", "[text, 5 bytes, continued]"
    data = bytes(frame.data)
    if len(data) > _WHOLE:
        return f"{kind} {_NOT_SHOWN}{metadata}"
    if frame.opcode is Opcode.CLOSE:
        if len(data) < 2:
            return shown  # '' or one byte, as hex: no text
        (code,) = struct.unpack("!H", data[:2])
        reason = data[2:].decode(errors="replace")  # at most 123 bytes: shown whole
        return f"{kind} {Close(code, redact_free_text(reason))}{metadata}"
    text = data.decode(errors="replace")
    redacted = redact_free_text(text)
    if redacted == text:
        return shown
    cut = str(Frame(frame.opcode, redacted.encode(), fin=frame.fin))  # websockets cuts the redacted text
    return cut[: cut.rfind(" [")] + metadata


__all__ = ["frame_text", "is_frame"]
