"""The ASGI apps the bench serves under uvicorn, as ``--factory`` import strings.

Each factory reads the upstream's base URL (``ws://127.0.0.1:PORT``) from ``BENCH_UPSTREAM`` and
proxies ``/echo`` to ``BENCH_UPSTREAM + /echo``. The two PyPI proxies get their HTTP clients'
connection-pool limits lifted: with their defaults both stop at 100 concurrent connections, and the
idle-connection scenario would measure nothing past that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from asgi_ws_gateway import WebSocketGateway
from asgi_ws_gateway._types import ASGIApp, Receive, Scope, Send
from asgi_ws_gateway.standalone import not_found

from .credentials import AUDIENCE, ISSUER, public_key

UPSTREAM_ENV = "BENCH_UPSTREAM"
LOG_DIR_ENV = "BENCH_LOG_DIR"
ECHO_PATH = "/echo"


def upstream_base() -> str:
    return os.environ[UPSTREAM_ENV].rstrip("/")


def _api(**extra: Any) -> dict[str, Any]:
    return {"name": "echo", "path": ECHO_PATH, "upstreams": [upstream_base() + ECHO_PATH], **extra}


def gateway_app() -> ASGIApp:
    """The gateway, bare: one API, every setting at its default."""
    return WebSocketGateway(not_found, config={"apis": [_api()]})


def gateway_passthrough_app() -> ASGIApp:
    """The bare gateway, every setting at its default, for the gateway's own protocol: it splices."""
    return WebSocketGateway(not_found, config={"apis": [_api()]})


def gateway_picows_app() -> ASGIApp:
    """EVALUATION: the bare gateway with the picows upstream leg of :mod:`bench.picows_upstream`.

    The connector is swapped in after construction (the gateway has no switch for it): see that
    module for what it does not do.
    """
    from .picows_upstream import PicowsConnector

    gateway = WebSocketGateway(not_found, config={"apis": [_api(compression=None)]})
    for api in gateway._apis.values():
        for backend in api.pool.backends:
            backend.connector = PicowsConnector(api.config, api.config.upstreams[backend.index])
    return gateway


def policy_set(key: str | None = None) -> dict[str, Any]:
    """The realistic onHandshake set of ``gateway+policies``: validate-jwt (ES256, key held in process,
    so no fetch), rate-limit-by-key on the token's subject (a limit the bench never reaches, so every
    handshake pays for the check), and set-header forwarding the subject upstream.

    ``key`` is the public key's PEM (default: the one the coordinator passed in the environment)."""
    return {
        "policies": [
            {"validate-jwt": {"algorithms": ["ES256"], "public_keys": [key or public_key()], "issuer": ISSUER,
                              "audience": AUDIENCE}},
            {"rate-limit-by-key": {"key": "{jwt.sub}", "limit": 100_000, "window": 1}},
            {"set-header": {"header": "X-User-Id", "value": "{jwt.sub}"}},
        ]
    }  # fmt: skip


class _DiscardSpans(SpanExporter):
    """Takes what the SDK exports and drops it: the gateway pays for spans, not for a network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DiscardMetrics(MetricExporter):
    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _telemetry_providers() -> dict[str, Any]:
    """Traces (every handshake sampled, batched) and metrics (read every 10 s), exported nowhere."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_DiscardSpans()))
    meter_provider = MeterProvider([PeriodicExportingMetricReader(_DiscardMetrics(), export_interval_millis=10_000)])
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}


def _access_log_to_file() -> None:
    log_dir = os.environ.get(LOG_DIR_ENV)
    handler: logging.Handler = (
        logging.FileHandler(os.path.join(log_dir, f"access-{os.getpid()}.log")) if log_dir else logging.NullHandler()
    )
    access = logging.getLogger("asgi_ws_gateway.access")
    access.setLevel(logging.INFO)
    access.addHandler(handler)
    access.propagate = False


def gateway_policies_app() -> ASGIApp:
    """The gateway with the handshake set of :func:`policy_set`, telemetry on and its access log written."""
    _access_log_to_file()
    return WebSocketGateway(not_found, config={"apis": [_api(**policy_set())]}, **_telemetry_providers())


def asgiproxy_app() -> ASGIApp:
    """asgiproxy's simple proxy app, with an aiohttp session whose connection pool has no limit."""
    import aiohttp
    from asgiproxy.config import BaseURLProxyConfigMixin, ProxyConfig
    from asgiproxy.context import ProxyContext
    from asgiproxy.simple_proxy import make_simple_proxy_app

    class Config(BaseURLProxyConfigMixin, ProxyConfig):
        upstream_base_url = upstream_base().replace("ws://", "http://", 1)

    class UnlimitedContext(ProxyContext):
        @property
        def session(self) -> aiohttp.ClientSession:
            if not self._session:
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    auto_decompress=False,
                )
            return self._session

    app: ASGIApp = make_simple_proxy_app(UnlimitedContext(Config()), proxy_http_handler=None)
    return app


async def minimal_relay_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The issue's "minimal ASGI relay": a ``websockets`` client and two pumps, nothing else.

    The yardstick for what the gateway adds over the least a relay can do on the same stack
    (no header forwarding, no close-code mirroring, no limits).
    """
    from websockets.asyncio.client import connect

    if scope["type"] != "websocket":
        await not_found(scope, receive, send)
        return
    await receive()  # websocket.connect
    async with connect(upstream_base() + ECHO_PATH, compression=None, max_queue=4) as upstream:
        await send({"type": "websocket.accept"})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")

        async def upstream_to_client() -> None:
            async for data in upstream:
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})

        pumps = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": 1000})


def minimal_relay_factory() -> ASGIApp:
    return minimal_relay_app


def fastapi_proxy_lib_app() -> ASGIApp:
    """fastapi-proxy-lib's reverse WebSocket app, with an httpx client whose pool has no limit."""
    import httpx
    from fastapi_proxy_lib.fastapi.app import reverse_ws_app

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
    app: ASGIApp = reverse_ws_app(client, base_url=upstream_base() + "/")
    return app


__all__ = [
    "ECHO_PATH",
    "UPSTREAM_ENV",
    "asgiproxy_app",
    "fastapi_proxy_lib_app",
    "gateway_app",
    "gateway_picows_app",
    "gateway_policies_app",
    "minimal_relay_app",
    "minimal_relay_factory",
    "policy_set",
]
