"""A lean tracer provider for the gateway's own OTLP export: the SDK's semantics, less of its machinery.

Used only when the gateway builds its own provider from ``OTEL_*`` (:mod:`.providers`); a provider
the application passes or sets globally keeps the SDK's spans. :class:`LeanTracerProvider` *is* the
SDK's ``TracerProvider`` (resource, sampler from ``OTEL_TRACES_SAMPLER``/``_ARG``, ``SpanLimits``
from the ``OTEL_*_LIMIT`` variables, ids, span processors, ``OTEL_SDK_DISABLED``, flush and shutdown,
at exit too); only its tracers (:mod:`.lean_tracer`) and their spans (:mod:`.lean_spans`) differ.
They do per span what the SDK's ``Tracer`` and ``Span`` do, with the SDK's own parts where those
decide something: the sampler's ``should_sample`` (its
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
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes

from .lean_tracer import LeanTracer
from .otlp_wire import NATIVE_IDS, QUEUE_INTO

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

logger = logging.getLogger(__name__)


_Ends = tuple[Callable[[ReadableSpan], None], ...]


def _sampled_end(processor: SpanProcessor) -> Callable[[ReadableSpan], None]:
    """What ``processor.on_end`` does with a sampled span: the SDK's ``BatchSpanProcessor``, where its
    batching is a ``_batch_processor`` (recent SDKs), only checks the span is sampled and queues it
    there (:func:`_queue_into`); any other processor's ``on_end``."""
    if type(processor) is BatchSpanProcessor:
        batch = getattr(processor, "_batch_processor", None)
        emit = getattr(batch, "emit", None)
        if callable(emit):
            if all(hasattr(batch, name) for name in _BATCH_FIELDS):
                return _queue_into(batch, emit)
            return emit  # type: ignore[no-any-return]
    return processor.on_end


_BATCH_FIELDS = ("_queue", "_shutdown", "_pid", "_max_queue_size", "_max_export_batch_size", "_worker_awaken")
"""What the SDK's batch ``emit`` reads, and :func:`_queue_into` reads in its place."""
_PROCESS = [os.getpid()]
"""This process's id, again in a forked child (``emit`` asks the system for it, per span)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, os.getpid()))


def _queue_into(batch: Any, emit: Callable[[ReadableSpan], None]) -> Callable[[ReadableSpan], None]:
    """The SDK batch queue's ``emit(span)`` (``batch``: a ``BatchSpanProcessor``'s ``_batch_processor``) in
    the usual case, a span into a queue with room, with the same effect; ``emit`` itself otherwise (the
    processor shut down, a forked child not yet reset, a full queue: its warnings and dropped counts). In C
    when the extension is loaded (:data:`.otlp_wire.QUEUE_INTO`), :func:`_queue_in_python` the reference."""
    if QUEUE_INTO is not None:
        return QUEUE_INTO(batch, emit, _PROCESS)
    return _queue_in_python(batch, emit)


def _queue_in_python(batch: Any, emit: Callable[[ReadableSpan], None]) -> Callable[[ReadableSpan], None]:
    """:func:`_queue_into` in Python."""
    most, full = batch._max_queue_size, batch._max_export_batch_size  # set once, in its __init__

    def queue(span: ReadableSpan) -> None:
        spans = batch._queue
        if batch._shutdown or batch._pid != _PROCESS[0] or len(spans) >= most:
            emit(span)
            return
        spans.appendleft(span)
        if len(spans) >= full and not batch._worker_awaken.is_set():
            batch._worker_awaken.set()  # a full batch: the worker exports it now

    return queue


def own_id_generator() -> IdGenerator | None:
    """The id generator of the gateway's own provider: the C extension's when it is loaded
    (:data:`.otlp_wire.NATIVE_IDS`), else None (the SDK's default, ``RandomIdGenerator``)."""
    return None if NATIVE_IDS is None else NATIVE_IDS()


class LeanTracerProvider(TracerProvider):
    """The SDK's ``TracerProvider`` (resource, sampler, limits, ids, processors, flush and shutdown at
    exit), whose tracers make :class:`LeanSpan` objects (see the module docstring).

    Args:
        resource: the resource of every span.
        sampler: default: the SDK's, from ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``.
        span_limits: default: the SDK's ``SpanLimits()``, from the ``OTEL_*_LIMIT`` variables.
        id_generator: default: the SDK's ``RandomIdGenerator`` (the gateway's own provider passes the C
            extension's, :func:`own_id_generator`, when it is loaded).

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
        self.own_ids = NATIVE_IDS is not None and type(self.id_generator) is NATIVE_IDS
        """The ids are the C extension's :data:`~.otlp_wire.NATIVE_IDS`: drawn by its span starter without a call."""
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
                tracer.processors(*self._lean_processors)

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


__all__ = ["LeanTracerProvider", "own_id_generator"]
