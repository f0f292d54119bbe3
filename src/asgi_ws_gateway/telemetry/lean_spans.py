"""The gateway's own spans (:class:`LeanSpan`): the SDK span's semantics, less of its machinery.

What a span does once started (attributes, events, links, status, exceptions, end) is what the SDK's
``Span`` does, with the SDK's own parts where those decide something: the count and length limits
(oldest attribute dropped first, dropped counts), the SDK's attribute cleaning for any value that is
not a plain ``str``/``int``/``float``/``bool``, its ``Event``, ``BoundedList`` and link rules, its
status rules, ``record_exception`` and ``__exit__``. Ended, a span is a ``ReadableSpan`` (a
subclass) for the processors. Left out: the SDK span's lock per attribute write (spans are written
on the event loop), its ``BoundedAttributes`` and the ``ReadableSpan`` copy at end. Started by
:mod:`.lean_tracer`; the provider that makes those tracers, and what the whole saves, is
:mod:`.lean_provider`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, MutableMapping
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import AnyValue, Attributes

if TYPE_CHECKING:
    from .lean_tracer import LeanTracer

logger = logging.getLogger(__name__)


_PLAIN = frozenset({str, int, float, bool})
_STR = frozenset({str})
DEFAULT_STATUS = Status(StatusCode.UNSET)
"""Every span's status until one is set, shared: the encoder knows it by identity."""
SAMPLED_FLAG = int(TraceFlags.SAMPLED)
"""The sampled bit of a span context's flags, as an ``int``."""


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span: the OpenTelemetry ``Span`` API, and a ``ReadableSpan`` once ended."""

    # The fields every span has, as slots: the C encoder (_span_wire.bind) reads a slot at its offset, where
    # an attribute lookup cost it ~190 instructions a field. Written per span (_init, LeanTracer.start_owned).
    __slots__ = ("_attributes", "_context", "_dropped", "_end_time", "_events", "_instrumentation_scope", "_kind",
                 "_links", "_name", "_parent", "_plain", "_resource", "_start_time", "_status", "_tracer")  # fmt: skip
    # ReadableSpan's fields that start the same in every span and are seldom read: class defaults, not
    # per-span writes (they go to the instance's __dict__ when written: the base classes have one).
    # Python 3.11 never specializes an instance attribute whose name is also a class attribute, so each
    # read took the generic lookup, through the class's MRO when the type cache missed.
    _context: SpanContext  # always set (ReadableSpan's may be None)
    _instrumentation_info = None
    _status: Status
    _end_time: int | None
    _dropped: int
    # Empty tuples until the first event or link (most spans have none): ReadableSpan reads both.
    _events: BoundedList[Event] | tuple[()]
    _links: BoundedList[Link] | tuple[Link, ...]
    _record_exception = True  # what start_span defaults to: written per span only when not
    _set_status_on_exception = True
    _plain: bool
    """Every attribute value is a ``str`` or an ``int`` (``bool`` excepted), as :meth:`LeanTracer.start_owned`
    and :meth:`set_plain` were promised: the encoder reads that instead of checking each value."""

    def _init(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, AnyValue],
        start_time: int | None,
        owned: bool = False,
    ) -> None:
        """What ``__init__`` would do (the tracer makes spans with ``object.__new__``: one call fewer);
        ``owned``: ``attributes`` is a dict the span may keep, of plain attributes (:meth:`LeanTracer.start_owned`)."""
        # ReadableSpan's fields, set here rather than through its __init__ (no Resource built, no copy).
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_scope = tracer.scope
        self._parent = parent
        self._resource = tracer.resource
        self._start_time = start_time if start_time is not None else time_ns()
        self._tracer = tracer  # whose limits (max_attributes, max_length) the span keeps to
        limit, max_length = tracer.max_attributes, tracer.max_length
        # The fields every span starts with (its slots; LeanTracer.start_owned writes them too).
        self._end_time = None
        self._status = DEFAULT_STATUS
        self._dropped = 0
        self._events = ()
        self._links = ()
        self._plain = False
        # A dict of its own only: an empty one came as the tracer's shared, immutable NO_ATTRIBUTES, which a
        # span kept failed every attribute set on it later (a TypeError) with a start processor or a limit.
        if owned and type(attributes) is dict and max_length is None and (limit is None or len(attributes) <= limit):
            self._attributes: dict[str, AnyValue] = attributes  # start_owned's
            self._plain = True
        elif (
            max_length is None  # the common case, as in _set, checked in C: nothing to clean or drop
            and (limit is None or len(attributes) <= limit)
            and _PLAIN.issuperset(map(type, attributes.values()))
            and _STR.issuperset(map(type, attributes))
            and "" not in attributes
        ):
            self._attributes = dict(attributes)
        else:
            self._attributes = {}
            self._set(attributes)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'

    # -- attributes, as the SDK's BoundedAttributes keeps them ----------------------------------------

    def _set(self, attributes: Mapping[str, AnyValue]) -> None:
        current, limit = self._attributes, self._tracer.max_attributes
        self._plain = False
        # The common case, checked in C: plain values under non-empty string keys, nothing to drop.
        if (
            self._tracer.max_length is None
            and (limit is None or len(current) + len(attributes) <= limit)
            and _PLAIN.issuperset(map(type, attributes.values()))
            and _STR.issuperset(map(type, attributes))
            and "" not in attributes
        ):
            if current and not current.keys().isdisjoint(attributes):
                for key in attributes:
                    current.pop(key, None)  # a rewritten key moves to the end, as in the SDK
            current.update(attributes)
            return
        if limit == 0:
            self._dropped += len(attributes)
            return
        for key in attributes:
            if type(key) is not str or not key:  # what the SDK's mapping cleaning keeps, renames, drops
                cleaned = _clean_attribute_value(attributes, self._tracer.max_length)
                self._dropped += len(attributes) - len(cleaned)
                attributes = cleaned
                break
        for key, value in attributes.items():
            self._put(key, value)

    def _put(self, key: str, value: AnyValue) -> None:
        self._plain = False
        if type(value) not in _PLAIN or (self._tracer.max_length is not None and type(value) is str):
            value = _clean_attribute_value(value, self._tracer.max_length)  # truncates, makes sequences tuples
        attributes = self._attributes
        if key in attributes:
            del attributes[key]  # a rewritten key moves to the end, as in the SDK
        elif self._tracer.max_attributes is not None and len(attributes) >= self._tracer.max_attributes:
            logger.warning(
                "Attributes dict is full. Dropping the oldest key-value pair from attributes to make space for the new"
                " key-value pair."
            )
            del attributes[next(iter(attributes))]
            self._dropped += 1
        attributes[key] = value

    def set_plain(self, attributes: Mapping[str, AnyValue]) -> None:
        """``set_attributes`` for the gateway's own attributes, unchecked: the caller promises non-empty
        ``str`` keys and ``str`` or ``int`` values (not ``bool``), as :meth:`LeanTracer.start_owned`."""
        current, limit = self._attributes, self._tracer.max_attributes
        if (
            self._end_time is not None or self._tracer.max_length is not None
            or (limit is not None and len(current) + len(attributes) > limit)
        ):  # fmt: skip
            self.set_attributes(attributes)  # the SDK's rules: a warning, truncation, the oldest dropped
            return
        if current and not current.keys().isdisjoint(attributes):
            for key in attributes:
                current.pop(key, None)  # a rewritten key moves to the end, as in the SDK
        current.update(attributes)

    def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        self._set(attributes)

    def set_attribute(self, key: str, value: AnyValue) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        if self._tracer.max_attributes == 0 or not key or not isinstance(key, str):
            if self._tracer.max_attributes != 0:
                logger.warning("invalid key `%s`. must be non-empty string. Dropping key from attributes.", key)
            self._dropped += 1
            return
        self._put(key, value)

    @property
    def attributes(self) -> Attributes:
        return MappingProxyType(self._attributes)

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    # -- the rest of the Span API ---------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def _ended(self, method: str) -> bool:
        if self._end_time is None:
            return False
        logger.warning("Tried calling %s on an ended span.", method)
        return True

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        limits = self._tracer.limits
        bounded = BoundedAttributes(
            limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )
        if not self._ended("_add_event"):
            if not isinstance(self._events, BoundedList):
                self._events = BoundedList(limits.max_events)
            self._events.append(Event(name, bounded, timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if not valid_link(context, attributes):
            return
        limits = self._tracer.limits
        bounded = BoundedAttributes(
            limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length, immutable=True
        )
        if not self._ended("_add_link"):
            if not isinstance(self._links, BoundedList):  # the links given at start, kept first
                self._links = BoundedList.from_seq(limits.max_links, self._links)
            self._links.append(Link(context, bounded))

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended("set_status"):
            return
        if self._status.status_code is StatusCode.OK:  # OK is final
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`", description
                )
            self._status = status
        elif isinstance(status, StatusCode) and status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        recorded: MutableMapping[str, AnyValue] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        tracer = self._tracer  # its processors now, as the SDK's span ends into those added since it started
        if self._context[3] & SAMPLED_FLAG:
            if tracer.sampled_end is not None:  # the usual single batch processor: no loop
                tracer.sampled_end(self)
                return
            ends = tracer.sampled_ends
        else:
            ends = tracer.ends
        for on_end in ends:
            on_end(self)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()


def valid_link(context: SpanContext, attributes: Attributes) -> bool:
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


def end_own(span: trace.Span, attributes: Mapping[str, AnyValue]) -> None:
    """The gateway's own last attributes (non-empty ``str`` keys, ``str``/``int`` values) onto ``span``, then
    ``span.end()``: how the gateway ends its own three spans.

    Unchecked on a lean span (as :meth:`LeanSpan.set_plain`), and both in this one frame when nothing is
    to be checked (not ended, no length limit, room under the count limit): they were four calls a span.
    Any other span gets ``set_attributes`` and ``end``."""
    if type(span) is not LeanSpan:
        span.set_attributes(attributes)
        span.end()
        return
    current, tracer = span._attributes, span._tracer
    # Not ended, and room as start_owned's (no length limit, the count limit): else the SDK's rules (a
    # warning, truncation, the oldest dropped), as set_plain and end apply them.
    if span._end_time is not None or len(current) + len(attributes) > tracer.owned_room:
        span.set_plain(attributes)
        span.end()
        return
    if attributes:
        size = len(current)
        current.update(attributes)
        if len(current) != size + len(attributes):  # a key rewritten (rare): found after, no keys view per span
            for key in attributes:
                current[key] = current.pop(key)  # each moves to the end, in this order, as in the SDK
    span._end_time = time_ns()  # as LeanSpan.end, inline
    if span._context[3] & SAMPLED_FLAG and tracer.sampled_end is not None:
        tracer.sampled_end(span)
        return
    for on_end in tracer.sampled_ends if span._context[3] & SAMPLED_FLAG else tracer.ends:
        on_end(span)


__all__ = ["DEFAULT_STATUS", "SAMPLED_FLAG", "LeanSpan", "end_own", "valid_link"]
