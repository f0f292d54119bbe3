"""The OpenTelemetry current context, read, set and reset without the API's layers of calls.

``opentelemetry.context`` keeps the current ``Context`` in one ``ContextVar`` of its runtime context
(``ContextVarsRuntimeContext``, unless ``OTEL_PYTHON_CONTEXT`` names another). Its ``get_current``,
``attach`` and ``detach`` reach that variable through two Python calls each, and
``trace.set_span_in_context`` copies the context through two more: about 190 interpreter steps per
traced connection (docs/telemetry.md, "What it costs"). When the runtime context is the API's own,
these functions use its variable directly, with the same effect (the same ``Context`` objects, the
same tokens); with any other runtime context they are the API's functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar, Token

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation import _SPAN_KEY

logger = logging.getLogger(otel_context.__name__)  # where the API logs a failed detach


def _variable() -> ContextVar[Context] | None:
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable
    return None


VARIABLE = _variable()
"""The runtime context's ``ContextVar`` (None: another runtime context), read by the C span starter and histogram
recorder too."""

get_current: Callable[[], Context] = VARIABLE.get if VARIABLE is not None else otel_context.get_current
"""``opentelemetry.context.get_current``."""

attach: Callable[[Context], Token[Context]] = VARIABLE.set if VARIABLE is not None else otel_context.attach
"""``opentelemetry.context.attach``."""


def detach(token: object) -> None:
    """``opentelemetry.context.detach(token)``: a token of another context is logged, as the API logs it."""
    if VARIABLE is None:
        otel_context.detach(token)  # type: ignore[arg-type]
        return
    try:
        VARIABLE.reset(token)  # type: ignore[arg-type]
    except Exception:  # the API's words and level
        logger.exception("Failed to detach context")


def with_span(span: Span, context: Context | None = None) -> Context:
    """``trace.set_span_in_context(span, context)``: a new ``Context``, ``context`` (default: the current
    one) with ``span`` as its current span."""
    if VARIABLE is None:
        return set_span_in_context(span, context)
    values = (context if context is not None else VARIABLE.get()).copy()
    values[_SPAN_KEY] = span
    return Context(values)


_EMPTY = Context()


def alone(span: Span) -> Context:
    """``trace.set_span_in_context(span, Context())``: a context with ``span`` and nothing else (the
    connection span's, a root that carries no baggage)."""
    if VARIABLE is None:
        return set_span_in_context(span, _EMPTY)
    return Context({_SPAN_KEY: span})


__all__ = ["alone", "attach", "detach", "get_current", "with_span"]
