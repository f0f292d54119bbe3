"""Which OpenTelemetry providers the gateway uses, per signal (traces, metrics, logs).

In order: a provider passed to :class:`~asgi_ws_gateway.WebSocketGateway`; the global provider,
when the application set one; the gateway's own SDK provider exporting over OTLP, when the
configuration or the standard ``OTEL_*`` environment variables ask for it; else none (that signal
costs nothing). The OpenTelemetry SDK and exporters are imported only when the gateway builds its
own providers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry._logs._internal import ProxyLoggerProvider
from opentelemetry.metrics import get_meter_provider
from opentelemetry.metrics._internal import _ProxyMeterProvider

from ..config.settings import TelemetryConfig
from ..errors import ConfigError
from ..log_throttle import RepeatFilter, by_text_but_numbers
from ..redact import add_secret_values
from .environment import Signal, environment_problems, exporter_problems, header_values, pure_python_problems
from .names import DEFAULT_SERVICE_NAME
from .provider_shutdown import Providers

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import TracerProvider

    from .lean_provider import LeanTracerProvider
    from .metrics import HistogramFactory

logger = logging.getLogger(__name__)


PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "grpc"
"""As the Python SDK's own auto-configuration (``OTEL_EXPORTER_OTLP_PROTOCOL`` unset)."""


def resolve_providers(
    config: TelemetryConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Providers:
    """Pick each signal's provider (see the module docstring).

    Raises:
        ConfigError: an ``OTEL_*`` variable read for a signal without a provider holds a value the SDK
            would not take as written (``OTEL_EXPORTER_OTLP_*PROTOCOL`` other than grpc or http/protobuf,
            ``OTEL_TRACES_EXPORTER=console``, ``OTEL_SDK_DISABLED=1``, a number out of bounds...).
    """
    providers = Providers()
    if not config.enabled:
        return providers
    providers.tracer = tracer_provider or _global_tracer_provider()
    providers.meter = meter_provider or _global_meter_provider()
    if config.export_logs:
        providers.logger = logger_provider or _global_logger_provider()
    wanted: list[Signal] = []
    if providers.tracer is None:
        wanted.append("traces")
    if providers.meter is None:
        wanted.append("metrics")
    if config.export_logs and providers.logger is None:
        wanted.append("logs")
    problems = exporter_problems(wanted, environ) if wanted else []
    if problems:  # before they decide which signals are exported
        raise ConfigError(problems, "environment")
    own = [signal for signal in wanted if _export_requested(config, signal, environ)]
    if providers.tracer is not None or providers.logger is not None or own:
        throttle_attribute_warnings()
    if not own:
        return providers
    problems = _problems(own, environ)
    if problems:
        raise ConfigError(problems, "environment")
    add_secret_values(header_values(environ))  # the exporters' lines may quote them (a collector's answer)
    resource = _resource()
    before = set(threading.enumerate())  # the SDK's processors and readers start their threads when made
    for signal in own:
        protocol = _protocol(signal, environ)
        if signal == "traces":
            span_exporter = _span_exporter(protocol, environ)
            providers.tracer = tracer = _own_tracer_provider(span_exporter, resource, environ)
            providers.owned.append(tracer)
            providers.exporters.append(span_exporter)
        elif signal == "metrics":
            metric_exporter = _metric_exporter(protocol)
            meter, providers.histograms = _own_meter_provider(metric_exporter, resource, environ)
            providers.meter = meter
            providers.owned.append(meter)
            providers.exporters.append(metric_exporter)
        else:
            log_exporter = _log_exporter(protocol)
            providers.logger = log = _own_logger_provider(log_exporter, resource)
            providers.owned.append(log)
            providers.exporters.append(log_exporter)
        if protocol != "grpc":  # gRPC's channel bounds what it receives itself
            from .otlp_responses import bound_responses

            bound_responses(providers.exporters[-1])
    providers.threads = [thread for thread in threading.enumerate() if thread not in before]
    throttle_export_failures()  # the exporters' modules are imported now, their own filters set
    logger.info("exporting %s over OTLP (%s)", ", ".join(own), ", ".join(sorted({_protocol(s, environ) for s in own})))
    return providers


ATTRIBUTE_LOGGERS = ("opentelemetry.attributes", "asgi_ws_gateway.telemetry.lean_spans")
"""Where a span's or log record's attribute limits are enforced, with a WARNING per attribute cut or dropped."""


PROPAGATION_LOGGERS = (
    "opentelemetry.baggage.propagation",  # a baggage entry out of format, too long, too many: each, quoted
    "opentelemetry.trace.span",  # a tracestate member out of format (quoted), more than 32
    "opentelemetry.trace.propagation.tracecontext",  # a traceparent over 512 characters, a tracestate over 8,192
)
"""Where the default propagators warn of what a client sent and they could not read (``trust_client_trace``:
any client's; an untrusted client's ``traceparent`` is read without them, :func:`.propagation.client_trace`)."""


def throttle_attribute_warnings() -> None:
    """Put a :class:`~asgi_ws_gateway.log_throttle.RepeatFilter` on :data:`ATTRIBUTE_LOGGERS` and
    :data:`PROPAGATION_LOGGERS` (once each).

    With a length limit (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``, ``OTEL_SPAN_...``, ``OTEL_LOGRECORD_...``)
    or a count limit set, the SDK warns for each value it cuts and each attribute it drops: a client's
    long User-Agent made a line per handshake, refused ones too (28 a connection at a limit of 0), past
    every throttle of the gateway's own. The first line of each kind is written at once, then one per
    10 s with how many. On the SDK's logger, so an application's own spans are counted the same way.
    The propagators wrote a line per baggage entry they refused: 50 a handshake of a trusted client's.
    """
    for name in ATTRIBUTE_LOGGERS + PROPAGATION_LOGGERS:
        found = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in found.filters):
            found.addFilter(RepeatFilter())


EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",  # each gRPC exporter's failure, retry, timeout
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",  # each HTTP exporter's, its client's too
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.common.http",  # the HTTP client's own, when an exporter passes it none
    "opentelemetry.sdk._shared_internal",  # the span and log batch processors: an export raised, queue full
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.metrics._internal.export",  # the periodic metric reader: an export raised, timed out
    "opentelemetry.sdk._logs._internal.export",
)
"""Where the SDK (1.45) and its OTLP exporters log a failed export, a retry or a timeout: per batch and signal."""


def throttle_export_failures() -> None:
    """Put a :class:`~asgi_ws_gateway.log_throttle.RepeatFilter` on :data:`EXPORT_LOGGERS` (once each), its
    kind of line the message but for its numbers (:func:`~asgi_ws_gateway.log_throttle.by_text_but_numbers`).

    While a collector fails (429/503, resets, a redirect, unreachable, too slow), the SDK logs an ERROR per
    batch and signal, some with a traceback: a line a second per signal at the default batch delay, more
    under load, thousands through an outage. The first line of each kind (each signal, each cause) is
    written at once, traceback and all, then one per 10 s with how many, without it. The SDK's loggers are
    the process's, so an application's own OTLP exporters and processors are counted the same way.

    The SDK's own ``DuplicateFilter`` on some of them (the gRPC exporters', the batch processors') is
    taken off: it keeps one line per format string and 20 s, so a gRPC collector down showed the traces'
    failure and hid the metrics' (the same format), and never said how many it dropped.
    """
    for name in EXPORT_LOGGERS:
        found = logging.getLogger(name)
        for duplicates in [f for f in found.filters if type(f).__name__ == "DuplicateFilter"]:
            found.removeFilter(duplicates)  # by name: a private class, in another module or none in other SDKs
        if not any(isinstance(f, RepeatFilter) for f in found.filters):
            found.addFilter(RepeatFilter(kind=by_text_but_numbers))


def environment_config_problems(config: TelemetryConfig, environ: Mapping[str, str] = os.environ) -> list[str]:
    """What :func:`resolve_providers` would refuse in ``environ``, for a process without providers of its
    own (``run`` checks it before serving: a worker would fail with it)."""
    if not config.enabled:
        return []
    signals: list[Signal] = ["traces", "metrics", "logs"] if config.export_logs else ["traces", "metrics"]
    chosen = exporter_problems(signals, environ)
    return chosen or _problems([s for s in signals if _export_requested(config, s, environ)], environ)


def _problems(signals: list[Signal], environ: Mapping[str, str]) -> list[str]:
    protocols = (_protocol_problem(signal, environ) for signal in signals)
    choices = [
        f"{variable}: {_choice(variable, environ)!r} is not supported (gateway or sdk)"
        for variable, signal in _CHOICES.items()
        if signal in signals and _choice(variable, environ) not in ("gateway", "sdk")
    ]
    if "traces" in signals or "metrics" in signals:  # otlp_wire reads it (spans), metric_totals too (metrics)
        choices += pure_python_problems(environ)
    return list(dict.fromkeys([*(p for p in protocols if p), *choices, *environment_problems(signals, environ)]))


def _choice(variable: str, environ: Mapping[str, str]) -> str:
    """What one of the gateway's own ``gateway`` / ``sdk`` variables (:data:`_CHOICES`) chooses."""
    return environ.get(variable, "").strip().lower() or "gateway"


def _global_tracer_provider() -> TracerProvider | None:
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


def _global_meter_provider() -> MeterProvider | None:
    provider = get_meter_provider()
    return None if isinstance(provider, _ProxyMeterProvider) else provider


def _global_logger_provider() -> LoggerProvider | None:
    provider = get_logger_provider()
    return None if isinstance(provider, ProxyLoggerProvider) else provider


def _export_requested(config: TelemetryConfig, signal: Signal, environ: Mapping[str, str]) -> bool:
    if config.exporter == "none" or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").split(",") if e.strip()}
    if "none" in exporters:
        return False
    if config.exporter == "otlp" or "otlp" in exporters:
        return True
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    return any(environ.get(name) for name in endpoints)


def _protocol_setting(signal: Signal, environ: Mapping[str, str]) -> tuple[str, str]:
    """The variable that names ``signal``'s protocol (the signal's own, else the general one), and the protocol."""
    name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    if not environ.get(name):
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
    return name, environ.get(name, "").strip() or DEFAULT_PROTOCOL


def _protocol(signal: Signal, environ: Mapping[str, str]) -> str:
    return _protocol_setting(signal, environ)[1]


def _protocol_problem(signal: Signal, environ: Mapping[str, str]) -> str | None:
    name, protocol = _protocol_setting(signal, environ)
    return None if protocol in PROTOCOLS else f"{name}: {protocol!r} is not supported (grpc or http/protobuf)"


def _resource() -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


# The exporters read their endpoint, headers, timeout, compression and TLS settings from OTEL_*.


SCHEDULE_DELAY_MS = 1000
"""The own batch span processor's delay when ``OTEL_BSP_SCHEDULE_DELAY`` is unset: an ended handshake
span leaves within a second (the SDK's 5 s reads as "lost" in a backend), still one export per batch."""


SPANS_VARIABLE = "ASGI_WS_GATEWAY_SPANS"
"""``gateway`` (default): the own provider makes :mod:`.lean_spans`; ``sdk``: the SDK's ``TracerProvider``."""


def _own_tracer_provider(
    exporter: SpanExporter, resource: Resource, environ: Mapping[str, str]
) -> SdkTracerProvider | LeanTracerProvider:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .counted_exporters import CountedSpanExporter, count_queue_drops
    from .lean_provider import LeanTracerProvider, own_id_generator

    spans = _choice(SPANS_VARIABLE, environ)  # checked by _problems
    # Either way the sampler is OTEL_TRACES_SAMPLER(_ARG)'s and the limits OTEL_*_LIMIT's; the lean spans' ids
    # the C extension's generator's when it is loaded (the SDK's RandomIdGenerator else).
    provider = (
        SdkTracerProvider(resource=resource)
        if spans == "sdk"
        else LeanTracerProvider(resource=resource, id_generator=own_id_generator())
    )
    delay = None if environ.get("OTEL_BSP_SCHEDULE_DELAY") else SCHEDULE_DELAY_MS  # None: the SDK reads it
    processor: SpanProcessor = BatchSpanProcessor(CountedSpanExporter(exporter), schedule_delay_millis=delay)
    count_queue_drops(processor, "traces")  # OTEL_BSP_MAX_QUEUE_SIZE
    provider.add_span_processor(processor)
    return provider


ENCODER_VARIABLE = "ASGI_WS_GATEWAY_OTLP_ENCODER"
"""``gateway`` (default): spans are encoded by :mod:`.otlp_wire`; ``sdk``: by the SDK's own encoder."""


def _span_exporter(protocol: str, environ: Mapping[str, str]) -> SpanExporter:
    encoder = _choice(ENCODER_VARIABLE, environ)  # checked by _problems
    if encoder == "sdk":
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        return OTLPSpanExporter()
    from .otlp_export import GrpcSpanExporter, HttpSpanExporter

    return GrpcSpanExporter() if protocol == "grpc" else HttpSpanExporter()


HISTOGRAMS_VARIABLE = "ASGI_WS_GATEWAY_HISTOGRAMS"
"""``gateway`` (default): the own meter provider's duration histograms are aggregated by :mod:`.histograms`;
``sdk``: by the SDK's instruments."""
_CHOICES: dict[str, Signal] = {SPANS_VARIABLE: "traces", ENCODER_VARIABLE: "traces", HISTOGRAMS_VARIABLE: "metrics"}
"""The gateway's own ``gateway`` / ``sdk`` variables, by the signal whose own provider reads them."""


def _own_meter_provider(
    exporter: MetricExporter, resource: Resource, environ: Mapping[str, str]
) -> tuple[SdkMeterProvider, HistogramFactory | None]:
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from .counted_exporters import CountedMetricExporter
    from .histograms import OwnHistograms

    histograms = _choice(HISTOGRAMS_VARIABLE, environ)  # checked by _problems
    reader = PeriodicExportingMetricReader(CountedMetricExporter(exporter))  # OTEL_METRIC_EXPORT_INTERVAL
    provider = SdkMeterProvider(metric_readers=[reader], resource=resource)  # OTEL_METRICS_EXEMPLAR_FILTER
    return provider, OwnHistograms(provider, reader) if histograms == "gateway" else None


def _metric_exporter(protocol: str) -> MetricExporter:
    # Temporality (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE) and the histogram aggregation
    # (..._DEFAULT_HISTOGRAM_AGGREGATION) are the exporter's; the reader takes them from it.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    return OTLPMetricExporter()


def _log_exporter(protocol: str) -> LogRecordExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
    return OTLPLogExporter()


def _own_logger_provider(exporter: LogRecordExporter, resource: Resource) -> SdkLoggerProvider:
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from .counted_exporters import CountedLogExporter, count_queue_drops

    provider = SdkLoggerProvider(resource=resource)
    processor = BatchLogRecordProcessor(CountedLogExporter(exporter))  # OTEL_BLRP_*
    count_queue_drops(processor, "logs")
    provider.add_log_record_processor(processor)
    return provider


__all__ = [
    "ATTRIBUTE_LOGGERS",
    "ENCODER_VARIABLE",
    "EXPORT_LOGGERS",
    "HISTOGRAMS_VARIABLE",
    "PROTOCOLS",
    "SCHEDULE_DELAY_MS",
    "SPANS_VARIABLE",
    "Providers",
    "environment_config_problems",
    "resolve_providers",
    "throttle_attribute_warnings",
    "throttle_export_failures",
]
