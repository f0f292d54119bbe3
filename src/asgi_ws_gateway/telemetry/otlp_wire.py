"""Finished spans straight to OTLP protobuf wire bytes (an ``ExportTraceServiceRequest``).

The SDK's OTLP encoder builds a protobuf message object per span, attribute, key and value, then
serializes them: 111 µs of a traced connection's 260 µs in-process, four times what this costs
(docs/telemetry.md, "What it costs").
This writes the same bytes directly: varints and length-delimited fields per the public schema
(``opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto``), with the SDK's
choices where the schema leaves one (``flags`` with the has-is-remote bit, an always-present
``status``, a value-less ``AnyValue`` for ``None``, spans grouped by resource then scope in order of
appearance). An attribute it cannot encode (an ``int`` beyond int64, a string that is not valid
Unicode, another type) is logged and left out, as the SDK does. The tests parse the bytes back with
``opentelemetry-proto`` and compare them with the SDK encoder's output.

Fields are written in field-number order. A batch's resources and scopes are encoded once each
(the last resource kept between batches), and the request joined once. Attribute key/value pairs that
repeat (the route, the API's name) are kept encoded between batches, in bounded caches: a lean span's
``str``/``int`` attributes as one block by key order and the values that repeat, the others pair by
pair (:mod:`.otlp_attributes`; the wire format's pieces: :mod:`.otlp_protobuf`).

A lean span of the usual shape (no events, trace state or dropped attributes, links without
attributes, ``str`` and int64 ``int`` attribute values) is written by the optional C extension
``_span_wire`` when it was built at install: the same bytes, in about a fifth of the instructions; the
usual batch (lean spans of one resource and one scope) in one call, its spans' fields as one bytes object,
the spans it declines handed back in their places. Any other span, or every span without the extension or
with ``ASGI_WS_GATEWAY_PURE_PYTHON=1``, is written by :meth:`SpanEncoder._lean_span`, the reference
(``tests/test_telemetry_span_wire.py`` holds the two to the same bytes, span by span and batch by batch).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from . import current
from .lean_spans import DEFAULT_STATUS, LeanSpan
from .lean_spans import end_own as python_end_own
from .lean_tracer import CHILD_FLAGS, NO_ATTRIBUTES, ROOT_FLAGS, LeanTracer
from .native import pure_python
from .otlp_attributes import CACHE_LIMIT, Blocks, Pairs, append_attributes
from .otlp_protobuf import SMALL_VARINTS, delimited, varint

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope


_KIND = {kind.value: b"\x30" + bytes([kind.value + 1]) for kind in SpanKind}
"""``Span.kind`` (field 6) by the API enum's value: OTLP numbers INTERNAL 1, unlike the API's enum (0)."""
_HAS_IS_REMOTE = 0x100  # SpanFlags: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_IDS = struct.Struct(">2s16s2sQ").pack
"""``Span.trace_id`` (field 1, given as its 16 bytes: one conversion, a fifth cheaper than two 64-bit
halves) and ``span_id`` (field 2), tags included."""
_IDS_PARENT = struct.Struct(">2s16s2sQ2sQ").pack
"""The same, and ``parent_span_id`` (field 4): a span without trace state."""
_TIMES = struct.Struct("<BQBQ").pack
"""``start_time_unix_nano`` (field 7) and ``end_time_unix_nano`` (field 8), tags included."""
_LOCAL_FLAGS = b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x85\x01" + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)
"""``Span.flags`` (field 16, fixed32), tag included: for a local or no parent, and for a remote one."""
_LOCAL_LINK_FLAGS = b"\x35" + _FIXED32(_HAS_IS_REMOTE)
_REMOTE_LINK_FLAGS = b"\x35" + _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)
"""``Span.Link.flags`` (field 7, fixed32), tag included."""
_LINK_HEAD = b"\x6a" + bytes([18 + 10 + 5])
"""``Span.links`` (field 13), tag and length, of a link with ids and flags only (18, 10 and 5 bytes)."""
_UNSET_STATUS = b"\x7a\x00"
"""``Span.status`` (field 15) for an UNSET status without a description: always present, empty."""
_UNSET_LOCAL_TAIL = _UNSET_STATUS + _LOCAL_FLAGS
_UNSET_REMOTE_TAIL = _UNSET_STATUS + _REMOTE_FLAGS
"""A span's last two fields, ``status`` unset and ``flags``: for a local or no parent, and a remote one."""
_STR_INT = frozenset({str, int})

_SPAN_WIRE_FORMAT = 7
"""The ``_span_wire`` contract this module calls (its ``FORMAT``): a module built from other sources is ignored."""
_KINDS_BY_VALUE = tuple(sorted(SpanKind, key=lambda kind: kind.value))

Encode = Callable[[LeanSpan, Status, Any, Any], "bytes | None"]
EncodeBatch = Callable[[Sequence[Any], Status, Any, Any], "tuple[Any, Any, list[bytes | LeanSpan]] | None"]
OwnedStarter = Callable[[LeanTracer], Callable[[str, Any, SpanKind, dict[str, Any], Sequence[Link]], Span]]
EndOwn = Callable[[Span, Mapping[str, Any]], None]
QueueInto = Callable[[Any, "Callable[[ReadableSpan], None]", list[int]], "Callable[[ReadableSpan], None]"]


class Native(NamedTuple):
    """The C extension's functions, bound; the lifecycle's None when it found not :class:`LeanSpan`'s slots."""

    encode_span: Encode
    encode_spans: EncodeBatch
    starter: OwnedStarter | None
    end_own: EndOwn | None
    queue_into: QueueInto | None
    ids: type[IdGenerator]
    hex_ids: Callable[[SpanContext], tuple[str, str]]
    traceparent: Callable[[SpanContext], str | None]
    trace_names: Callable[[list[tuple[str, str]], dict[str, int]], int | None]


def _native() -> Native | None:
    """The C extension, told :class:`LeanSpan`'s slots, the ``SpanKind`` members (it reads those without attribute
    lookups) and what a started span is made of; None when it is not built, not current, or turned off. The one
    place it is loaded: the encoder here and the span lifecycle (:data:`OWNED_STARTER`, :data:`END_OWN`,
    :data:`QUEUE_INTO`) are its functions."""
    if pure_python():  # checked at start-up
        return None
    try:
        from ._span_wire import (
            FORMAT,
            Ids,
            bind,
            bind_lifecycle,
            encode_span,
            encode_spans,
            end_own,
            hex_ids,
            queue_into,
            starter,
            trace_names,
            traceparent,
        )
    except ImportError:  # not built: no compiler at install, ASGI_WS_GATEWAY_NO_NATIVE=1, or another FORMAT's
        return None
    if FORMAT != _SPAN_WIRE_FORMAT:
        return None
    bind(LeanSpan, _KINDS_BY_VALUE)
    if not bind_lifecycle(
        SpanContext, NonRecordingSpan, Link, NO_ATTRIBUTES, DEFAULT_STATUS, DEFAULT_TRACE_STATE, ROOT_FLAGS,
        CHILD_FLAGS, Context, current.VARIABLE, _SPAN_KEY, random, python_end_own,
    ):  # fmt: skip
        return Native(encode_span, encode_spans, None, None, None, Ids, hex_ids, traceparent, trace_names)
    return Native(encode_span, encode_spans, starter, end_own, queue_into, Ids, hex_ids, traceparent, trace_names)


def _native_encoder() -> Encode | None:
    """The C extension's ``encode_span`` (see :func:`_native`)."""
    native = _native()
    return None if native is None else native.encode_span


NATIVE = _native()
NATIVE_ENCODER: Encode | None = None if NATIVE is None else NATIVE.encode_span
"""What :class:`SpanEncoder` writes the usual lean span with when not in Python (read at its creation)."""
NATIVE_BATCH_ENCODER: EncodeBatch | None = None if NATIVE is None else NATIVE.encode_spans
"""What it writes the usual batch with (lean spans of one resource and scope): the spans' fields in one call."""
OWNED_STARTER: OwnedStarter | None = None if NATIVE is None else NATIVE.starter
"""``OWNED_STARTER(tracer)`` is ``tracer.start_owned`` in C (None: without the extension, the method itself)."""
END_OWN: EndOwn = python_end_own if NATIVE is None or NATIVE.end_own is None else NATIVE.end_own
""":func:`.lean_spans.end_own`, in C when the extension is loaded."""
QUEUE_INTO: QueueInto | None = None if NATIVE is None else NATIVE.queue_into
"""``QUEUE_INTO(batch, emit, process)`` is :func:`.lean_provider._queue_into`'s queue in C (None: Python's)."""
NATIVE_IDS: type[IdGenerator] | None = None if NATIVE is None else NATIVE.ids
"""The C extension's id generator (None: without it): xoshiro256** per process, seeded from ``os.urandom`` and again
in a forked child; the C span starter draws from it without a call (docs/telemetry.md, "The span lifecycle in C")."""
if NATIVE_IDS is not None:
    IdGenerator.register(NATIVE_IDS)  # an IdGenerator in all but its base class (a C type)


def owned_starter(tracer: LeanTracer) -> Callable[[str, Any, SpanKind, dict[str, Any], Sequence[Link]], Span]:
    """``tracer.start_owned``, in C when the extension is loaded (it calls the method where that leaves its
    usual path)."""
    return tracer.start_owned if OWNED_STARTER is None else OWNED_STARTER(tracer)


def _times(start: int | None, end: int | None) -> bytes:
    """A span's start and end times (fields 7 and 8, fixed64), each only when set: one piece when both are."""
    if start and end:
        return _TIMES(0x39, start, 0x41, end)
    return (b"\x39" + _FIXED64(start) if start else b"") + (b"\x41" + _FIXED64(end) if end else b"")


def _status(status: Status) -> bytes:
    """A span's ``status`` field (message, then code; an unset one with no message is empty)."""
    code, message = status.status_code._value_, status.description
    if not code and not message:
        return _UNSET_STATUS
    return delimited(b"\x7a", (delimited(b"\x12", message.encode()) if message else b"")
                  + (b"\x18" + varint(code) if code else b""))  # fmt: skip


_UNSEEN = object()
"""Neither a resource nor a scope: what :meth:`SpanEncoder.encode` has seen before the first span."""

_Fields = tuple[Any, ...]
"""A span's fields, in the order ``SpanEncoder._span`` reads them."""


def _lean_fields(span: LeanSpan) -> _Fields:
    """A lean span's fields, as its ``ReadableSpan`` properties give them, without the 13 calls."""
    events, links = span._events, span._links
    # A tuple, or a BoundedList: an ABC, whose isinstance() is slow.
    dropped_events = 0 if isinstance(events, tuple) else events.dropped
    dropped_links = 0 if isinstance(links, tuple) else links.dropped
    return (
        span._context, span._parent, span._name, span._kind, span._start_time, span._end_time, span._attributes,
        span._dropped, events, dropped_events, links, dropped_links, span._status,
    )  # fmt: skip


def _readable_fields(span: ReadableSpan) -> _Fields:
    return (
        span.context, span.parent, span.name, span.kind, span.start_time, span.end_time, span.attributes,
        span.dropped_attributes, span.events, span.dropped_events, span.links, span.dropped_links, span.status,
    )  # fmt: skip


def _resource(resource: Resource) -> bytes:
    """``ResourceSpans.resource`` (always present, as the SDK writes it)."""
    fields: list[bytes] = []
    append_attributes(b"\x0a", resource.attributes, Pairs(), fields)
    return delimited(b"\x0a", b"".join(fields))


def _scope(scope: InstrumentationScope | None) -> bytes:
    """``ScopeSpans.scope`` (always present, empty without a scope)."""
    if scope is None:
        return b"\x0a\x00"
    body = [delimited(b"\x0a", scope.name.encode())] if scope.name else []
    if scope.version:
        body.append(delimited(b"\x12", scope.version.encode()))
    append_attributes(b"\x1a", scope.attributes, Pairs(), body)
    return delimited(b"\x0a", b"".join(body))


def _group(keys: list[Any], groups: list[list[Any]], by_id: dict[int, list[Any]], key: Any) -> list[Any]:
    """The group of ``key``: by identity first (one provider, one object), then by equality, as the SDK."""
    group = by_id.get(id(key))
    if group is None:
        for index, known in enumerate(keys):
            if known == key:
                group = groups[index]
                break
        else:
            keys.append(key)
            groups.append(group := [])
        by_id[id(key)] = group
    return group


class SpanEncoder:
    """Encodes batches of finished spans; keeps the encoding of pairs that repeat between batches.

    One per exporter (the batch span processor calls it from one thread at a time).
    """

    def __init__(self) -> None:
        self._span_pairs = Pairs()
        self._span_blocks = Blocks(b"\x4a", self._span_pairs)
        self._event_pairs = Pairs()
        self._link_pairs = Pairs()
        self._names: dict[str, bytes] = {}
        self._last_resource: Resource | None = None
        self._last_resource_field = b""
        # A lean span's name and kind fields, by kind (the API enum's value) then name.
        self._named: tuple[dict[str, bytes], ...] = tuple({} for _ in range(max(_KIND) + 1))
        self._native = NATIVE_ENCODER
        self._native_batch = NATIVE_BATCH_ENCODER

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` carrying ``spans`` (what the SDK's encoder gives)."""
        native_batch = self._native_batch
        # The usual batch (lean spans, one resource, one scope) in one C call: runs of its spans' fields as bytes,
        # and each span it declines, encoded here (None: another batch, grouped below).
        batch = native_batch(spans, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) if native_batch else None
        if batch is not None:
            resource, scope, parts = batch
            lean_span = self._lean_span
            fields = [part if isinstance(part, bytes) else lean_span(part) for part in parts]
            return self._request([resource], [[[scope or None], [fields]]])
        resources: list[Resource] = []
        resource_groups: list[list[Any]] = []  # [scopes, their groups, scope groups by id] per resource
        resources_by_id: dict[int, list[Any]] = {}  # ids are stable: ``spans`` keeps every object alive
        last_resource = last_scope = _UNSEEN  # the previous span's (its group is ``target``)
        target: list[bytes] = []  # a scope's group: its spans' fields
        lean_span, native = self._lean_span, self._native
        for span in spans:
            if type(span) is LeanSpan:  # its fields read directly: ReadableSpan's properties are Python calls
                resource, scope = span._resource, span._instrumentation_scope or None
                # In C when it can (None: a span it leaves to Python, which logs what it leaves out).
                native_encoded = native(span, DEFAULT_STATUS, DEFAULT_TRACE_STATE, NO_ATTRIBUTES) if native else None
                encoded = native_encoded if native_encoded is not None else lean_span(span)
            else:
                resource, scope = span.resource, span.instrumentation_scope or None
                encoded = self._span(_readable_fields(span))
            if resource is not last_resource or scope is not last_scope:  # most batches: one of each
                group = _group(resources, resource_groups, resources_by_id, resource)
                if not group:
                    group += ([], [], {})
                target = _group(group[0], group[1], group[2], scope)
                last_resource, last_scope = resource, scope
            target.append(encoded)
        return self._request(resources, resource_groups)

    def _request(self, resources: list[Resource], resource_groups: list[list[Any]]) -> bytes:
        """The request of the spans' fields grouped by resource, then scope (``[scopes, their fields' lists]`` per
        resource)."""
        # One join for the whole request: each message's length summed from its pieces, not copied into it,
        # and each span's length read once (a resource's length adds up its scopes' sizes, not its spans again).
        out: list[bytes] = []
        for resource, (scopes, scope_groups, *_) in zip(resources, resource_groups, strict=True):
            first = self._resource(resource)
            body = [first]
            body_size = len(first)
            for scope, encoded in zip(scopes, scope_groups, strict=True):
                head = _scope(scope)
                tail = delimited(b"\x1a", scope.schema_url.encode()) if scope is not None and scope.schema_url else b""
                size = len(head) + sum(map(len, encoded)) + len(tail)
                opening = b"\x12" + varint(size) + head  # ``ResourceSpans.scope_spans``
                body += (opening, *encoded, tail)
                body_size += len(opening) - len(head) + size
            if resource.schema_url:
                body.append(schema := delimited(b"\x1a", resource.schema_url.encode()))
                body_size += len(schema)
            out.append(b"\x0a" + varint(body_size))  # ``resource_spans``'s tag and length
            out += body
        return b"".join(out)

    def _resource(self, resource: Resource) -> bytes:
        """``ResourceSpans.resource``, kept for the last resource seen (the provider's, in every batch)."""
        if resource is not self._last_resource:
            self._last_resource_field = _resource(resource)
            self._last_resource = resource  # held: an identity that cannot be reused while kept
        return self._last_resource_field

    def _lean_span(self, span: LeanSpan) -> bytes:
        """:meth:`_span` of a lean span, its fields read as they are: the same bytes, written with fewer
        steps where a gateway span has nothing (no trace state, events, dropped counts or status)."""
        if type(span._events) is not tuple or span._dropped or type(span._links) is not tuple:  # rare
            return self._span(_lean_fields(span))
        trace_id, span_id, _, _, trace_state, _ = span._context
        parent = span._parent
        if trace_state is not DEFAULT_TRACE_STATE and trace_state:
            parts = [
                _IDS(b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id),
                delimited(b"\x1a", ",".join(f"{k}={v}" for k, v in trace_state.items()).encode()),
            ]
            if parent is not None:
                parts += (b"\x22\x08", parent[1].to_bytes(8, "big"))
        elif parent is not None:  # the ids and the parent's span id (field 4) in one piece
            parts = [_IDS_PARENT(b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id, b"\x22\x08",
                                 parent[1])]  # fmt: skip
        else:
            parts = [_IDS(b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id)]
        kind = span._kind._value_  # the enum's plain field: SpanKind hashes in Python
        named = self._named[kind].get(span._name)  # name (field 5) and kind (field 6) together
        if named is None:
            named = self._name_and_kind(span._name, kind)
        start, end = span._start_time, span._end_time
        parts += (named, _TIMES(0x39, start, 0x41, end) if start and end else _times(start, end))
        attributes = span._attributes
        if attributes:
            # A gateway span's (str and int values): its attributes as one block, mostly.
            if span._plain or _STR_INT.issuperset(map(type, attributes.values())):
                self._span_blocks.append(attributes, parts)
            else:
                append_attributes(b"\x4a", attributes, self._span_pairs, parts)
        for link in span._links:
            linked = link._context
            ids = _IDS(b"\x0a\x10", linked[0].to_bytes(16, "big"), b"\x12\x08", linked[1])
            if link._attributes is NO_ATTRIBUTES:  # the usual link (the handshake's): ids and flags
                parts += (_LINK_HEAD, ids, _REMOTE_LINK_FLAGS if linked[2] else _LOCAL_LINK_FLAGS)
                continue
            body = [ids]
            append_attributes(b"\x22", link.attributes, self._link_pairs, body)
            if link.dropped_attributes:
                body += (b"\x28", varint(link.dropped_attributes))
            body.append(_REMOTE_LINK_FLAGS if linked[2] else _LOCAL_LINK_FLAGS)
            parts.append(delimited(b"\x6a", b"".join(body)))
        remote = parent is not None and parent[2]
        status = span._status
        if status is DEFAULT_STATUS:  # status (field 15) and flags (field 16), in one piece
            parts.append(_UNSET_REMOTE_TAIL if remote else _UNSET_LOCAL_TAIL)
        else:
            parts += (_status(status), _REMOTE_FLAGS if remote else _LOCAL_FLAGS)
        encoded = b"".join(parts)
        size = len(encoded)
        if size < 0x4000:  # two bytes at most: a span of the gateway's
            return (
                b"\x12" + (SMALL_VARINTS[size] if size < 0x80 else bytes(((size & 0x7F) | 0x80, size >> 7)))
            ) + encoded
        return b"".join((b"\x12", varint(size), encoded))

    def _name_and_kind(self, name: str, kind: int) -> bytes:
        named = self._named[kind]
        if len(named) >= CACHE_LIMIT:
            named.clear()
        encoded = named[name] = (delimited(b"\x2a", name.encode()) if name else b"") + _KIND[kind]
        return encoded

    def _span(self, fields: _Fields) -> bytes:
        """One ``ScopeSpans.spans`` field (field 2: tag, length, the ``Span``)."""
        (context, parent, name, kind, start, end, attributes, dropped_attributes, events, dropped_events, links,
         dropped_links, status) = fields  # fmt: skip
        trace_id, span_id, _, _, trace_state, _ = context  # a SpanContext is this tuple (no property calls)
        parts = [_IDS(b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id)]
        if trace_state is not DEFAULT_TRACE_STATE and trace_state:  # TraceState's len() is a Python call
            parts.append(delimited(b"\x1a", ",".join(f"{k}={v}" for k, v in trace_state.items()).encode()))
        if parent is not None:
            parts += (b"\x22\x08", parent[1].to_bytes(8, "big"))
        if name:
            names = self._names
            encoded = names.get(name)
            if encoded is None:
                if len(names) >= CACHE_LIMIT:
                    names.clear()
                encoded = names[name] = delimited(b"\x2a", name.encode())
            parts.append(encoded)
        parts.append(_KIND[kind._value_])  # the enum's plain field: SpanKind hashes in Python
        parts.append(_times(start, end))
        append_attributes(b"\x4a", attributes, self._span_pairs, parts)
        if dropped_attributes:
            parts += (b"\x50", varint(dropped_attributes))
        for event in events:
            body = [b"\x09", _FIXED64(event.timestamp)] if event.timestamp else []
            if event.name:
                body.append(delimited(b"\x12", event.name.encode()))
            append_attributes(b"\x1a", event.attributes, self._event_pairs, body)
            if event.dropped_attributes:
                body += (b"\x20", varint(event.dropped_attributes))
            parts.append(delimited(b"\x5a", b"".join(body)))
        if dropped_events:
            parts += (b"\x60", varint(dropped_events))
        for link in links:
            linked = link.context
            body = [_IDS(b"\x0a\x10", linked[0].to_bytes(16, "big"), b"\x12\x08", linked[1])]
            append_attributes(b"\x22", link.attributes, self._link_pairs, body)
            if link.dropped_attributes:
                body += (b"\x28", varint(link.dropped_attributes))
            body.append(_REMOTE_LINK_FLAGS if linked[2] else _LOCAL_LINK_FLAGS)
            parts.append(delimited(b"\x6a", b"".join(body)))
        if dropped_links:
            parts += (b"\x70", varint(dropped_links))
        parts.append(_status(status))
        parts.append(_REMOTE_FLAGS if parent is not None and parent[2] else _LOCAL_FLAGS)
        encoded = b"".join(parts)
        return b"".join((b"\x12", varint(len(encoded)), encoded))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """``SpanEncoder().encode(spans)``: without the pair cache kept between calls."""
    return SpanEncoder().encode(spans)


__all__ = ["NATIVE_ENCODER", "SpanEncoder", "encode_spans"]
