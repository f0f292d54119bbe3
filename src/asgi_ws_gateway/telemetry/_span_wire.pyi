"""The C extension ``_span_wire.c`` (optional, built at install when a compiler is there): see :mod:`.otlp_wire`."""

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import SpanKind, Status
from opentelemetry.trace.span import TraceState

from .lean_spans import LeanSpan

FORMAT: int

def bind(span_type: type[LeanSpan], kinds: tuple[SpanKind, ...], /) -> bool:
    """Read the fields of spans of exactly ``span_type`` from their ``__slots__`` (True; False: it has not those
    slots, and they are read by attribute, as for any other object), and know ``kinds`` (the ``SpanKind``
    members, by value) by identity."""

def encode_span(
    span: LeanSpan, default_status: Status, default_trace_state: TraceState, no_attributes: BoundedAttributes, /
) -> bytes | None:
    """``span`` as one ``ScopeSpans.spans`` field (what ``SpanEncoder._lean_span`` gives), or None for a span
    it leaves to the Python encoder (events, a trace state, dropped attributes, a link with attributes, an
    attribute value other than a ``str`` or an int64 ``int``, a string that is not valid Unicode)."""
