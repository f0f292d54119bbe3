"""OpenTelemetry for every connection: spans, metrics and the access log.

Modules: ``names`` (every span, attribute and instrument name), ``providers`` (global providers or
OTLP exporters from ``OTEL_*``; ``provider_shutdown``), ``tracing`` (the handshake and its upstream
attempts; ``api_info``, ``server_addresses``), ``connection`` (the connection span and what is
recorded at close), ``metrics`` (``metric_totals``), ``access`` (the access log), ``events`` (opt-in
per-message events), ``propagation`` (W3C trace context), ``core`` (``Telemetry``, built once per
gateway); for the gateway's own providers only: ``lean_spans``, ``lean_tracer``, ``lean_provider``
(its spans), ``histograms`` (its duration histograms), ``otlp_wire``, ``otlp_attributes``,
``otlp_protobuf`` and ``otlp_export`` (its span encoding and exporters).

For policies: :func:`current_handshake` returns the handshake being decided, to ``identify()`` the
caller and wrap I/O in ``io_span()``; :func:`current_connection` returns the connection being
relayed, to count a message policy's ``policy_action()``.
"""

from typing import TYPE_CHECKING

from .._context import current_connection, current_handshake
from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .connection import ConnectionTrace
    from .core import Telemetry
    from .tracing import HandshakeTrace, TracedConnector

if not TYPE_CHECKING:  # imported when first read: run checks OTEL_* (.providers) without the spans' modules
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "ConnectionTrace": ".connection",
            "Telemetry": ".core",
            "HandshakeTrace": ".tracing",
            "TracedConnector": ".tracing",
        },
    )

__all__ = [
    "ConnectionTrace",
    "HandshakeTrace",
    "Telemetry",
    "TracedConnector",
    "current_connection",
    "current_handshake",
]
