"""W3C trace context across the gateway: read from the client's ASGI headers, written into the
upstream handshake request (with the globally configured propagators: ``OTEL_PROPAGATORS``,
``tracecontext,baggage`` by default)."""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from .._types import Headers


class _AsgiHeaders(Getter[Headers]):
    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for n, v in carrier if n == name]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [n.decode("latin-1") for n, _ in carrier]


ASGI_HEADERS = _AsgiHeaders()


def extract(headers: Headers, context: Context | None = None) -> Context:
    """The trace context (and baggage) the client sent, on top of ``context`` (default: current)."""
    return propagate.extract(headers, context, getter=ASGI_HEADERS)


def inject(headers: list[tuple[str, str]], context: Context) -> None:
    """Write ``context`` into upstream request headers, replacing the client's headers of the same names.

    A client's ``tracestate`` goes too when a ``traceparent`` is written: it describes the client's
    trace, which the new ``traceparent`` continues only when the client is trusted (and then the
    state is in ``context`` and written again).
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context)
    if carrier:
        written = {name.lower() for name in carrier}
        if "traceparent" in written:
            written.add("tracestate")
        headers[:] = [(name, value) for name, value in headers if name.lower() not in written]
        headers.extend(carrier.items())


__all__ = ["ASGI_HEADERS", "extract", "inject"]
