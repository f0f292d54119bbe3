"""W3C trace context across the gateway: read from the client's ASGI headers, written into the
upstream handshake request (with the globally configured propagators: ``OTEL_PROPAGATORS``,
``tracecontext,baggage`` by default)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from operator import itemgetter, methodcaller

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState

from .._types import Headers
from ..bounded import remember
from ..upstream.checks import MAX_UPSTREAM_LINE
from .hex_ids import traceparent
from .lean_spans import LeanSpan
from .otlp_wire import NATIVE
from .values import MAX_CHARS


class _AsgiHeaders(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for n, v in carrier if n == name]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [n.decode("latin-1") for n, _ in carrier]


ASGI_HEADERS = _AsgiHeaders()


def extract(headers: Headers, context: Context | None = None) -> Context:
    """The trace context (and baggage) the client sent, on top of ``context`` (default: current).

    The ``tracestate`` of a trace it continues is kept to :data:`~.values.MAX_CHARS` characters of whole
    members, those over 128 dropped first, as an untrusted client's link's (:func:`_client_state`): it is
    every span's of the trace (the handshake's, each attempt's) and goes upstream, and the SDK reads up to
    8,192 characters (a connection's spans 19,675 bytes under ``run``, 3,351 with the state cut)."""
    found = propagate.extract(headers, context, getter=ASGI_HEADERS)
    remote = trace.get_current_span(found).get_span_context()
    state = remote.trace_state
    if not remote.is_remote or state is DEFAULT_TRACE_STATE or not state:
        return found
    header = state.to_header()
    if len(header) <= MAX_CHARS:
        return found
    fitted = TraceState.from_header([_fitted(header, MAX_CHARS, long_first=True)])  # the SDK's members: valid
    bounded = trace.SpanContext(remote.trace_id, remote.span_id, True, remote.trace_flags, fitted)
    return trace.set_span_in_context(trace.NonRecordingSpan(bounded), found)


_TRACE_CONTEXT = TraceContextTextMapPropagator()


class _ParentOnly(Getter[Headers]):
    """A client's ``traceparent`` alone, for the SDK's parser (its ``tracestate``: :func:`_client_state`),
    and none past the parser's 512 characters, for which it logged a WARNING per handshake."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = ASGI_HEADERS.get(carrier, key) if key == "traceparent" else None
        return found if found and len(found[0]) <= _TRACEPARENT_LONGEST else None

    def keys(self, carrier: Headers) -> list[str]:
        return ASGI_HEADERS.keys(carrier)


_PARENT_ONLY = _ParentOnly()
_TRACEPARENT_LONGEST = 512
_STATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-\*\/]{0,255}|[a-z0-9][_0-9a-z\-\*\/]{0,240}@[a-z][_0-9a-z\-\*\/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
"""A ``tracestate`` member (W3C Trace Context, the SDK's own pattern): what ``TraceState`` takes without a word."""
_STATE_MEMBERS = 32
"""W3C's most members in a ``tracestate``."""


def client_trace(headers: Headers) -> trace.SpanContext:
    """The trace an untrusted client names in its ``traceparent`` (for a link), read alone: not its
    ``baggage``, which the SDK's parser logged entry by entry — a client's 800 bytes wrote 181
    WARNING lines a handshake, its text (a token among it) in clear, through the global propagators
    that :func:`extract` uses for a trusted client.

    Its ``tracestate`` is read here, not by the SDK's parser, which logged a WARNING per handshake for a
    member out of W3C's format (with its text), for more than 32 members or more than 8,192 characters:
    :func:`_client_state`."""
    found = trace.get_current_span(_TRACE_CONTEXT.extract(headers, Context(), getter=_PARENT_ONLY)).get_span_context()
    if not found.is_valid:
        return found
    state = ASGI_HEADERS.get(headers, "tracestate")
    if not state:
        return found
    return trace.SpanContext(found.trace_id, found.span_id, True, found.trace_flags, _client_state(state))


def _client_state(lines: list[str]) -> TraceState:
    """A client's ``tracestate`` lines as a ``TraceState``, without a log line: its members in W3C's format,
    the first of each key and the first 32 (the others dropped; the SDK dropped the whole state), kept to
    :data:`~.values.MAX_CHARS` characters of whole members, those over 128 characters dropped first
    (:func:`_fitted`), as the client's other values are cut: the SDK's parser kept up to 8,192 characters
    (17 members of 460 in two header lines), held on every queued handshake span's link (2,048 spans: 18 MB
    while the collector is down)."""
    members: dict[str, str] = {}
    for member in ",".join(lines).split(","):
        match = _STATE_MEMBER.fullmatch(member.strip(" \t"))
        if match is not None and match[1] not in members:
            members[match[1]] = match[0]
            if len(members) == _STATE_MEMBERS:
                break
    header = ",".join(members.values())
    if len(header) > MAX_CHARS:
        kept = _fitted(header, MAX_CHARS, long_first=True).split(",")
        members = {key: member for key, member in members.items() if member in kept}
    return TraceState([(key, member[len(key) + 1 :]) for key, member in members.items()])


_TEXTMAP_READABLE = isinstance(getattr(propagate, "_HTTP_TEXT_FORMAT", None), TextMapPropagator)
"""The API keeps the global propagator in ``propagate._HTTP_TEXT_FORMAT`` (what ``get_global_textmap`` returns)."""
_DEFAULT = (TraceContextTextMapPropagator, W3CBaggagePropagator)
_seen: list[object] = [None, False]  # the global propagator last looked at, and whether it is the default


def _is_default(textmap: TextMapPropagator) -> bool:
    """``textmap`` is the default ``tracecontext,baggage`` composite (what ``OTEL_PROPAGATORS`` unset gives)."""
    if textmap is not _seen[0]:
        inner = getattr(textmap, "_propagators", None)  # CompositePropagator's list; absent: not the default
        default = isinstance(inner, list) and tuple(type(p) for p in inner) == _DEFAULT
        _seen[:] = [textmap, default]
    return bool(_seen[1])


def inject(
    headers: list[tuple[str, str]], context: Context, span: trace.Span | None = None, *, trusted: bool = False
) -> None:
    """Write ``context`` (with ``span`` as its current span, when given) into upstream request headers,
    replacing the client's headers of the same names.

    A client's ``tracestate`` goes too when a ``traceparent`` is written: it describes the client's
    trace, which the new ``traceparent`` continues only when the client is trusted (and then the
    state is in ``context`` and written again). So does the client's ``baggage``, which is in
    ``context`` (and written again) only when the client is trusted; and unless it is (``trusted``), every
    other trace format's headers (B3, Jaeger, Datadog, ...): an upstream reading them would follow the
    client's ids and sampling decision, or take its ``user.id=admin`` baggage as the gateway's word.
    With the default propagators and no baggage, the headers are written here, as the W3C propagator
    writes them; otherwise by the global propagators.
    """
    # The global propagator read where the API keeps it (get_global_textmap() only returns it: a call fewer).
    textmap = propagate._HTTP_TEXT_FORMAT if _TEXTMAP_READABLE else propagate.get_global_textmap()
    default = _seen[1] if textmap is _seen[0] else _is_default(textmap)
    if default and not (context.get(_BAGGAGE_KEY) if _BAGGAGE_KEY is not None else baggage.get_all(context)):
        # As the W3C propagator writes them, straight into the headers (no carrier dict to fill and copy).
        if type(span) is LeanSpan:  # the attempt's span: its SpanContext read without the method call
            found = span._context
        else:
            found = span.get_span_context() if span is not None else trace.get_current_span(context).get_span_context()
        if found == trace.INVALID_SPAN_CONTEXT:
            return
        parent = traceparent(found)  # one C call with the extension
        state = found[4]  # a SpanContext is (trace id, span id, remote, flags, state, valid): no property calls
        if parent is None:  # an invalid context's ids or flags out of range: as the W3C propagator
            parent = f"00-{found[0]:032x}-{found[1]:016x}-{found[3]:02x}"
        header = ""
        if state is not DEFAULT_TRACE_STATE and state:  # TraceState's len() is a Python call
            header = state.to_header()
            if len(header) > _STATE_ROOM:  # a trusted client's, joined from its lines
                header = _fitted(header, _STATE_ROOM, long_first=True)
        # What to drop decided by the header names alone: one C call with the extension (the usual names), else
        # remembered by the names (a handshake's names repeat), inline.
        mask = _trace_names(headers, _DROPPED_MASKS) if _trace_names is not None else None
        if mask is None:
            names = tuple(map(itemgetter(0), headers))  # in C
            filtered = _names_filtered.get(names) or _filtered(names)
            mask = filtered[0] | filtered[1] << 1
        if mask & (2 if trusted else 1):  # rare: a client that sends trace headers of its own
            _drop(headers, _DROPPED_TRUSTED if trusted else _DROPPED_UNTRUSTED, not trusted)
        headers.append(("traceparent", parent))
        if header:
            headers.append(("tracestate", header))
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context if span is None else trace.set_span_in_context(span, context))
    written = frozenset(name.lower() for name in carrier)
    if "traceparent" in written:
        written |= {"tracestate"}
    for name, value in list(carrier.items()):  # each line within an upstream's (the client's state joined)
        if len(name) + len(value) > _LINE_ROOM:
            fitted = _fitted(value, _LINE_ROOM - len(name), long_first=name.lower() == "tracestate")
            if fitted:
                carrier[name] = fitted
            else:
                del carrier[name]
    if not carrier:
        return
    _drop(headers, written | (_CLIENT_CONTEXT if trusted else _UNTRUSTED_CONTEXT), not trusted)
    headers.extend(carrier.items())


_LINE_ROOM = MAX_UPSTREAM_LINE - 4
"""A trace header's name and value together, at most: its line (``: `` and CRLF) within what an upstream
reads. A trusted client's 32 ``tracestate`` members, sent in two lines, were written as one line of
15.8 KB, and the upstream's 431 was its refusal."""
_STATE_ROOM = _LINE_ROOM - len("tracestate")
_LONG_MEMBER = 128


def _fitted(value: str, room: int, *, long_first: bool) -> str:
    """A list header's ``value`` (``tracestate``, ``baggage``) within ``room`` characters: whole members
    dropped from the end, never one cut; ``long_first`` (``tracestate``): those over 128 characters
    first (W3C Trace Context, "tracestate Limits")."""
    members = value.split(",")
    if long_first:
        members = [member for member in members if len(member.strip(" \t")) <= _LONG_MEMBER]
    while members and sum(map(len, members)) + len(members) - 1 > room:
        members.pop()
    return ",".join(members)


def _drop(headers: list[tuple[str, str]], dropped: frozenset[str], untrusted: bool) -> None:
    """Leave out of ``headers`` those named in ``dropped`` (any case) and, for an ``untrusted`` client,
    those :data:`_UNTRUSTED_PREFIXED` names (its baggage in other formats)."""
    names = set(map(str.lower, map(itemgetter(0), headers)))  # in C
    prefixed = untrusted and _any_untrusted_prefixed(names)
    if prefixed or not dropped.isdisjoint(names):
        headers[:] = [
            header
            for header in headers
            if (name := header[0].lower()) not in dropped and not (prefixed and _UNTRUSTED_PREFIXED(name))
        ]  # the same tuples


def _filtered(names: tuple[str, ...]) -> tuple[bool, bool]:
    """Whether a request with these header names loses some to a ``traceparent`` written by the default
    propagators: (for an untrusted client, for a trusted one), indexed by ``trusted``.

    Remembered by the names as sent (a handshake's names repeat from one to the next; their lower-casing,
    set and searches were most of ``inject``'s instructions): at most :data:`_NAMES_REMEMBERED` lists of at
    most :data:`_NAMES_LONGEST` characters in all, forgotten together when full (clients choose them).
    A true answer sends the request through :func:`_drop`, which reads the names again; a false one keeps
    them all, so it is never remembered for names it does not hold for."""
    found = _names_filtered.get(names)
    if found is None:
        lowered = set(map(str.lower, names))
        found = (
            _any_untrusted_prefixed(lowered) or not _DROPPED_UNTRUSTED.isdisjoint(lowered),
            not _DROPPED_TRUSTED.isdisjoint(lowered),
        )
        if sum(map(len, names)) <= _NAMES_LONGEST:
            remember(_names_filtered, names, found, _NAMES_REMEMBERED)
    return found


_names_filtered: dict[tuple[str, ...], tuple[bool, bool]] = {}
""":func:`_filtered`'s answers by header names: names only, never a value (``upstream.checks`` remembers names too)."""
_NAMES_REMEMBERED = 256
_NAMES_LONGEST = 1024


_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
"""What the default propagators write without baggage (a client's ``tracestate`` goes with its ``traceparent``)."""
_CLIENT_CONTEXT = frozenset({"baggage"})
"""Written again from ``context`` when the client is trusted (its baggage was extracted there)."""
_UNTRUSTED_CONTEXT = _CLIENT_CONTEXT | frozenset(
    {
        "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",  # Zipkin
        "uber-trace-id", "jaeger-debug-id", "jaeger-baggage", "ot-tracer-traceid", "ot-tracer-spanid",
        "ot-tracer-sampled", "sentry-trace", "grpc-trace-bin", "x-cloud-trace-context", "x-amzn-trace-id",
        "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority", "x-datadog-origin",
        "x-datadog-tags", "elastic-apm-traceparent", "newrelic", "correlation-context",
    }
)  # fmt: skip
"""A client's trace context in the formats of other tracers, and its baggage: dropped unless it is trusted."""


_DROPPED_TRUSTED = _TRACE_HEADERS | _CLIENT_CONTEXT
_DROPPED_UNTRUSTED = _TRACE_HEADERS | _UNTRUSTED_CONTEXT
"""What a ``traceparent`` written by the default propagators replaces, for a trusted client and another."""
_BAGGAGE_KEY: str | None = getattr(baggage, "_BAGGAGE_KEY", None)
"""Where the API keeps a context's baggage (``baggage.get_all`` reads it through three calls); None: unknown."""

_DROPPED_MASKS = {
    name: (name in _DROPPED_UNTRUSTED) | (name in _DROPPED_TRUSTED) << 1
    for name in _DROPPED_UNTRUSTED | _DROPPED_TRUSTED
}
"""Each dropped name's :func:`_filtered` bits: 1 for an untrusted client's request, 2 for a trusted one's."""
_trace_names = NATIVE.trace_names if NATIVE is not None else None
"""The extension's :func:`_filtered` for the usual header names (exact ASCII ``str``, no upper case or control
characters) as those bits, or None for any other names (None itself without the extension): no names' tuple and
lookup, which were half of ``inject``'s ~9 k instructions a handshake (docs/telemetry.md, "What it costs")."""

_UNTRUSTED_PREFIXED = methodcaller("startswith", ("uberctx-", "ot-baggage-"))
"""Jaeger's and OpenTracing's baggage, one header per item: dropped unless the client is trusted."""


def _any_untrusted_prefixed(names: Iterable[str]) -> bool:
    """Some name starts as :data:`_UNTRUSTED_PREFIXED` reads (or contains a line break and one: the
    headers are then filtered name by name). Two searches of the joined names: a third of the
    instructions of ``startswith`` called per name (~10 k a handshake)."""
    joined = "\n" + "\n".join(names)
    return "\nuberctx-" in joined or "\not-baggage-" in joined


__all__ = ["ASGI_HEADERS", "client_trace", "extract", "inject"]
