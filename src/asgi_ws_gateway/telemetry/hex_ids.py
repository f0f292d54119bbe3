"""A span context's ids as hex text: the access line's and the connection span's ids, an upstream's ``traceparent``.

Three connections' worth of ids are written so per traced connection; one C call each when the extension is
loaded (:data:`.otlp_wire.NATIVE`), these functions, their reference, otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.trace import SpanContext

from .otlp_wire import NATIVE


def _hex_ids(context: SpanContext) -> tuple[str, str]:
    # trace.format_trace_id and format_span_id for a valid context: hex() of the ids' bytes, cheaper than 032x.
    return context[0].to_bytes(16, "big").hex(), context[1].to_bytes(8, "big").hex()


def _traceparent(context: SpanContext) -> str | None:
    trace_id, span_id, _, flags, _, _ = context  # a SpanContext is this tuple (no property calls)
    if type(trace_id) is not int or type(span_id) is not int or not isinstance(flags, int):
        return None
    try:
        return f"00-{trace_id.to_bytes(16, 'big').hex()}-{span_id.to_bytes(8, 'big').hex()}-{_HEX_BYTE[flags]}"
    except (OverflowError, KeyError):  # not ids of 128 and 64 bits or flags of a byte
        return None


_HEX_BYTE = {value: f"{value:02x}" for value in range(256)}
"""A ``traceparent``'s flags field by their value."""

hex_ids: Callable[[SpanContext], tuple[str, str]] = _hex_ids if NATIVE is None else NATIVE.hex_ids
"""``(trace id, span id)`` of a valid context as 32 and 16 hex digits (``to_bytes(...).hex()``, raising as it does)."""
traceparent: Callable[[SpanContext], str | None] = _traceparent if NATIVE is None else NATIVE.traceparent
"""The W3C ``traceparent`` of a context (``00-<trace id>-<span id>-<flags>``), or None when its ids are not ``int``
objects of 128 and 64 bits or its flags not an int of 0 to 255 (the caller then formats them as the W3C propagator
does)."""


__all__ = ["hex_ids", "traceparent"]
