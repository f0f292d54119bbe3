"""Starting the gateway's own spans (:class:`LeanTracer`): parent, sampling decision, ids and links
as the SDK's ``Tracer`` makes them, with fewer calls.

The sampler's ``should_sample`` decides (its attributes and trace state), except under the default
sampler with the SDK's ``RandomIdGenerator`` or the C extension's ``Ids`` (the gateway's usual provider),
which the tracer follows without calling the sampler: the parent's decision, else sampled. Each span is
handed to the processors' ``on_start`` by the tracer itself (see :mod:`.lean_provider`).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator, Sequence
from time import time_ns
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, DEFAULT_ON, Decision, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.util._decorator import _agnosticcontextmanager
from opentelemetry.util.types import AnyValue, Attributes

from .current import get_current
from .lean_spans import DEFAULT_STATUS, SAMPLED_FLAG, LeanSpan, valid_link

if TYPE_CHECKING:
    from .lean_provider import LeanTracerProvider


_FLAGS = {
    (sampled, random_id): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
    )
    for sampled in (False, True)
    for random_id in (False, True)
}
ROOT_FLAGS = _FLAGS[True, True]
CHILD_FLAGS = tuple(
    _FLAGS[bool(flags & TraceFlags.SAMPLED), bool(flags & TraceFlags.RANDOM_TRACE_ID)] for flags in range(256)
)
"""A child's flags under the default sampler, by its parent's: the parent's decision and random-id bit."""
_new = object.__new__
OnEnd = Callable[[ReadableSpan], None]


NO_ATTRIBUTES = BoundedAttributes(0, None, immutable=True)
"""What the SDK makes of a link's ``None`` attributes (empty, immutable, nothing dropped), shared."""


def _links(links: Sequence[Link], limits: SpanLimits) -> BoundedList[Link] | tuple[Link, ...]:
    valid = []
    for link in links:
        # The usual link (valid, without attributes), read without property calls: a SpanContext is
        # (trace id, span id, remote, flags, state, valid).
        if type(link) is Link and link._attributes is None and link._context[5]:
            link._attributes = NO_ATTRIBUTES
            valid.append(link)
            continue
        if link and valid_link(link.context, link.attributes):
            # The SDK does the same to the caller's Link: a BoundedAttributes, immutable.
            link._attributes = (
                NO_ATTRIBUTES
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
        # The SDK's RandomIdGenerator (random.getrandbits, drawn inline) or the extension's own (drawn in C, by
        # the C starter without a call): ids that need no other decision.
        self.parent_or_on_random = self.parent_or_on and (self.random_ids or provider.own_ids)
        self.max_links = self.limits.max_links
        self.processors(*provider._lean_processors)

    def processors(
        self, starts: tuple[SpanProcessor, ...], ends: tuple[OnEnd, ...], sampled_ends: tuple[OnEnd, ...]
    ) -> None:
        """The processors to call at a span's start, and at its end (a sampled span's, any other's), as the
        provider has them now; and what :meth:`start_owned` and :meth:`LeanSpan.end` decide from them."""
        self.starts, self.ends, self.sampled_ends = starts, ends, sampled_ends
        self.sampled_end: OnEnd | None = sampled_ends[0] if len(sampled_ends) == 1 else None
        """The one processor's end of a sampled span (the usual batch processor), called without a loop."""
        fast = not starts and self.parent_or_on_random and self.max_length is None
        limit = self.max_attributes
        self.owned_room = (limit if limit is not None else sys.maxsize) if fast else -1
        """The most attributes an owned span starts with in :meth:`start_owned`'s one frame (-1: none does):
        one comparison for its conditions, which hold for the tracer's life (or until a processor is added)."""

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
        ``bool``), unchecked; with another sampler than the default, checked as by ``start_span``.

        Three spans a connection start here: under the default sampler and ids, no processor's
        ``on_start`` to call and no attribute to cut or drop, the span is made in this one frame (what
        ``_start``, ``LeanSpan._init`` and ``_begin`` do for it, without their three calls)."""
        if len(attributes) > self.owned_room:  # another sampler, a start processor, a limit that cuts
            return self._start(name, context, kind, attributes, links, None, True, True, True)
        current = (context if context is not None else get_current()).get(_SPAN_KEY)
        parent: SpanContext | None = None
        if current is not None:
            if type(current) is not LeanSpan:  # another tracer's span as the parent: its checks
                return self._start(name, context, kind, attributes, links, None, True, True, True)
            parent = current._context
        if parent is not None and parent[5]:  # as in _start: the parent's decision, its trace
            flags = CHILD_FLAGS[parent[3] & 0xFF]
            span_context = tuple.__new__(SpanContext, (parent[0], self._span_id(), False, flags, parent[4], True))
            if not flags & SAMPLED_FLAG:
                return trace.NonRecordingSpan(span_context)
        else:
            parent, span_context = None, self._root_context()
        span = _new(LeanSpan)
        # LeanSpan._init's fields (its slots), for an owned dict.
        span._name = name
        span._context = span_context
        span._kind = kind
        span._instrumentation_scope = self.scope
        span._parent = parent
        span._resource = self.resource
        span._start_time = time_ns()
        span._tracer = self
        span._end_time = None
        span._status = DEFAULT_STATUS
        span._dropped = 0
        span._events = ()
        span._links = ()
        span._plain = True
        span._attributes = attributes
        if links:
            if (  # the usual link, as in _start
                len(links) == 1 and type(link := links[0]) is Link and link._attributes is None and link._context[5]
                and self.max_links != 0
            ):  # fmt: skip
                link._attributes = NO_ATTRIBUTES
                span._links = (link,)
            else:
                span._links = _links(links, self.limits)
        return span

    def _span_id(self) -> int:
        """A new span id: ``random.getrandbits`` as the SDK's ``RandomIdGenerator`` draws it (0, invalid, drawn
        again by the generator), else the provider's generator (the extension's never gives 0)."""
        if self.random_ids:
            return random.getrandbits(64) or self.id_generator.generate_span_id()
        return self.id_generator.generate_span_id()

    def _root_context(self) -> SpanContext:
        """A new trace's span context: its trace id, then its span id, drawn as :meth:`_span_id` draws."""
        ids = self.id_generator
        trace_id = (random.getrandbits(128) or ids.generate_trace_id()) if self.random_ids else ids.generate_trace_id()
        return tuple.__new__(SpanContext, (trace_id, self._span_id(), False, ROOT_FLAGS, DEFAULT_TRACE_STATE, True))

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
            flags = CHILD_FLAGS[parent[3] & 0xFF]  # the parent's decision and random-id bit
            span_context = tuple.__new__(SpanContext, (trace_id, self._span_id(), False, flags, trace_state, True))
            if not flags & SAMPLED_FLAG:
                return trace.NonRecordingSpan(span_context)
        else:
            parent, span_context = None, self._root_context()
        span = _new(LeanSpan)
        # An owned dict is the span's, empty or not (NO_ATTRIBUTES is shared, immutable: for what no span writes to).
        given = attributes if owned and attributes is not None else attributes or NO_ATTRIBUTES
        span._init(self, name, span_context, parent, kind, given, start_time, owned)
        if links:
            if (  # the usual link (one, valid, without attributes: the handshake's), read without property calls
                len(links) == 1 and type(link := links[0]) is Link and link._attributes is None and link._context[5]
                and self.max_links != 0
            ):  # fmt: skip
                link._attributes = NO_ATTRIBUTES  # what the SDK makes of None attributes
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
        span._init(self, name, span_context, parent, kind, attributes or NO_ATTRIBUTES, start_time)
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


__all__ = ["NO_ATTRIBUTES", "LeanTracer"]
