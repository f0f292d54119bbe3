"""The frames the gateway writes itself (its close frames, keepalive pings, messages of its own):
on a spliced connection, the only bytes it makes rather than forwards."""

from __future__ import annotations

import os
import struct

_CLOSE = 0x8


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final frame; masked with a random key when ``mask`` (client to server)."""
    length = len(payload)
    b1 = 0x80 if mask else 0
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, b1 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, b1 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, b1 | 127, length)
    if not mask:
        return header + payload
    key = os.urandom(4)
    keystream = int.from_bytes((key * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ keystream).to_bytes(length, "big")
    return header + key + masked


def close_frame(code: int, reason: str, *, mask: bool) -> bytes:
    """A close frame with ``code`` and ``reason`` (the caller maps reserved codes and caps the reason)."""
    return encode_frame(_CLOSE, struct.pack("!H", code) + reason.encode(), mask=mask)


__all__ = ["close_frame", "encode_frame"]
