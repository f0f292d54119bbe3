"""A lean tracer for the gateway's own OTLP export: the SDK's semantics, less of its machinery.

Used only when the gateway builds its own provider from ``OTEL_*`` (:mod:`.providers`); a provider
the application passes or sets globally keeps the SDK's spans. :class:`LeanTracerProvider` *is* the
SDK's ``TracerProvider`` (resource, sampler from ``OTEL_TRACES_SAMPLER``/``_ARG``, ``SpanLimits``
from the ``OTEL_*_LIMIT`` variables, ids, span processors, ``OTEL_SDK_DISABLED``, flush and shutdown,
at exit too); only its tracers differ. They do per span what the SDK's ``Tracer`` and ``Span`` do,
with the SDK's own parts where those decide something: the sampler's ``should_sample`` (its
attributes and trace state), the count and length limits (oldest attribute dropped first, dropped
counts), the SDK's attribute cleaning for any value that is not a plain ``str``/``int``/``float``/
``bool``, its ``Event``, ``BoundedList`` and link rules, its status rules, ``record_exception`` and
``__exit__``. A span is handed to the processors' ``on_start`` and, ended, to their ``on_end`` as a
``ReadableSpan`` (a subclass; the ``BatchSpanProcessor`` then batches it under ``OTEL_BSP_*``): the
tracers call each processor added with ``add_span_processor`` themselves, in order, skip the SDK
``BatchSpanProcessor``'s ``on_start``, which does nothing, and hand it a sampled span straight into
its queue (what its ``on_end`` does after checking the span is sampled).

What it leaves out, measured as the cost of a traced handshake (docs/telemetry.md, "What it costs"):
a lock per span and per attribute write (spans are written on the event loop), a
``BoundedAttributes`` per span, the ``ReadableSpan`` copy at end, and the SDK's internal tracer
metrics (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``). ``ASGI_WS_GATEWAY_SPANS=sdk`` makes the
gateway's provider the SDK's own.
"""

from __future__ import annotations

import logging
import random
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, DEFAULT_ON, Decision, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util._decorator import _agnosticcontextmanager
from opentelemetry.util.types import AnyValue, Attributes

from .current import get_current

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

logger = logging.getLogger(__name__)

_PLAIN = frozenset({str, int, float, bool})
_STR = frozenset({str})
_FLAGS = {
    (sampled, random_id): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
    )
    for sampled in (False, True)
    for random_id in (False, True)
}
_ROOT_FLAGS = _FLAGS[True, True]
_CHILD_FLAGS = tuple(
    _FLAGS[bool(flags & TraceFlags.SAMPLED), bool(flags & TraceFlags.RANDOM_TRACE_ID)] for flags in range(256)
)
"""A child's flags under the default sampler, by its parent's: the parent's decision and random-id bit."""
_new = object.__new__
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = int(TraceFlags.SAMPLED)


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span: the OpenTelemetry ``Span`` API, and a ``ReadableSpan`` once ended."""

    # ReadableSpan's fields that start the same in every span: class defaults, not per-span writes.
    _context: SpanContext  # always set (ReadableSpan's may be None)
    _instrumentation_info = None
    _status: Status = _UNSET
    _end_time: int | None = None
    _dropped = 0
    # Empty tuples until the first event or link (most spans have none): ReadableSpan reads both.
    _events: BoundedList[Event] | tuple[()] = ()
    _links: BoundedList[Link] | tuple[Link, ...] = ()
    _record_exception = True  # what start_span defaults to: written per span only when not
    _set_status_on_exception = True
    _plain = False
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
        self._tracer = tracer
        self._max_attributes = limit = tracer.max_attributes
        self._max_length = tracer.max_length
        if owned and self._max_length is None and (limit is None or len(attributes) <= limit):
            self._attributes: dict[str, AnyValue] = attributes  # type: ignore[assignment]  # a dict: start_owned's
            self._plain = True
        elif (
            self._max_length is None  # the common case, as in _set, checked in C: nothing to clean or drop
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
        current, limit = self._attributes, self._max_attributes
        self._plain = False
        # The common case, checked in C: plain values under non-empty string keys, nothing to drop.
        if (
            self._max_length is None
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
                cleaned = _clean_attribute_value(attributes, self._max_length)
                self._dropped += len(attributes) - len(cleaned)
                attributes = cleaned
                break
        for key, value in attributes.items():
            self._put(key, value)

    def _put(self, key: str, value: AnyValue) -> None:
        self._plain = False
        if type(value) not in _PLAIN or (self._max_length is not None and type(value) is str):
            value = _clean_attribute_value(value, self._max_length)  # truncates, makes sequences tuples
        attributes = self._attributes
        if key in attributes:
            del attributes[key]  # a rewritten key moves to the end, as in the SDK
        elif self._max_attributes is not None and len(attributes) >= self._max_attributes:
            logger.warning("Attributes dict is full. Dropping the oldest key-value pair from attributes.")
            del attributes[next(iter(attributes))]
            self._dropped += 1
        attributes[key] = value

    def set_plain(self, attributes: Mapping[str, AnyValue]) -> None:
        """``set_attributes`` for the gateway's own attributes, unchecked: the caller promises non-empty
        ``str`` keys and ``str`` or ``int`` values (not ``bool``), as :meth:`LeanTracer.start_owned`."""
        current, limit = self._attributes, self._max_attributes
        if (
            self._end_time is not None or self._max_length is not None
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
        if self._max_attributes == 0 or not key or not isinstance(key, str):
            if self._max_attributes != 0:
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
        if not _valid_link(context, attributes):
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
        for on_end in tracer.sampled_ends if self._context[3] & _SAMPLED else tracer.ends:
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


def _valid_link(context: SpanContext, attributes: Attributes) -> bool:
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


_NO_ATTRIBUTES = BoundedAttributes(0, None, immutable=True)
"""What the SDK makes of a link's ``None`` attributes (empty, immutable, nothing dropped), shared."""


def _links(links: Sequence[Link], limits: SpanLimits) -> BoundedList[Link] | tuple[Link, ...]:
    valid = []
    for link in links:
        # The usual link (valid, without attributes), read without property calls: a SpanContext is
        # (trace id, span id, remote, flags, state, valid).
        if type(link) is Link and link._attributes is None and link._context[5]:
            link._attributes = _NO_ATTRIBUTES
            valid.append(link)
            continue
        if link and _valid_link(link.context, link.attributes):
            # The SDK does the same to the caller's Link: a BoundedAttributes, immutable.
            link._attributes = (
                _NO_ATTRIBUTES
                if not link.attributes
                else BoundedAttributes(
                    limits.max_link_attributes,
                    link.attributes,
                    max_value_len=limits.max_attribute_length,
                    immutable=True,
                )
            )
            valid.append(link)
    if limits.max_links is None or len(valid) <= limits.max_links:
        return tuple(valid)  # nothing dropped: ReadableSpan reads a tuple as it reads a BoundedList
    return BoundedList.from_seq(limits.max_links, valid)


_DEFAULT_DELEGATES = (ALWAYS_ON, ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF)


def _delegates(sampler: Sampler) -> tuple[object, ...]:
    """A ``ParentBased`` sampler's root and parent delegates (what ``DEFAULT_ON`` was built with)."""
    names = ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled", "_local_parent_sampled",
             "_local_parent_not_sampled")  # fmt: skip
    return tuple(getattr(sampler, name, None) for name in names)


def set_own_attributes(span: trace.Span, attributes: dict[str, AnyValue]) -> None:
    """The gateway's own attributes (non-empty ``str`` keys, ``str``/``int`` values) onto ``span``:
    unchecked on a lean span (:meth:`LeanSpan.set_plain`), through ``set_attributes`` on any other."""
    if type(span) is LeanSpan:
        span.set_plain(attributes)
    else:
        span.set_attributes(attributes)


class LeanTracer(trace.Tracer):
    """Starts :class:`LeanSpan` objects (or non-recording spans, as the sampler decides)."""

    def __init__(self, provider: LeanTracerProvider, scope: InstrumentationScope) -> None:
        self.scope = scope
        self.resource = provider.resource
        self.limits: SpanLimits = provider._span_limits
        self.max_attributes = self.limits.max_span_attributes
        self.max_length = self.limits.max_span_attribute_length
        self.sampler = provider.sampler
        # The default sampler (OTEL_TRACES_SAMPLER unset or parentbased_always_on), decided here as it
        # decides: a parent's decision, else sampled; its attributes and the parent's trace state.
        self.parent_or_on = self.sampler is DEFAULT_ON and _delegates(DEFAULT_ON) == _DEFAULT_DELEGATES
        self.id_generator = provider.id_generator
        self.random_ids = type(self.id_generator) is RandomIdGenerator
        self.parent_or_on_random = self.parent_or_on and self.random_ids
        self.max_links = self.limits.max_links
        self.starts, self.ends, self.sampled_ends = provider._lean_processors

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self._start(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception, False
        )

    def start_owned(
        self, name: str, context: Context | None, kind: SpanKind, attributes: dict[str, AnyValue], links: Sequence[Link]
    ) -> trace.Span:
        """``start_span`` for the gateway's own spans: ``attributes`` is a new dict the span may keep as its
        own (the caller keeps no reference), of non-empty ``str`` keys and ``str`` or ``int`` values (not
        ``bool``), unchecked; with another sampler than the default, checked as by ``start_span``."""
        return self._start(name, context, kind, attributes, links, None, True, True, True)

    def _start(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
        owned: bool,
    ) -> trace.Span:
        # trace.get_current_span(context).get_span_context(), without its two calls: no span is no parent
        # (a lean span, the usual one, checked first: isinstance of the Span ABC is slow).
        current = (context if context is not None else get_current()).get(_SPAN_KEY)
        parent: SpanContext | None = None
        if current is not None:
            if type(current) is LeanSpan:
                parent = current._context
            elif isinstance(current, trace.Span):
                parent = current.get_span_context()
                if parent is not None and not isinstance(parent, SpanContext):
                    raise TypeError("parent_span_context must be a SpanContext or None.")
        if not self.parent_or_on_random:
            return self._start_sampled(
                name, context, kind, attributes, links or (), start_time, record_exception, set_status_on_exception,
                parent,
            )  # fmt: skip
        # The default sampler and RandomIdGenerator (the gateway's usual provider): what both decide,
        # without their calls. A SpanContext is (trace id, span id, remote, flags, state, valid); random
        # ids are valid by construction (0, invalid, is drawn again, as the generator does).
        if parent is not None and parent[5]:
            trace_id, trace_state = parent[0], parent[4]
            flags = _CHILD_FLAGS[parent[3] & 0xFF]  # the parent's decision and random-id bit
            span_id = random.getrandbits(64) or self.id_generator.generate_span_id()
            span_context = tuple.__new__(SpanContext, (trace_id, span_id, False, flags, trace_state, True))
            if not flags & _SAMPLED:
                return trace.NonRecordingSpan(span_context)
        else:
            parent = None
            trace_id = random.getrandbits(128) or self.id_generator.generate_trace_id()
            span_id = random.getrandbits(64) or self.id_generator.generate_span_id()
            span_context = tuple.__new__(
                SpanContext, (trace_id, span_id, False, _ROOT_FLAGS, DEFAULT_TRACE_STATE, True)
            )
        span = _new(LeanSpan)
        span._init(self, name, span_context, parent, kind, attributes or _NO_ATTRIBUTES, start_time, owned)
        if links:
            if (  # the usual link (one, valid, without attributes: the handshake's), read without property calls
                len(links) == 1 and type(link := links[0]) is Link and link._attributes is None and link._context[5]
                and self.max_links != 0
            ):  # fmt: skip
                link._attributes = _NO_ATTRIBUTES  # what the SDK makes of None attributes
                span._links = (link,)
            else:
                span._links = _links(links, self.limits)
        return self._begin(span, context, record_exception, set_status_on_exception)

    def _begin(
        self, span: LeanSpan, context: Context | None, record_exception: bool, set_status_on_exception: bool
    ) -> LeanSpan:
        """The made ``span`` given its exception options (class defaults: written only when not) and
        handed to the processors' ``on_start``."""
        if not record_exception:
            span._record_exception = False
        if not set_status_on_exception:
            span._set_status_on_exception = False
        for processor in self.starts:
            processor.on_start(span, context)  # type: ignore[arg-type]  # a Span of the SDK's in all it reads
        return span

    def _start_sampled(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link],
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
        parent: SpanContext | None,
    ) -> trace.Span:
        """:meth:`start_span` with another sampler or id generator than the defaults."""
        ids = self.id_generator
        trace_state: TraceState | None = None
        flags: int
        if parent is not None and parent[5]:  # a SpanContext is (trace id, span id, remote, flags, state, valid)
            trace_id, flags = parent[0], parent[3]
            random_id = bool(flags & TraceFlags.RANDOM_TRACE_ID)
        else:
            parent, flags = None, TraceFlags.SAMPLED
            if self.random_ids:  # what RandomIdGenerator does, without its calls (0, invalid: drawn again)
                trace_id, random_id = random.getrandbits(128) or ids.generate_trace_id(), True
            else:
                trace_id, random_id = ids.generate_trace_id(), ids.is_trace_id_random()
        if self.parent_or_on:
            sampled = recorded = bool(flags & TraceFlags.SAMPLED)
            if parent is not None:
                trace_state = parent[4]
        else:
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            recorded = result.decision is not Decision.DROP
            trace_state, attributes = result.trace_state, result.attributes
        if self.random_ids:
            # What SpanContext() makes, without its checks: both ids drawn above (or the parent's), valid.
            span_id = random.getrandbits(64) or ids.generate_span_id()
            span_context = tuple.__new__(SpanContext, (
                trace_id, span_id, False, _FLAGS[sampled, random_id],
                trace_state if trace_state is not None else DEFAULT_TRACE_STATE, True,
            ))  # fmt: skip
        else:
            span_context = SpanContext(
                trace_id, ids.generate_span_id(), is_remote=False, trace_flags=_FLAGS[sampled, random_id],
                trace_state=trace_state,
            )  # fmt: skip
        if not recorded:
            return trace.NonRecordingSpan(span_context)
        span = _new(LeanSpan)
        span._init(self, name, span_context, parent, kind, attributes or _NO_ATTRIBUTES, start_time)
        if links:
            span._links = _links(links, self.limits)
        return self._begin(span, context, record_exception, set_status_on_exception)

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span, end_on_exit=end_on_exit, record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:  # fmt: skip
            yield current


_Ends = tuple[Callable[[ReadableSpan], None], ...]


def _sampled_end(processor: SpanProcessor) -> Callable[[ReadableSpan], None]:
    """What ``processor.on_end`` does with a sampled span: the SDK's ``BatchSpanProcessor``, where its
    batching is a ``_batch_processor`` (recent SDKs), only checks the span is sampled and queues it
    there, so that queue's ``emit`` is called straight; any other processor's ``on_end``."""
    if type(processor) is BatchSpanProcessor:
        emit = getattr(getattr(processor, "_batch_processor", None), "emit", None)
        if callable(emit):
            return emit  # type: ignore[no-any-return]
    return processor.on_end


class LeanTracerProvider(TracerProvider):
    """The SDK's ``TracerProvider`` (resource, sampler, limits, ids, processors, flush and shutdown at
    exit), whose tracers make :class:`LeanSpan` objects (see the module docstring).

    Args:
        resource: the resource of every span.
        sampler: default: the SDK's, from ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``.
        span_limits: default: the SDK's ``SpanLimits()``, from the ``OTEL_*_LIMIT`` variables.
        id_generator: default: the SDK's ``RandomIdGenerator``.

    Raises:
        ValueError: a span limit variable is not a non-negative integer (as the SDK's provider).
    """

    def __init__(
        self,
        *,
        resource: Resource,
        sampler: Sampler | None = None,
        span_limits: SpanLimits | None = None,
        id_generator: IdGenerator | None = None,
    ) -> None:
        super().__init__(sampler, resource, id_generator=id_generator, span_limits=span_limits)
        self._lean_tracers: dict[InstrumentationScope, LeanTracer] = {}
        self._lean_lock = threading.Lock()
        # The processors the tracers call at a span's start, and what they call at its end (a sampled
        # span's, then any other's), in the order added: what the SDK's SynchronousMultiSpanProcessor
        # calls, without its loop in between.
        self._lean_processors: tuple[tuple[SpanProcessor, ...], _Ends, _Ends] = ((), (), ())

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        """As the SDK's (every processor also on its active processor, for flush and shutdown)."""
        with self._lean_lock:
            super().add_span_processor(span_processor)
            starts, ends, sampled_ends = self._lean_processors
            if type(span_processor) is not BatchSpanProcessor:  # the SDK's batch processor does nothing at start
                starts = (*starts, span_processor)
            self._lean_processors = (
                starts, (*ends, span_processor.on_end), (*sampled_ends, _sampled_end(span_processor))
            )  # fmt: skip
            for tracer in list(self._lean_tracers.values()):
                tracer.starts, tracer.ends, tracer.sampled_ends = self._lean_processors

    def _update_resource(self, resource: Resource) -> None:
        """As the SDK's (in a forked child: the process attributes), for the lean tracers too."""
        super()._update_resource(resource)
        for tracer in list(self._lean_tracers.values()):
            tracer.resource = self.resource

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        if self._disabled:  # OTEL_SDK_DISABLED, as the SDK's provider
            return trace.NoOpTracer()
        if not instrumenting_module_name:
            logger.error("get_tracer called with missing module name.")
            instrumenting_module_name = ""
        scope = InstrumentationScope(
            instrumenting_module_name, instrumenting_library_version or "", schema_url, attributes
        )
        with self._lean_lock:
            tracer = self._lean_tracers.get(scope)
            if tracer is None:
                tracer = self._lean_tracers[scope] = LeanTracer(self, scope)
        return tracer


__all__ = ["LeanSpan", "LeanTracer", "LeanTracerProvider"]
