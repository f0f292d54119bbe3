"""Protobuf's wire format as OTLP uses it: varints, length-delimited fields, and the bodies of
``AnyValue`` and ``KeyValue`` (``opentelemetry/proto/common/v1/common.proto``), as the SDK's encoder
chooses their cases. Sans-I/O: the pieces the span encoder (:mod:`.otlp_wire`) and its attribute
cache (:mod:`.otlp_attributes`) are written with.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SMALL_VARINTS = [bytes([i]) for i in range(128)]
_DOUBLE = struct.Struct("<d").pack


def varint(value: int) -> bytes:
    """An unsigned varint (``value`` >= 0; int64 values arrive here as their two's complement)."""
    if value < 0x80:
        return SMALL_VARINTS[value]
    if value < 0x4000:  # a span's length, mostly
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + varint(len(payload)) + payload


def _any_value(value: object) -> bytes:
    """The body of an ``AnyValue``, as the SDK chooses its case (bool before int, str before sequence).

    Raises:
        ValueError: an int outside int64, or a string that is not valid Unicode.
        TypeError: a value of another type.
    """
    if value is None:
        return b""  # AnyValue with no case set
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return delimited(b"\x0a", value.encode())  # UnicodeEncodeError (a ValueError) for lone surrogates
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{value} is outside int64")
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return delimited(b"\x3a", value)
    if isinstance(value, Sequence):
        return delimited(b"\x2a", b"".join([delimited(b"\x0a", _any_value(item)) for item in value]))
    if isinstance(value, Mapping):
        pairs = [delimited(b"\x0a", key_value(str(key), item)) for key, item in value.items()]
        return delimited(b"\x32", b"".join(pairs))
    raise TypeError(f"invalid type {type(value).__name__} of value {value!r}")


def key_value(key: str, value: object) -> bytes:
    """The body of a ``KeyValue``.

    Raises:
        ValueError, TypeError: as :func:`_any_value`, or ``key`` is not a string.
    """
    if not isinstance(key, str):
        raise TypeError(f"invalid key type {type(key).__name__}")
    return (delimited(b"\x0a", key.encode()) if key else b"") + delimited(b"\x12", _any_value(value))


__all__ = ["INT64_MAX", "INT64_MIN", "SMALL_VARINTS", "delimited", "key_value", "varint"]
