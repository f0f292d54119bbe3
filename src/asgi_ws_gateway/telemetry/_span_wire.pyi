"""The C extension ``_span_wire.c`` (optional, built at install when a compiler is there): see :mod:`.otlp_wire`."""

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, TraceFlags
from opentelemetry.trace.span import TraceState

from .lean_spans import LeanSpan
from .lean_tracer import LeanTracer

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

def encode_spans(
    spans: Sequence[ReadableSpan],
    default_status: Status,
    default_trace_state: TraceState,
    no_attributes: BoundedAttributes,
    /,
) -> tuple[Any, Any, list[bytes | LeanSpan]] | None:
    """A batch of spans all of exactly the bound type, with one resource and one scope (by identity), in a list or
    tuple: ``(resource, scope, parts)``, ``parts`` its ``ScopeSpans.spans`` fields in order, each run of those it
    writes (what :func:`encode_span` gives) as one ``bytes`` and each span :func:`encode_span` declines as itself,
    for the Python encoder. None for any other batch (empty, another type, several resources or scopes): no span
    of it was encoded."""

def bind_lifecycle(
    span_context: type[SpanContext],
    non_recording_span: type[NonRecordingSpan],
    link: type[Link],
    no_attributes: BoundedAttributes,
    default_status: Status,
    default_trace_state: TraceState,
    root_flags: TraceFlags,
    child_flags: tuple[TraceFlags, ...],
    context: type[Context],
    variable: ContextVar[Context] | None,
    span_key: str,
    random: ModuleType,
    end_own: Callable[[Span, Mapping[str, Any]], None],
    /,
) -> bool:
    """After :func:`bind`: what :func:`starter`, :func:`end_own` and :func:`queue_into` make and read spans with
    (True; False: the bound type has not :class:`LeanSpan`'s 15 slots, and those refuse). ``variable``: the
    runtime context's ``ContextVar`` (None: another runtime context, read in Python)."""

def starter(tracer: LeanTracer, /) -> Callable[[str, Context | None, SpanKind, dict[str, Any], Sequence[Link]], Span]:
    """``tracer.start_owned``: its usual case in C, the method itself for any other (read per call: a processor
    added later counts)."""

def end_own(span: Span, attributes: Mapping[str, Any], /) -> None:
    """:func:`.lean_spans.end_own`: its usual case in C, that function for any other."""

def queue_into(
    batch: Any, emit: Callable[[ReadableSpan], None], process: list[int], /
) -> Callable[[ReadableSpan], None]:
    """:func:`.lean_provider._queue_into`'s queue (``process``: its ``_PROCESS``), in C."""

class Ids(IdGenerator):
    """An id generator drawing from the extension's per-process xoshiro256** stream (seeded from ``os.urandom``,
    and again in a forked child); the C starter draws from it without a call."""

    def generate_span_id(self) -> int: ...
    def generate_trace_id(self) -> int: ...
    def is_trace_id_random(self) -> bool: ...

def hex_ids(context: SpanContext, /) -> tuple[str, str]:
    """A context's trace and span ids as hex text: ``(trace_id.to_bytes(16, "big").hex(),
    span_id.to_bytes(8, "big").hex())``, raising as those do."""

def traceparent(context: SpanContext, /) -> str | None:
    """The W3C ``traceparent`` of a context, or None when its ids are not ``int`` objects of 128 and 64 bits or its
    flags not an int of 0 to 255."""

def trace_names(headers: list[tuple[str, str]], masks: dict[str, int], /) -> int | None:
    """:func:`.propagation._filtered`'s answer for the names of ``headers`` as a bit mask (1: an untrusted client's
    request loses headers to a new ``traceparent``, 2: a trusted one's): the OR of ``masks[name]`` and 1 for a name
    starting ``uberctx-`` or ``ot-baggage-``; None for names it leaves to Python (not exact ASCII ``str`` without
    upper-case letters or control characters)."""
