"""``Telemetry``: one gateway's tracer, instruments and access log, built once at start-up."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._types import Scope
from .._version import __version__
from ..config.apis import ApiConfig
from ..config.gateway import GatewayConfig
from .access import AccessLog
from .api_info import ApiInfo
from .lean_tracer import LeanTracer
from .metrics import BackendCounts, Metrics
from .names import SCOPE
from .otlp_wire import owned_starter
from .provider_shutdown import Providers
from .providers import resolve_providers
from .tracing import HandshakeTrace, StartSpan

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider


class Telemetry:
    """The gateway's telemetry (see docs/telemetry.md).

    Args:
        config: the gateway configuration (its ``telemetry`` section and APIs).
        tracer_provider, meter_provider, logger_provider: providers to use instead of the global
            ones or the gateway's own OTLP exporters (see :mod:`.providers`).
        count: keep the metric counters even when metrics are off (default False); see :meth:`count_locally`.
        backends: each configured backend's metric attributes and connections now, for
            ``ws_gateway.upstream.connections`` (None: that instrument is not made).

    ``tracer`` and ``metrics`` are None for a signal that is off: then it costs nothing.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        count: bool = False,
        backends: BackendCounts | None = None,
    ) -> None:
        self.config = config.telemetry
        # Read at every handshake: a plain attribute (a pydantic model's read is ~4x a plain one's).
        self.trust_client_trace = self.config.trust_client_trace
        self.providers: Providers = resolve_providers(
            self.config, tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider
        )
        self._apis = {api.name: ApiInfo.of(api) for api in config.apis}
        providers = self.providers
        self.tracer: Tracer | None = providers.tracer.get_tracer(SCOPE, __version__) if providers.tracer else None
        self.start_span: StartSpan | None = None
        """How the gateway starts its own spans: a lean tracer's ``start_owned`` (its attributes are plain and
        handed over; in C when the extension is loaded), else ``tracer.start_span``; None when tracing is off."""
        if self.tracer is not None:
            self.start_span = owned_starter(self.tracer) if type(self.tracer) is LeanTracer else self.tracer.start_span
        self.metrics: Metrics | None = None
        if providers.meter is not None:
            meter = providers.meter.get_meter(SCOPE, __version__)
            apis = ((api.name, api.route) for api in self._apis.values())
            self.metrics = Metrics(meter, apis, providers.histograms, backends)
        if count:
            self.count_locally()
        otel_logger = providers.logger.get_logger(SCOPE, __version__) if providers.logger else None
        self.access = AccessLog(self.config.access_log, otel_logger)
        self.closed = False

    @property
    def enabled(self) -> bool:
        """True when spans or metrics are emitted."""
        return self.tracer is not None or self.metrics is not None

    def count_locally(self) -> None:
        """Count handshakes, messages and closes even when no metrics are exported (a no-op meter).

        The management console's charts read these counters; spans stay off when tracing is.
        """
        if self.metrics is None:
            from opentelemetry.metrics import NoOpMeter

            self.metrics = Metrics(NoOpMeter(SCOPE), ((api.name, api.route) for api in self._apis.values()))

    def handshake(
        self, api: ApiConfig, scope: Scope, client: str | None = None, *, from_proxy: bool = False
    ) -> HandshakeTrace:
        """Start the telemetry of one handshake (call it when ``websocket.connect`` arrives).

        ``client`` is the address a trusted proxy reported (None: the TCP peer is the client);
        ``from_proxy``: the TCP peer is one of ``trusted_proxies`` (read for ``trust_client_trace:
        trusted_proxies`` only).
        """
        return HandshakeTrace(self, self._apis[api.name], scope, client, from_proxy)

    def add_apis(self, apis: Iterable[ApiConfig]) -> None:
        """Know the APIs of a new configuration (``apply_config``); spans and metrics name them from now on."""
        for api in apis:
            self._apis[api.name] = ApiInfo.of(api)
            if self.metrics is not None:
                self.metrics.add_api(api.name, api.path)

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        """Export what the gateway's own providers hold now (blocking; a no-op for global providers)."""
        self.providers.force_flush(timeout_millis)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop the gateway's own providers within ``timeout`` seconds (default: the config's
        ``shutdown_timeout``), blocking; False when the exporters had to be closed with data unsent.
        Global providers are the application's."""
        self.closed = True
        return self.providers.shutdown(self.config.shutdown_timeout if timeout is None else timeout)


__all__ = ["Telemetry"]
